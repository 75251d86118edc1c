"""Hypothesis strategies of hostile stream entries: random bytes, msgpack of the wrong shape, the
right shape with wrong types, huge, negative or NaN values, unknown or missing fields, another
schema version, a valid message of the wrong type, an entry without its data field."""

from __future__ import annotations

from typing import Any

import msgpack
import msgspec
from hypothesis import strategies as st

from shared import schemas
from shared.keys import STREAM_DATA_FIELD

HUGE_TEXT = "\u00e9" * 100_000

hostile_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([-1, 0, 2**31, 2**63 - 1, 2**64 - 1, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.just(HUGE_TEXT),
    st.binary(max_size=64),
    st.lists(st.integers(-5, 5) | st.text(max_size=5), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def payload(obj: Any) -> bytes:
    """msgpack of anything (ints beyond 64 bits do not pack: their repr, then)."""
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        return msgpack.packb(repr(obj), use_bin_type=True)


@st.composite
def mutated(draw: st.DrawFn, msg: schemas.StreamMessage) -> dict[str, Any]:
    """``msg`` as a dict, with a few hostile changes: a field set to a hostile value, dropped,
    or an unknown one added; the version or the type tag changed."""
    d: dict[str, Any] = msgspec.to_builtins(msg)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["value", "drop", "unknown", "version", "tag"]))
        name = draw(st.sampled_from(sorted(d)) if d else st.just("type"))
        if how == "value":
            d[name] = draw(hostile_values)
        elif how == "drop":
            d.pop(name, None)
        elif how == "unknown":
            d[draw(st.text(min_size=1, max_size=8))] = draw(hostile_values)
        elif how == "version":
            d["v"] = draw(st.sampled_from([0, 2, -1, 2**40]) | hostile_values)
        else:
            d["type"] = draw(st.sampled_from([t.__struct_config__.tag for t in ALL]) | st.text(max_size=10))  # fmt: skip
    return d


ALL = [
    schemas.SessionStart, schemas.AudioChunk, schemas.AudioEnd, schemas.AudioControl,
    schemas.VadEvent, schemas.AsrJob, schemas.Transcript, schemas.SessionDone, schemas.TurnEvent,
]  # fmt: skip


SESSION_IDS = st.sampled_from(["", "fz-a", "fz-b", "\x00", HUGE_TEXT[:2000]]) | st.text(max_size=12)
"""Session ids of entries, wrong ones included (empty, huge, another session's)."""


def other_messages() -> st.SearchStrategy[schemas.StreamMessage]:
    """Valid messages of every type (on a stream that expects another, they are wrong)."""
    sid = SESSION_IDS
    small = st.integers(0, 1000)
    return st.one_of(
        st.builds(schemas.SessionStart, session_id=sid),
        st.builds(schemas.AudioChunk, session_id=sid, seq=small, pcm=st.binary(max_size=640)),
        st.builds(schemas.AudioEnd, session_id=sid, seq=small),
        st.builds(schemas.AudioControl, session_id=sid, seq=small, kind=st.text(max_size=10)),
        st.builds(
            schemas.VadEvent,
            session_id=sid,
            kind=st.text(max_size=5),
            segment=small,
            time=st.floats(0, 9),
        ),  # fmt: skip
        st.builds(
            schemas.Transcript,
            session_id=sid,
            segment=small,
            start=st.just(0.0),
            end=st.just(1.0),
            text=st.text(max_size=10),
        ),  # fmt: skip
        st.builds(schemas.SessionDone, session_id=sid, segments=small),
        st.builds(schemas.TurnEvent, session_id=sid, kind=st.text(max_size=5), segment=small),
    )


def entry_fields(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[bytes, bytes]]:
    """The fields of one hostile entry for a stream whose messages ``valid`` draws."""
    data = st.one_of(
        st.binary(max_size=200),  # random bytes
        st.sampled_from([b"", b"\xc1", b"\xff" * 10, b"\x92\x01\x02"]),
        hostile_values.map(payload),  # msgpack, but no map
        st.dictionaries(st.text(max_size=8), hostile_values, max_size=5).map(payload),
        # weighted up: the right shape with hostile values, and valid ones (hostile values
        # within the types), are what reaches past the decoder
        *[valid.flatmap(mutated).map(payload)] * 2,
        *[valid.map(schemas.encode)] * 3,
        other_messages().map(schemas.encode),  # a valid message of another type
    )
    plain = data.map(lambda d: {STREAM_DATA_FIELD: d})
    odd = st.dictionaries(st.binary(min_size=1, max_size=4), st.binary(max_size=20), min_size=1, max_size=3)  # fmt: skip
    return plain | odd | st.tuples(data, odd).map(lambda t: t[1] | {STREAM_DATA_FIELD: t[0]})


seqs = st.one_of(st.integers(-5, 50), st.sampled_from([0, -(2**63), 2**63 - 1, 2**64 - 1]))
times = st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 2e9)
pcms = st.one_of(
    st.binary(max_size=700),  # odd lengths too
    st.integers(0, 32_000).map(bytes),  # silence, up to 1 s
    st.just(b"\x01"),
)


def audio_messages() -> st.SearchStrategy[schemas.StreamMessage]:
    """What a gateway may put on ``audio:{id}``, with hostile values within the types (the
    worker goes by the stream's name: the entries' own session ids are anything)."""
    sid = SESSION_IDS
    terms = st.none() | st.lists(st.text(max_size=20), max_size=5) | st.just([HUGE_TEXT])
    return st.one_of(
        st.builds(
            schemas.AudioChunk,
            session_id=sid,
            seq=seqs,
            pcm=pcms,
            sample_rate=st.integers(-1, 10**6),
            received_at=times,
        ),  # fmt: skip
        st.builds(
            schemas.AudioControl,
            session_id=sid,
            seq=seqs,
            kind=st.sampled_from(["finalize", "keepalive", "keyterms", "speculated"])
            | st.text(max_size=10),
            keyterms=terms,
        ),  # fmt: skip
    )


def asr_jobs(final: bool) -> st.SearchStrategy[schemas.AsrJob]:
    """Jobs with hostile values within the types (short audio: the model decodes them)."""
    anything = st.floats(allow_nan=True, allow_infinity=True)
    return st.builds(
        schemas.AsrJob,
        session_id=SESSION_IDS,
        segment=st.integers(-3, 2**63 - 1) | st.integers(0, 5),
        start=anything | st.just(0.0),
        end=anything | st.just(1.0),
        pcm=pcms,
        sample_rate=st.integers(-1, 10**6),
        language=st.none() | st.sampled_from(["en", "xx", "", "de", HUGE_TEXT[:300]]),
        final=st.just(final),
        rev=st.integers(-1, 2**63 - 1),
        reason=st.sampled_from(["silence", "finalize", "flush", ""]),
        enqueued_at=times,
        speech_ended_at=times,
        diarize=st.booleans(),
        speculative=st.booleans(),
        task=st.sampled_from(["transcribe", "translate", "dance"]),
        traceparent=st.sampled_from(["", "00-zz", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"]),
        keyterms=st.lists(st.text(max_size=30), max_size=3) | st.just([HUGE_TEXT]),
        eager=st.booleans(),
        turn=st.booleans(),
    )
