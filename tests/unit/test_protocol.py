"""Parsing of client text frames on the predecessor-compatible endpoint."""

from __future__ import annotations

import json

import pytest

from gateway.protocol import (
    ClientConfig,
    Eof,
    LegacyQuery,
    ProtocolError,
    parse_legacy_query,
    parse_text_frame,
)

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


# -- the low-latency version's query (?lang=, dest_lang) -------------------------------------


@pytest.mark.parametrize(
    ("query", "language", "task"),
    [
        ({}, None, "transcribe"),
        ({"lang": "en"}, "en", "transcribe"),
        ({"lang": "zh"}, "zh", "transcribe"),  # the page's default option
        ({"lang": "italian"}, "it", "transcribe"),  # the page mixes codes and names
        ({"lang": "null"}, None, "transcribe"),  # "multilingual": detect
        ({"lang": "de", "dest_lang": "de"}, "de", "transcribe"),
        ({"lang": "de", "dest_lang": "german"}, "de", "transcribe"),
        ({"lang": "null", "dest_lang": "null"}, None, "transcribe"),  # the page's default
        ({"lang": "de", "dest_lang": "en"}, "de", "translate"),
        ({"lang": "null", "dest_lang": "en"}, None, "translate"),
        ({"lang": "en", "dest_lang": "en", "token": "x", "other": "1"}, "en", "transcribe"),
    ],
)
def test_legacy_query(query: dict[str, str], language: str | None, task: str) -> None:
    assert parse_legacy_query(query) == LegacyQuery(language, task)


@pytest.mark.parametrize(
    ("query", "code", "close"),
    [
        ({"lang": "klingon"}, "invalid_parameter", 1007),
        ({"lang": "en", "dest_lang": "elvish"}, "invalid_parameter", 1007),
        ({"lang": "en", "dest_lang": "de"}, "unsupported_translation_target", 1003),
    ],
)
def test_bad_legacy_query(query: dict[str, str], code: str, close: int) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_legacy_query(query)
    assert (err.value.code, err.value.close_code) == (code, close) and err.value.message


def test_config_language_is_marked_set_even_when_null() -> None:
    """A config frame's ``language`` (null too) wins over ``?lang=``; one without leaves it."""
    with_null = parse_text_frame('{"type":"config","data":{"language":null}}')
    without = parse_text_frame('{"type":"config","data":{"sampleRate":48000}}')
    assert isinstance(with_null, ClientConfig) and with_null.language_set
    assert isinstance(without, ClientConfig) and not without.language_set
    assert isinstance(p := parse_text_frame(PREDECESSOR_PAGE), ClientConfig) and p.language_set
