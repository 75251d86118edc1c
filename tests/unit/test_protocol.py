"""Parsing of client text frames on the predecessor-compatible endpoint."""

from __future__ import annotations

import json

import pytest

from gateway.protocol import ClientConfig, Eof, ProtocolError, parse_text_frame

PREDECESSOR_PAGE = (
    '{"type":"config","data":{"sampleRate":48000,"channels":1,"language":"english",'
    '"processing_strategy":"silence_at_end_of_chunk",'
    '"processing_args":{"chunk_length_seconds":3,"chunk_offset_seconds":0.1}}}'
)


def test_predecessor_browser_config() -> None:
    cfg = parse_text_frame(PREDECESSOR_PAGE)
    assert isinstance(cfg, ClientConfig)
    assert cfg.sample_rate == 48000 and cfg.language == "en"
    assert cfg.chunk_length_seconds == 3 and cfg.chunk_offset_seconds == 0.1


@pytest.mark.parametrize(
    ("language", "expected"),
    [(None, None), ("english", "en"), ("Italian", "it"), ("fr", "fr"), ("multilingual", None)],
)
def test_languages(language: str | None, expected: str | None) -> None:
    frame = json.dumps({"type": "config", "data": {"language": language}})
    cfg = parse_text_frame(frame)
    assert isinstance(cfg, ClientConfig) and cfg.language == expected


def test_unknown_fields_are_ignored() -> None:
    frame = json.dumps({"type": "config", "extra": 1, "data": {"sampleRate": 16000, "foo": [1]}})
    assert parse_text_frame(frame) == ClientConfig()


def test_eof() -> None:
    assert parse_text_frame('{"type":"eof"}') == Eof()


@pytest.mark.parametrize(
    ("text", "code", "close"),
    [
        ("not json", "invalid_json", 1007),
        ("[1,2]", "invalid_message", 1007),
        ('{"type":"dance"}', "unsupported_message", 1003),
        ('{"type":"config","data":{"sampleRate":"fast"}}', "invalid_config", 1007),
        ('{"type":"config","data":{"sampleRate":true}}', "invalid_config", 1007),
        ('{"type":"config","data":{"sampleRate":100}}', "invalid_config", 1007),
        ('{"type":"config","data":{"language":"klingon"}}', "invalid_config", 1007),
        ('{"type":"config","data":{"language":5}}', "invalid_config", 1007),
        ('{"type":"config","data":{"channels":0}}', "invalid_config", 1007),
        ('{"type":"config","data":{"processing_args":[]}}', "invalid_config", 1007),
        ('{"type":"config","data":"x"}', "invalid_config", 1007),
    ],
)
def test_bad_frames(text: str, code: str, close: int) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_text_frame(text)
    assert info.value.code == code
    assert info.value.close_code == close
    frame = info.value.frame()
    assert frame["type"] == "error" and frame["message"]
