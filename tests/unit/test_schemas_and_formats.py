"""Stream message schemas, WER, output formats and settings validation (pure)."""

from __future__ import annotations

import jiwer
import msgpack
import pytest
from pydantic import ValidationError

from shared import schemas
from shared.settings import Settings
from whisper_streaming.evaluation import normalize, wer
from whisper_streaming.formats import to_srt, to_txt, to_vtt


def test_roundtrip_every_message() -> None:
    msgs: list[schemas.StreamMessage] = [
        schemas.SessionStart(session_id="s", language="en"),
        schemas.AudioChunk(session_id="s", seq=1, pcm=b"\x00\x01"),
        schemas.AudioEnd(session_id="s", seq=2),
        schemas.AsrJob(session_id="s", segment=0, start=0.5, end=1.5, pcm=b"ab"),
        schemas.Transcript(
            session_id="s", segment=0, start=0, end=1, text="hi",
            words=[schemas.Word(word=" hi", start=0, end=1, probability=0.9)],
        ),
        schemas.SessionDone(session_id="s", segments=3),
    ]  # fmt: skip
    for msg in msgs:
        assert schemas.decode(schemas.encode(msg)) == msg


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"type": "nope", "v": 1, "session_id": "s"}),
        msgpack.packb({"type": "audio", "v": 1, "session_id": "s", "seq": "x", "pcm": b""}),
        msgpack.packb({"type": "audio", "v": 1, "seq": 1, "pcm": b""}),
    ],
)
def test_malformed_messages_raise_schema_error(data: bytes) -> None:
    with pytest.raises(schemas.SchemaError):
        schemas.decode(data)


def test_future_schema_version_is_refused() -> None:
    raw = msgpack.packb({"type": "audio_end", "v": 99, "session_id": "s", "seq": 1})
    with pytest.raises(schemas.SchemaError, match="version"):
        schemas.decode(raw)


def test_decode_as_checks_the_type() -> None:
    raw = schemas.encode(schemas.AudioEnd(session_id="s", seq=1))
    with pytest.raises(schemas.SchemaError):
        schemas.decode_as(raw, schemas.AsrJob)


def test_normalize_and_wer_agree_with_jiwer() -> None:
    assert (
        normalize("Good morning, everyone! It's well-known.")
        == "good morning everyone it's well known"
    )
    pairs = [("HE HOPED THERE WOULD BE STEW", "He hoped there'd be a stew."), ("A B C", "a c d e")]
    ours = wer(pairs)
    theirs = jiwer.wer([normalize(r) for r, _ in pairs], [normalize(h) for _, h in pairs])
    assert ours.wer == pytest.approx(theirs)


FINALS = [
    {"text": " Hello there.", "start": 0.12, "end": 2.5},
    {"text": "", "start": 3.0, "end": 3.5},
    {"text": "General Kenobi!", "start": 3661.25, "end": 3662.0},
]


def test_srt_vtt_txt() -> None:
    assert to_srt(FINALS) == (
        "1\n00:00:00,120 --> 00:00:02,500\nHello there.\n\n"
        "2\n01:01:01,250 --> 01:01:02,000\nGeneral Kenobi!\n"
    )
    assert to_vtt(FINALS).startswith("WEBVTT\n\n00:00:00.120 --> 00:00:02.500\nHello there.\n")
    assert to_txt(FINALS) == "Hello there.\nGeneral Kenobi!\n"


def test_settings_refuse_unsafe_values() -> None:
    with pytest.raises(ValidationError):
        Settings(redis_url="http://nope")
    with pytest.raises(ValidationError):
        Settings(heartbeat_interval_s=5, heartbeat_ttl_s=2)
    with pytest.raises(ValidationError):
        Settings(vad_threshold=1.5)
    assert Settings(redis_url="").redis_url is None


def test_stopped_early_detects_a_lost_tail() -> None:
    from workers.asr import stopped_early

    job = schemas.AsrJob(session_id="s", segment=0, start=6.0, end=15.5, pcm=b"")
    w = lambda end: schemas.Word(word=" x", start=end - 0.2, end=end, probability=0.9)  # noqa: E731
    full = schemas.Transcript(
        session_id="s", segment=0, start=6, end=15.5, text="x", words=[w(15.1)]
    )
    cut = schemas.Transcript(
        session_id="s", segment=0, start=6, end=15.5, text="x", words=[w(12.0)]
    )
    empty = schemas.Transcript(session_id="s", segment=0, start=6, end=15.5, text="")
    assert not stopped_early(full, job)
    assert stopped_early(cut, job) and stopped_early(empty, job)
    stretched = schemas.Word(word=" of", start=10.4, end=15.2, probability=0.5)
    swallowed = schemas.Transcript(
        session_id="s", segment=0, start=6, end=15.5, text="x", words=[w(10.4), stretched]
    )
    assert stopped_early(swallowed, job)
    short = schemas.AsrJob(session_id="s", segment=0, start=0, end=2.0, pcm=b"")
    assert not stopped_early(empty, short)
