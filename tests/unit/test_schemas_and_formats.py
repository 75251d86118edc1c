"""Stream message schemas, WER, output formats and settings validation (pure)."""

from __future__ import annotations

import jiwer
import msgpack
import pytest
from pydantic import ValidationError

from shared import schemas
from shared.formats import cues, to_srt, to_txt, to_vtt
from shared.settings import Settings
from whisper_streaming.evaluation import normalize, wer


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


def _words(*spec: tuple[str, float, float]) -> list[dict]:
    return [{"word": w, "start": s, "end": e, "probability": 0.9} for w, s, e in spec]


def test_long_finals_become_captions_at_sentence_ends_and_length_limits() -> None:
    words = _words(
        (" One", 0.0, 0.4), (" two.", 0.5, 1.2), (" Three", 1.5, 2.0), (" four", 2.1, 5.0),
        (" five", 5.1, 8.6), (" six", 8.7, 9.0), (" seven.", 9.1, 9.4),
    )  # fmt: skip
    long = {"segment": 3, "start": 0.0, "end": 9.45, "text": "One two. Three four five six seven.",
            "words": words}  # fmt: skip
    short = {"segment": 4, "start": 9.5, "end": 10.5, "text": "Hi.", "words": []}
    empty = {"segment": 5, "start": 11.0, "end": 12.0, "text": " ", "words": []}
    out = cues([long, short, empty], max_s=7.0)
    assert [(c["start"], c["end"], c["text"]) for c in out] == [
        (0.0, 1.2, "One two."),  # a sentence end, once a caption is 1 s long
        (1.5, 5.0, "Three four"),  # " five" would take it past 7 s
        (5.1, 9.4, "five six seven."),
        (9.5, 10.5, "Hi."),
    ]
    assert all(c["segment"] == 3 for c in out[:3]) and out[0]["words"] == words[:2]
    srt = to_srt([long, short])
    assert srt.count(" --> ") == 4 and "00:00:05,100 --> 00:00:09,400\nfive six seven." in srt
    assert to_vtt([long]).count(" --> ") == 3
