"""A gateway process's context in-process, against the real redis-server of the test: a real
:class:`~gateway.router.ResultRouter` on the test's key prefix, no app, no socket, no worker.
Tests play the workers by writing what they would write (results published on
``results:{session}``, entries on ``transcript:{session}``, fields of ``session:{id}``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis

from gateway.context import GatewayContext
from gateway.router import ResultRouter
from shared.keys import Keys
from shared.redis_util import entry
from shared.schemas import StreamMessage, Transcript, encode
from shared.settings import Settings


@asynccontextmanager
async def gateway_context(
    r: aioredis.Redis, key_prefix: str, **settings: Any
) -> AsyncIterator[GatewayContext]:
    keys = Keys(key_prefix)
    router = ResultRouter(r, keys)
    await router.subscribe()
    stop = asyncio.Event()
    task = asyncio.create_task(router.run(stop), name="test-router")
    try:
        yield GatewayContext(
            settings=Settings(key_prefix=key_prefix, **settings), redis=r, keys=keys, router=router
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def final(sid: str, segment: int, text: str | None = None, **kw: Any) -> Transcript:
    return Transcript(
        session_id=sid,
        segment=segment,
        start=float(segment),
        end=segment + 0.9,
        text=f"segment {segment}" if text is None else text,
        **kw,
    )


async def publish(ctx: GatewayContext, sid: str, *msgs: StreamMessage) -> None:
    """What the workers PUBLISH on ``results:{session}``."""
    for msg in msgs:
        await ctx.redis.publish(ctx.keys.results(sid), encode(msg))


async def store(ctx: GatewayContext, sid: str, *finals: Transcript) -> None:
    """What the ASR workers XADD to the durable ``transcript:{session}``."""
    for t in finals:
        await ctx.redis.xadd(ctx.keys.transcript(sid), entry(encode(t)))


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
