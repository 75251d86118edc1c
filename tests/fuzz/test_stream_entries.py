"""Issue 19: hostile entries on every stream the workers read (``sessions``, ``audio:{id}``,
``asr:jobs:{pool}``, ``asr:partials:{pool}``), XADDed straight into the real workers' streams
while a real session runs beside them. Whatever comes in, no worker dies (its process runs and
its heartbeat is fresh), every malformed entry is dead-lettered (``vad:dead``,
``asr:dead:{pool}``) or handled as documented (docs/reliability.md), and the healthy session
gets its finals."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared.keys import ASR_GROUP, EN_POOL, STREAM_DATA_FIELD, VAD_GROUP
from shared.redis_util import entry
from shared.schemas import (
    SPECULATED,
    AsrJob,
    AudioChunk,
    AudioControl,
    AudioEnd,
    SchemaError,
    SessionStart,
    Transcript,
    decode,
    decode_as,
    encode,
)
from shared.session_state import Field
from tests.fuzz.conftest import FuzzStack, Healthy
from tests.fuzz.hostile import HUGE_TEXT, asr_jobs, audio_messages, entry_fields

pytestmark = pytest.mark.e2e

FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SETTLE_S = 60.0

Fields = dict[bytes, bytes]


def wait_until(stack: FuzzStack, done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SETTLE_S
    while not done():
        stack.check_alive()
        assert time.monotonic() < deadline, f"not settled in {SETTLE_S:.0f} s: {what}"
        time.sleep(0.05)


def gone(r: redis.Redis, stream: str, entry_id: bytes) -> bool:
    """Removed from the stream (acked and deleted, as every worker does when it is done)."""
    return not r.xrange(stream, entry_id, entry_id)


def dead_ids(r: redis.Redis, dead: str, stream: str | None = None) -> set[bytes]:
    return {
        f[b"id"]
        for _i, f in r.xrange(dead)
        if stream is None or f.get(b"stream") == stream.encode()
    }


def decoded(fields: Fields) -> Any:
    try:
        return decode(fields.get(STREAM_DATA_FIELD, b""))
    except SchemaError:
        return None


# -- sessions ------------------------------------------------------------------------------------

session_ids = st.sampled_from(["", "a", "a", HUGE_TEXT, "\x00\ud7ff"]) | st.text(max_size=12)
session_starts = st.builds(
    SessionStart,
    session_id=session_ids,
    sample_rate=st.integers(-(2**63), 2**63 - 1),
    language=st.none() | st.sampled_from(["en", "xx", ""]),
    created_at=st.floats(allow_nan=True),
    min_silence_ms=st.none() | st.integers(-(2**63), 2**63 - 1),
    interim_results=st.booleans(),
    vad_events=st.booleans(),
    smart_endpointing=st.none() | st.booleans(),
    eager_eot=st.booleans(),
    diarize=st.booleans(),
    pool=st.sampled_from(["", "en", "nope", "../x", HUGE_TEXT[:500]]),
    task=st.sampled_from(["transcribe", "translate", "x"]),
    keyterms=st.lists(st.text(max_size=10), max_size=3) | st.just([HUGE_TEXT]),
)

TWICE = entry(encode(SessionStart(session_id="twice")))
STRAY = entry(encode(SessionStart(session_id="stray")))


def sessions_property(stack: FuzzStack) -> None:
    r, keys = stack.r, stack.keys

    @settings(FUZZ, max_examples=30)
    @given(entries=st.lists(entry_fields(session_starts), min_size=1, max_size=5))
    @example(entries=[TWICE, TWICE])  # the same session announced twice (a retried XADD)
    def prop(entries: list[Fields]) -> None:
        tag = uuid.uuid4().hex[:8]
        ids = [r.xadd(keys.sessions, fields) for fields in entries]
        starts: dict[bytes, SessionStart | None] = {}
        for entry_id, fields in zip(ids, entries, strict=True):
            try:
                starts[entry_id] = decode_as(fields.get(STREAM_DATA_FIELD, b""), SessionStart)
            except SchemaError:
                starts[entry_id] = None
        for sid in {s.session_id for s in starts.values() if s is not None}:
            r.xadd(keys.audio(sid), entry(encode(AudioEnd(session_id=sid, seq=1))))
        wait_until(
            stack,
            lambda: all(gone(r, keys.sessions, i) for i in ids),
            f"{tag}: session entries still on the stream",
        )
        pending = r.xpending_range(keys.sessions, VAD_GROUP, "-", "+", 1000)
        assert not {p["message_id"] for p in pending} & set(ids)
        dead = dead_ids(r, keys.vad_dead, keys.sessions)
        for entry_id, start in starts.items():
            if start is None:
                assert entry_id in dead, entry_id  # undecodable: dead-lettered
            else:  # taken and finished, or dead-lettered as a repeated announcement
                finished = r.hexists(keys.session(start.session_id), str(Field.SEGMENTS))
                assert finished or entry_id in dead, entry_id

    prop()


def test_hostile_session_entries(fuzz_stack: FuzzStack) -> None:
    with Healthy(fuzz_stack.ws) as healthy:
        sessions_property(fuzz_stack)
    healthy.check()
    fuzz_stack.check_alive()


# -- audio:{id} ----------------------------------------------------------------------------------


def expected_dead_audio(entries: list[Fields], ids: list[bytes]) -> set[bytes]:
    """What the VAD worker dead-letters of a session's audio entries: what does not decode, or
    decodes to a message that has no business there, or a chunk whose PCM is not whole 16-bit
    samples; repeated sequence numbers are skipped; nothing after an ``audio_end`` is read."""
    seq, dead = 0, set()
    for fields, entry_id in zip(entries, ids, strict=True):
        msg = decoded(fields)
        if isinstance(msg, AudioEnd):
            break
        if isinstance(msg, AudioControl) and msg.kind == SPECULATED:
            continue
        if not isinstance(msg, AudioChunk | AudioControl):
            dead.add(entry_id)
            continue
        if seq and msg.seq <= seq:
            continue
        seq = msg.seq
        if isinstance(msg, AudioChunk) and len(msg.pcm) % 2:
            dead.add(entry_id)
    return dead


session_options = st.fixed_dictionaries(
    {},
    optional={
        "min_silence_ms": st.none() | st.integers(-(2**31), 2**63 - 1),
        "interim_results": st.booleans(),
        "vad_events": st.booleans(),
        "smart_endpointing": st.none() | st.booleans(),
        "eager_eot": st.booleans(),
        "keyterms": st.lists(st.text(max_size=10), max_size=3),
    },
)


def audio_property(stack: FuzzStack) -> None:
    r, keys = stack.r, stack.keys

    @settings(FUZZ, max_examples=40)
    @given(
        entries=st.lists(entry_fields(audio_messages()), min_size=1, max_size=6),
        options=session_options,
    )
    @example(entries=[STRAY], options={})  # a valid message of another stream: dead-lettered
    def prop(entries: list[Fields], options: dict[str, Any]) -> None:
        sid = uuid.uuid4().hex
        start = SessionStart(session_id=sid, language="en", **options)
        r.xadd(keys.sessions, entry(encode(start)))
        ids = [r.xadd(keys.audio(sid), fields) for fields in entries]
        r.xadd(keys.audio(sid), entry(encode(AudioEnd(session_id=sid, seq=2**63 - 1))))
        wait_until(
            stack,
            lambda: r.hexists(keys.session(sid), str(Field.SEGMENTS)),
            f"session {sid} not finished",
        )
        assert dead_ids(r, keys.vad_dead, keys.audio(sid)) == expected_dead_audio(entries, ids)

    prop()


def test_hostile_audio_entries(fuzz_stack: FuzzStack) -> None:
    with Healthy(fuzz_stack.ws) as healthy:
        audio_property(fuzz_stack)
    healthy.check()
    fuzz_stack.check_alive()


# -- asr:jobs:{pool}, asr:partials:{pool} ------------------------------------------------------


def asr_property(stack: FuzzStack) -> None:
    r, keys = stack.r, stack.keys
    jobs, partials, dead = (
        keys.asr_jobs(EN_POOL),
        keys.asr_partials(EN_POOL),
        keys.asr_dead(EN_POOL),
    )

    @settings(FUZZ, max_examples=30)
    @given(
        finals=st.lists(entry_fields(asr_jobs(final=True)), max_size=4),
        parts=st.lists(entry_fields(asr_jobs(final=False)), max_size=3),
    )
    def prop(finals: list[Fields], parts: list[Fields]) -> None:
        final_ids = [r.xadd(jobs, f) for f in finals]
        partial_ids = [r.xadd(partials, f) for f in parts]
        wait_until(
            stack,
            lambda: (
                all(gone(r, jobs, i) for i in final_ids)
                and all(gone(r, partials, i) for i in partial_ids)
            ),
            "jobs still on their streams",
        )
        for stream, ours in ((jobs, final_ids), (partials, partial_ids)):
            pending = r.xpending_range(stream, ASR_GROUP, "-", "+", 1000)
            assert not {p["message_id"] for p in pending} & set(ours)
        letters = dead_ids(r, dead)
        for entry_id, fields in zip(final_ids, finals, strict=True):
            try:
                job = decode_as(fields.get(STREAM_DATA_FIELD, b""), AsrJob)
            except SchemaError:
                assert entry_id in letters, entry_id  # undecodable: dead-lettered
                continue
            if job.speculative:
                continue  # stored for a commit that never comes, or stale: acked
            # published and kept: its text, or an empty error-flagged result once dead-lettered
            kept = [
                decode_as(f[STREAM_DATA_FIELD], Transcript)
                for _i, f in r.xrange(keys.transcript(job.session_id))
            ]
            assert any(t.segment == job.segment for t in kept), (entry_id, job.session_id)
        # partials are never retried nor dead-lettered: an undecodable one is dropped (counted
        # as whisper_asr_partials_total{outcome="error"}); gone from their stream, as checked

    prop()


def test_hostile_asr_jobs(fuzz_stack: FuzzStack) -> None:
    with Healthy(fuzz_stack.ws) as healthy:
        asr_property(fuzz_stack)
    healthy.check()
    fuzz_stack.check_alive()
