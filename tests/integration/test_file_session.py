"""A file session in-process against a real redis-server: PCM straight into the uplink, finals
through the downlink; the tests play the workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.context import GatewayContext
from gateway.file_session import FileSession
from shared import session_state
from shared.redis_util import entry_data
from shared.schemas import AudioChunk, AudioEnd, SessionDone, decode
from shared.session_state import Field
from tests.integration.gateway_parts import eventually, final, gateway_context, publish, store

SECOND = 32_000


@pytest.fixture
async def ctx(redis_client: aioredis.Redis, key_prefix: str) -> AsyncIterator[GatewayContext]:
    async with gateway_context(redis_client, key_prefix, eof_timeout_s=0.5) as c:
        yield c


async def audio_ended(ctx: GatewayContext, sid: str) -> bool:
    entries = await ctx.redis.xrange(ctx.keys.audio(sid))
    return bool(entries) and isinstance(decode(entry_data(entries[-1][1])), AudioEnd)


async def test_a_file_is_streamed_in_one_second_entries_and_its_finals_returned(
    ctx: GatewayContext,
) -> None:
    session = FileSession(ctx, b"\1\0" * (SECOND // 2 * 3), language="en")

    async def workers() -> None:
        sid = session.session_id
        await eventually(lambda: audio_ended(ctx, sid))
        await publish(
            ctx, sid, final(sid, 1), final(sid, 0), SessionDone(session_id=sid, segments=2)
        )

    played = asyncio.create_task(workers())
    finals = await asyncio.wait_for(session.transcribe(), 10)
    await played
    assert [t.segment for t in finals] == [0, 1]
    assert session.complete and session.errors == []
    entries = [
        decode(entry_data(f))
        for _id, f in await ctx.redis.xrange(ctx.keys.audio(session.session_id))
    ]
    assert [len(e.pcm) for e in entries if isinstance(e, AudioChunk)] == [SECOND] * 3
    assert ctx.active == 0 and session.session_id not in ctx.router._queues


async def test_past_the_live_wait_the_durable_stream_is_read(ctx: GatewayContext) -> None:
    session = FileSession(ctx, b"\0" * SECOND, prompt="Kubernetes")

    async def workers() -> None:
        sid = session.session_id
        await eventually(lambda: audio_ended(ctx, sid))
        await asyncio.sleep(1.0)  # past EOF_TIMEOUT_S: nothing ever published live
        await store(ctx, sid, final(sid, 0))
        await asyncio.sleep(0.5)
        await store(ctx, sid, final(sid, 1))
        async with ctx.redis.pipeline() as pipe:
            session_state.write(pipe, ctx.keys.session(sid), {Field.SEGMENTS: 2}, 60)
            await pipe.execute()

    played = asyncio.create_task(workers())
    finals = await asyncio.wait_for(session.transcribe(), 10)
    await played
    assert [t.segment for t in finals] == [0, 1] and session.complete
    view = await session_state.read(ctx.redis, ctx.keys.session(session.session_id))
    assert (view.prompt, view.prompt_seg) == ("Kubernetes", -1)


async def test_a_file_not_done_in_time_is_incomplete(ctx: GatewayContext) -> None:
    session = FileSession(ctx, b"\0" * SECOND, timeout_s=1.0)
    await store(ctx, session.session_id, final(session.session_id, 1))
    finals = await asyncio.wait_for(session.transcribe(), 10)
    assert finals == [] and not session.complete  # segment 1 is held: 0 never came


async def test_a_file_too_long_reports_the_error(ctx: GatewayContext) -> None:
    ctx.settings = ctx.settings.model_copy(update={"max_session_s": 1.5})
    session = FileSession(ctx, b"\0" * SECOND * 3, timeout_s=1.0)

    async def workers() -> None:
        sid = session.session_id
        await eventually(lambda: audio_ended(ctx, sid))
        await publish(ctx, sid, SessionDone(session_id=sid, segments=0))

    played = asyncio.create_task(workers())
    finals = await asyncio.wait_for(session.transcribe(), 10)
    await played
    assert finals == [] and session.complete
    assert [e["code"] for e in session.errors] == ["session_too_long"]
    entries = [
        decode(entry_data(f))
        for _id, f in await ctx.redis.xrange(ctx.keys.audio(session.session_id))
    ]
    assert isinstance(entries[-1], AudioEnd) and entries[-1].reason == "session_too_long"


async def test_no_audio_is_complete_at_once(ctx: GatewayContext) -> None:
    session = FileSession(ctx, b"")
    assert await asyncio.wait_for(session.transcribe(), 5) == []
    assert session.complete
    assert await ctx.redis.xlen(ctx.keys.sessions) == 0
