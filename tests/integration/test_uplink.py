"""The audio uplink in-process against a real redis-server: what it writes to ``sessions``,
``audio:{session}`` and ``session:{id}``, and the limits it enforces. No socket, no worker: the
tests play the VAD worker by setting ``vad_seq``."""

from __future__ import annotations

import asyncio
import math
import struct
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

import gateway.uplink
from gateway.context import GatewayContext
from gateway.encodings import InputFormat
from gateway.protocol import CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_TRY_AGAIN_LATER, ProtocolError
from gateway.uplink import AudioUplink
from shared import session_state
from shared.redis_util import entry_data
from shared.schemas import (
    AudioChunk,
    AudioControl,
    AudioEnd,
    SessionStart,
    decode,
    decode_as,
)
from shared.session_state import Field, State
from tests.integration.gateway_parts import eventually, gateway_context

MS100 = 3200
"""Bytes of 100 ms of 16 kHz PCM16."""


@pytest.fixture
async def ctx(redis_client: aioredis.Redis, key_prefix: str) -> AsyncIterator[GatewayContext]:
    async with gateway_context(redis_client, key_prefix) as c:
        yield c


def uplink(ctx: GatewayContext, **settings: object) -> AudioUplink:
    if settings:
        ctx.settings = ctx.settings.model_copy(update=settings)
    return AudioUplink(ctx, uuid.uuid4().hex, "/test")


async def audio_entries(ctx: GatewayContext, up: AudioUplink) -> list[object]:
    return [decode(entry_data(f)) for _id, f in await ctx.redis.xrange(up.audio_key)]


def tone(n_samples: int, rate: int) -> bytes:
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
        for i in range(n_samples)
    )


async def test_first_audio_announces_the_session(ctx: GatewayContext) -> None:
    up = uplink(ctx)
    up.language, up.owner, up.interim_results = "de", "alice", True
    await up.push(b"\0" * 640)
    sessions = await ctx.redis.xrange(ctx.keys.sessions)
    assert len(sessions) == 1
    start = decode_as(entry_data(sessions[0][1]), SessionStart)
    assert (start.session_id, start.language, start.interim_results) == (up.session_id, "de", True)
    view = await session_state.read(ctx.redis, up.session_key)
    assert (view.state, view.attach, view.endpoint, view.owner) == (
        State.ATTACHED,
        1,
        "/test",
        "alice",
    )
    assert 0 < await ctx.redis.ttl(up.session_key) <= ctx.settings.session_ttl_s
    await up.push(b"\0" * 640)
    assert len(await ctx.redis.xrange(ctx.keys.sessions)) == 1  # announced once


async def test_small_frames_are_coalesced_into_100ms_entries(ctx: GatewayContext) -> None:
    up = uplink(ctx)
    frames = [bytes([i]) * 640 for i in range(12)]  # 12 × 20 ms
    for frame in frames:
        await up.push(frame)
    chunks = await audio_entries(ctx, up)
    assert [len(c.pcm) for c in chunks if isinstance(c, AudioChunk)] == [MS100, MS100]
    assert [c.seq for c in chunks if isinstance(c, AudioChunk)] == [1, 2]
    assert 0 < await ctx.redis.ttl(up.audio_key) <= ctx.settings.session_ttl_s
    await up.end("eof")
    entries = await audio_entries(ctx, up)
    assert [type(e) for e in entries] == [AudioChunk, AudioChunk, AudioChunk, AudioEnd]
    assert b"".join(e.pcm for e in entries if isinstance(e, AudioChunk)) == b"".join(frames)
    assert entries[-1].seq == 4 and entries[-1].reason == "eof"
    assert (await session_state.read(ctx.redis, up.session_key)).state == State.ENDED
    assert up.ended and up.samples == 12 * 320


async def test_the_ticker_flushes_a_slow_client_after_coalesce_ms(ctx: GatewayContext) -> None:
    up = uplink(ctx)
    await up.push(b"\1" * 640)
    assert await audio_entries(ctx, up) == []
    ticker = asyncio.create_task(up.tick())
    try:
        await eventually(lambda: _count(ctx, up, 1), timeout=2)
    finally:
        ticker.cancel()
    (chunk,) = await audio_entries(ctx, up)
    assert isinstance(chunk, AudioChunk) and chunk.pcm == b"\1" * 640


async def _count(ctx: GatewayContext, up: AudioUplink, n: int) -> bool:
    return await ctx.redis.xlen(up.audio_key) == n


async def test_odd_bytes_are_carried_to_the_next_frame(ctx: GatewayContext) -> None:
    up = uplink(ctx)
    await up.push(b"\1\2\3")
    assert up.samples == 1
    await up.push(b"\4\5\6")
    assert up.samples == 3
    await up.push(b"\7")
    assert up.samples == 3  # one odd byte waits
    await up.end("eof")
    pcm = b"".join(e.pcm for e in await audio_entries(ctx, up) if isinstance(e, AudioChunk))
    assert pcm == b"\1\2\3\4\5\6"


async def test_audio_at_48khz_is_resampled_to_16khz(ctx: GatewayContext) -> None:
    up = uplink(ctx)
    up.set_input_rate(48_000)
    pcm = tone(48_000, 48_000)  # one second
    for i in range(0, len(pcm), 9600):  # 100 ms frames
        await up.push(pcm[i : i + 9600])
    await up.end("eof")
    out = b"".join(e.pcm for e in await audio_entries(ctx, up) if isinstance(e, AudioChunk))
    assert abs(len(out) // 2 - 16_000) <= 200  # the resampler's delay, no more
    assert up.samples == len(out) // 2


async def test_a_frame_too_large_is_refused_with_1009(ctx: GatewayContext) -> None:
    up = uplink(ctx, max_frame_bytes=1000)
    await up.push(b"\0" * 1000)
    with pytest.raises(ProtocolError) as err:
        await up.push(b"\0" * 1002)
    assert (err.value.code, err.value.close_code) == ("frame_too_large", CLOSE_TOO_BIG)
    assert up.samples == 500


async def test_more_frames_a_second_than_allowed_are_held_back_not_refused(
    ctx: GatewayContext,
) -> None:
    """A burst after a network stall: 35 frames at a limit of 10 a second are all taken, spread
    over at least three more windows, none refused (the socket is just not read meanwhile)."""
    up = uplink(ctx, max_frames_per_second=10)
    started = time.monotonic()
    for _ in range(35):
        await up.push(b"\0" * 64)
    assert time.monotonic() - started >= 3.0  # a lower bound: the limit held
    assert up.samples == 35 * 32


async def test_a_session_longer_than_allowed_is_refused(ctx: GatewayContext) -> None:
    up = uplink(ctx, max_session_s=0.25)
    await up.push(b"\0" * MS100 * 2)
    with pytest.raises(ProtocolError) as err:
        await up.push(b"\0" * MS100)
    assert (err.value.code, err.value.close_code) == ("session_too_long", CLOSE_POLICY)


async def test_control_entries_follow_the_audio_before_them(ctx: GatewayContext) -> None:
    up = uplink(ctx)
    await up.control("finalize")  # nothing announced yet: nothing to finalize
    assert not await ctx.redis.exists(up.audio_key)
    await up.push(b"\1" * 640)
    await up.control("finalize")
    entries = await audio_entries(ctx, up)
    assert [type(e) for e in entries] == [AudioChunk, AudioControl]
    assert [e.seq for e in entries] == [1, 2]
    assert entries[1].kind == "finalize"


async def test_back_pressure_waits_until_the_vad_worker_catches_up(ctx: GatewayContext) -> None:
    up = uplink(ctx, audio_backlog_max=10)
    for _ in range(19):
        await up.push(b"\0" * MS100)
    pushing = asyncio.create_task(up.push(b"\0" * MS100))  # entry 20: 20 behind, limit 10
    await asyncio.sleep(0.5)
    assert not pushing.done()
    await ctx.redis.hset(up.session_key, Field.VAD_SEQ, 9)  # still 11 behind
    await asyncio.sleep(0.3)
    assert not pushing.done()
    await ctx.redis.hset(up.session_key, Field.VAD_SEQ, 10)
    await asyncio.wait_for(pushing, 2)
    assert up.seq == 20


async def test_back_pressure_gives_up_with_overloaded(
    ctx: GatewayContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway.uplink, "BACKPRESSURE_MAX_WAIT_S", 0.3)
    up = uplink(ctx, audio_backlog_max=10)
    for _ in range(19):
        await up.push(b"\0" * MS100)
    with pytest.raises(ProtocolError) as err:
        await asyncio.wait_for(up.push(b"\0" * MS100), 3)
    assert (err.value.code, err.value.close_code) == ("overloaded", CLOSE_TRY_AGAIN_LATER)
    assert await ctx.redis.xlen(up.audio_key) == 20  # nothing dropped


async def test_a_full_job_stream_holds_live_sessions_back_and_nothing_is_trimmed(
    ctx: GatewayContext,
) -> None:
    """``JOBS_STREAM_MAX`` is a back-pressure bound, not a MAXLEN: while the session's pool
    stream holds that many jobs its audio is not taken; once it drains, it is."""
    up = uplink(ctx, jobs_stream_max=5, max_job_backlog=5)
    await up.push(b"\0" * MS100)  # announced: the pool is chosen
    await ctx.redis.hset(up.session_key, Field.VAD_SEQ, 1000)  # the VAD worker keeps up
    jobs = ctx.keys.asr_jobs(up.pool)
    ids = [await ctx.redis.xadd(jobs, {b"d": b"job"}) for _ in range(5)]
    for _ in range(8):
        await up.push(b"\0" * MS100)
    pushing = asyncio.create_task(up.push(b"\0" * MS100))  # entry 10: the check
    await asyncio.sleep(0.5)
    assert not pushing.done()
    assert await ctx.redis.xlen(jobs) == 5
    await ctx.redis.xdel(jobs, ids[0])  # an ASR worker acked one
    await asyncio.wait_for(pushing, 2)
    assert up.seq == 10


async def test_new_sessions_are_refused_at_sessions_stream_max_and_none_is_trimmed(
    ctx: GatewayContext,
) -> None:
    for _ in range(3):
        await ctx.redis.xadd(ctx.keys.sessions, {b"d": b"a live session"})
    up = uplink(ctx, sessions_stream_max=3)
    with pytest.raises(ProtocolError) as err:
        await up.push(b"\0" * MS100)
    assert (err.value.code, err.value.close_code) == ("overloaded", CLOSE_TRY_AGAIN_LATER)
    assert await ctx.redis.xlen(ctx.keys.sessions) == 3


async def test_a_resumed_uplink_continues_the_sequence(ctx: GatewayContext) -> None:
    up = uplink(ctx)
    up.resume(samples=1600, seq=7, ended=False)
    await up.push(b"\0" * MS100)
    (chunk,) = await audio_entries(ctx, up)
    assert chunk.seq == 8 and up.samples == 3200
    assert await ctx.redis.xlen(ctx.keys.sessions) == 0  # announced by the earlier socket


async def test_a_resume_after_a_gateway_crash_numbers_after_the_stream(ctx: GatewayContext) -> None:
    """A SIGKILLed gateway saves nothing at its end: the resuming one used to start from a stale
    ``seq`` (an earlier drop's, or the lagging ``vad_seq``), its entries repeated numbers already
    on the stream, and the VAD worker skips a repeated number: the resumed audio was lost. Now
    ``seq`` and ``samples`` are saved with every entry, and the takeover reads them."""
    from gateway.attachment import take_over

    first = uplink(ctx)
    for _ in range(12):
        await first.push(b"\1" * MS100)
    await first.flush()
    written, samples = first.seq, first.samples
    # the first gateway dies here: no drop, nothing saved by it after its last entry
    second = AudioUplink(ctx, first.session_id, "/test")
    taken = await take_over(
        ctx.redis, first.session_key, ctx.keys.results(first.session_id), first.session_id,
        second.attachment.token, ctx.settings.session_ttl_s,
    )  # fmt: skip
    assert taken is not None and (taken.seq, taken.samples) == (written, samples)
    second.resume(samples=taken.samples or 0, seq=taken.seq or 0, ended=False)
    await second.push(b"\2" * MS100)
    await second.flush()
    await second.control("finalize")
    await second.end("eof")
    tail = (await audio_entries(ctx, first))[-3:]
    assert [type(m) for m in tail] == [AudioChunk, AudioControl, AudioEnd]
    assert [m.seq for m in tail] == [written + 1, written + 2, written + 3]
    # the replaced first socket can no longer write
    with pytest.raises(ProtocolError):
        await first.push(b"\3" * MS100)
        await first.flush()


# -- languages the live ASR workers serve ---------------------------------------------------


def _announcement(multilingual: bool, name: str) -> bytes:
    from types import SimpleNamespace

    from shared.capabilities import capabilities_of
    from shared.schemas import encode_capabilities

    fake = SimpleNamespace(model=SimpleNamespace(is_multilingual=multilingual))
    return encode_capabilities(capabilities_of(fake, name))


async def test_a_language_no_live_worker_announces_is_refused_before_the_session_exists(
    ctx: GatewayContext,
) -> None:
    from gateway.protocol import CLOSE_UNSUPPORTED
    from shared.redis_util import Heartbeat

    beat = Heartbeat(
        ctx.redis, ctx.keys, "asr", "asr-en", 0.5, announce=_announcement(False, "asr-en"), ttl_s=3
    )
    await beat.beat()
    caps_key = ctx.keys.capabilities("asr", "asr-en")
    assert 0 < await ctx.redis.pttl(caps_key) <= 3000  # the heartbeat's lifetime

    up = uplink(ctx)
    up.language = "de"
    with pytest.raises(ProtocolError) as err:
        await up.push(b"\x00" * MS100)
    assert err.value.code == "unsupported_language" and err.value.close_code == CLOSE_UNSUPPORTED
    assert "'de'" in err.value.message and err.value.message.endswith("they serve: en")
    assert not up.announced and await ctx.redis.xlen(ctx.keys.sessions) == 0

    for language in ("en", None):  # English, and detection (as English) are served
        ok = uplink(ctx)
        ok.language = language
        await ok.push(b"\x00" * MS100)
        assert ok.announced

    # a multilingual worker joins: German is served; the English worker leaves: still served
    multi = Heartbeat(
        ctx.redis, ctx.keys, "asr", "asr-ml", 0.5, announce=_announcement(True, "asr-ml"), ttl_s=3
    )
    await multi.beat()
    await beat.remove()
    assert not await ctx.redis.exists(caps_key)
    de = uplink(ctx)
    de.language = "de"
    await de.push(b"\x00" * MS100)
    assert de.announced

    # translation is served by the multilingual worker, and the task goes on session_start
    tr = uplink(ctx)
    tr.language, tr.task = "de", "translate"
    await tr.push(b"\x00" * MS100)
    assert tr.announced
    (_sid, fields), *_ = await ctx.redis.xrevrange(ctx.keys.sessions, count=1)
    start = decode_as(entry_data(fields), SessionStart)
    assert (start.session_id, start.language, start.task) == (tr.session_id, "de", "translate")
    await multi.remove()

    # with only the English worker live again, translation is refused naming what is served
    await beat.beat()
    en_only = uplink(ctx)
    en_only.task = "translate"
    with pytest.raises(ProtocolError) as err:
        await en_only.push(b"\x00" * MS100)
    assert err.value.code == "unsupported_language" and "translation" in err.value.message
    assert err.value.message.endswith("serve: en")
    await beat.remove()


async def test_nothing_is_refused_without_announcements(ctx: GatewayContext) -> None:
    """No live worker (scale from zero: jobs wait), or a live one that never announced."""
    from shared.redis_util import Heartbeat

    up = uplink(ctx)
    up.language = "zh"
    await up.push(b"\x00" * MS100)
    assert up.announced
    old = Heartbeat(ctx.redis, ctx.keys, "asr", "asr-old", 0.5)  # announces nothing
    await old.beat()
    up2 = uplink(ctx)
    up2.language = "zh"
    await up2.push(b"\x00" * MS100)
    assert up2.announced
    await old.remove()


async def test_key_terms_are_announced_then_changed_in_order_with_the_audio(
    ctx: GatewayContext,
) -> None:
    up = uplink(ctx)
    await up.set_keyterms(["Bartley", " "])
    await up.push(b"\0" * 640)
    (start_entry,) = await ctx.redis.xrange(ctx.keys.sessions)
    assert decode_as(entry_data(start_entry[1]), SessionStart).keyterms == ["Bartley"]
    await up.set_keyterms(["Beaumont"])
    *_, ctl = await audio_entries(ctx, up)
    assert isinstance(ctl, AudioControl) and (ctl.kind, ctl.keyterms) == ("keyterms", ["Beaumont"])
    with pytest.raises(ProtocolError) as info:
        await up.set_keyterms(["x" * 501])
    assert info.value.code == "invalid_keyterms" and "500" in info.value.message


async def test_mulaw_at_8k_is_expanded_and_resampled(ctx: GatewayContext) -> None:
    up = uplink(ctx)
    up.set_input_format(InputFormat("mulaw", 8000))
    await up.push(b"\xff" * 800)  # 100 ms of μ-law silence
    await up.flush()
    chunks = [e for e in await audio_entries(ctx, up) if isinstance(e, AudioChunk)]
    pcm = b"".join(c.pcm for c in chunks)
    assert abs(len(pcm) - MS100) <= 64 and set(pcm) <= {0}
    with pytest.raises(ProtocolError) as info:
        bad = uplink(ctx)
        bad.set_input_format(InputFormat("opus"))
        await bad.push(b"RIFF....WAVE")
    assert info.value.code == "invalid_audio"
