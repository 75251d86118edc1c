"""The results downlink in-process against a real redis-server and a real ResultRouter: the tests
play the ASR and VAD workers by publishing on ``results:{session}``, XADDing to
``transcript:{session}`` and setting ``segments`` on ``session:{id}``."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.context import GatewayContext
from gateway.downlink import ResultsDownlink
from shared import session_state
from shared.schemas import SessionDone, Transcript, VadEvent
from shared.session_state import Field
from tests.integration.gateway_parts import eventually, final, gateway_context, publish, store


@pytest.fixture
async def ctx(redis_client: aioredis.Redis, key_prefix: str) -> AsyncIterator[GatewayContext]:
    async with gateway_context(redis_client, key_prefix) as c:
        yield c


class Recorder:
    """The sink a protocol would be: what the downlink handed it, in order."""

    def __init__(self) -> None:
        self.finals: list[int] = []
        self.partials: list[tuple[int, str]] = []
        self.events: list[str] = []
        self.released: list[list[int]] = []
        self.listening = True

    async def final(self, t: Transcript) -> None:
        self.finals.append(t.segment)

    async def partial(self, t: Transcript) -> None:
        self.partials.append((t.segment, t.text))

    async def vad_event(self, e: VadEvent) -> None:
        self.events.append(f"{e.kind}:{e.segment}")

    async def after_finals(self) -> None:
        self.released.append(list(self.finals))


def downlink(ctx: GatewayContext, rec: Recorder) -> ResultsDownlink:
    d = ResultsDownlink(
        ctx,
        uuid.uuid4().hex,
        on_final=rec.final,
        on_partial=rec.partial,
        on_vad_event=rec.vad_event,
        after_finals=rec.after_finals,
        listening=lambda: rec.listening,
    )
    d.open()
    return d


async def test_out_of_order_finals_are_delivered_in_order(ctx: GatewayContext) -> None:
    rec = Recorder()
    d = downlink(ctx, rec)
    d.start()
    try:
        sid = d.session_id
        await publish(ctx, sid, final(sid, 2), final(sid, 0))
        await eventually(lambda: rec.finals == [0])
        await publish(
            ctx, sid, final(sid, 0), final(sid, 1), SessionDone(session_id=sid, segments=3)
        )
        assert await d.wait(5)
    finally:
        d.close()
    assert rec.finals == [0, 1, 2]  # the duplicate 0 dropped
    assert d.complete and d.reorder.next == 3


async def test_session_done_ends_the_wait(ctx: GatewayContext) -> None:
    rec = Recorder()
    d = downlink(ctx, rec)
    d.start()
    try:
        sid = d.session_id
        await publish(ctx, sid, final(sid, 0))
        assert not await d.wait(0.5)  # how many segments there are is not known yet
        await publish(ctx, sid, SessionDone(session_id=sid, segments=1, audio_seconds=4.5))
        assert await d.wait(5)
    finally:
        d.close()
    assert (d.total, d.audio_seconds, rec.finals) == (1, 4.5, [0])


async def test_a_missing_segment_holds_the_wait(ctx: GatewayContext) -> None:
    rec = Recorder()
    d = downlink(ctx, rec)
    d.start()
    try:
        sid = d.session_id
        await publish(ctx, sid, final(sid, 1), SessionDone(session_id=sid, segments=2))
        assert not await d.wait(0.5)
        assert rec.finals == []
        await publish(ctx, sid, final(sid, 0))
        assert await d.wait(5)
    finally:
        d.close()
    assert rec.finals == [0, 1]


async def test_silence_and_nobody_listening_are_not_delivered(ctx: GatewayContext) -> None:
    rec = Recorder()
    d = downlink(ctx, rec)
    d.start()
    try:
        sid = d.session_id
        await publish(ctx, sid, final(sid, 0, text=""), final(sid, 1))
        await eventually(lambda: rec.finals == [1])
        rec.listening = False
        await publish(ctx, sid, final(sid, 2), SessionDone(session_id=sid, segments=3))
        assert await d.wait(5)
    finally:
        d.close()
    assert rec.finals == [1] and d.reorder.next == 3


async def test_partials_of_a_segment_already_final_are_dropped(ctx: GatewayContext) -> None:
    rec = Recorder()
    d = downlink(ctx, rec)
    d.start()
    try:
        sid = d.session_id
        await publish(
            ctx,
            sid,
            final(sid, 0),
            final(sid, 0, text="late partial", final=False, rev=3),
            final(sid, 1, text="next partial", final=False, rev=1),
            VadEvent(session_id=sid, kind="speech_started", segment=2, time=2.0),
            final(sid, 1),
            final(sid, 1, text="partial after its final", final=False, rev=2),
            SessionDone(session_id=sid, segments=2),
        )
        assert await d.wait(5)
    finally:
        d.close()
    assert rec.partials == [(1, "next partial")]
    assert rec.events == ["speech_started:2"]
    assert rec.finals == [0, 1] and rec.released == [[0], [0, 1]]


async def test_catch_up_from_the_transcript_stream_without_duplicates(
    ctx: GatewayContext,
) -> None:
    rec = Recorder()
    d = downlink(ctx, rec)
    sid = d.session_id
    await store(ctx, sid, final(sid, 1), final(sid, 0))
    await d.catch_up()
    assert rec.finals == [0, 1]
    await d.catch_up()  # read again: nothing new
    assert rec.finals == [0, 1]
    d.start()
    try:
        await publish(ctx, sid, final(sid, 1), final(sid, 2))  # 1 live as well: a duplicate
        await store(ctx, sid, final(sid, 2), final(sid, 3))
        await eventually(lambda: rec.finals == [0, 1, 2])
        await d.catch_up()
        await publish(ctx, sid, SessionDone(session_id=sid, segments=4))
        assert await d.wait(5)
    finally:
        d.close()
    assert rec.finals == [0, 1, 2, 3]


async def test_a_resumed_downlink_starts_after_the_clients_last_segment(
    ctx: GatewayContext,
) -> None:
    rec = Recorder()
    d = downlink(ctx, rec)
    sid = d.session_id
    await store(ctx, sid, final(sid, 0), final(sid, 1), final(sid, 2))
    d.start_at(2)
    await d.catch_up()
    d.close()
    assert rec.finals == [2]


async def test_resync_after_the_subscription_was_lost(ctx: GatewayContext) -> None:
    """Results published while the router's connection is down never arrive; the router puts a
    Resync on the queue once it is back, and the downlink reads the durable stream and the
    segment count the VAD worker left on the session hash."""
    rec = Recorder()
    d = downlink(ctx, rec)
    sid = d.session_id
    d.start()
    try:
        await publish(ctx, sid, final(sid, 0))
        await eventually(lambda: rec.finals == [0])
        await ctx.redis.client_kill_filter(_type="pubsub")
        await eventually(lambda: not ctx.router.connected.is_set())
        # the workers go on while the gateway is not subscribed: stored, never heard live
        await store(ctx, sid, final(sid, 0), final(sid, 1), final(sid, 2))
        async with ctx.redis.pipeline() as pipe:
            values = {Field.SEGMENTS: 3, Field.AUDIO_SECONDS: 9.5}
            session_state.write(pipe, ctx.keys.session(sid), values, 60)
            await pipe.execute()
        assert await d.wait(10)
    finally:
        d.close()
    assert rec.finals == [0, 1, 2]
    assert (d.total, d.audio_seconds) == (3, 9.5)


async def test_fill_from_transcript_gives_up_on_segments_that_never_came(
    ctx: GatewayContext, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    d = downlink(ctx, rec)
    sid = d.session_id
    d.start()
    try:
        await publish(ctx, sid, SessionDone(session_id=sid, segments=4), final(sid, 3))
        await store(ctx, sid, final(sid, 0), final(sid, 3))
        assert not await d.wait(0.5)
        with caplog.at_level(logging.WARNING, logger="gateway.downlink"):
            await d.fill_from_transcript()  # segments 1 and 2 are lost: skip them
    finally:
        d.close()
    assert rec.finals == [0, 3]
    assert d.complete
    assert f"session={sid} segments [1, 2] never arrived" in caplog.text


async def test_close_unregisters_from_the_router(ctx: GatewayContext) -> None:
    rec = Recorder()
    d = downlink(ctx, rec)
    d.start()
    d.close()
    await asyncio.sleep(0)
    await publish(ctx, d.session_id, final(d.session_id, 0))
    await asyncio.sleep(0.3)
    assert rec.finals == []
