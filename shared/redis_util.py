"""Redis helpers shared by the gateway and the workers: connections, groups, heartbeats."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.keys import STREAM_DATA_FIELD, Keys

log = logging.getLogger(__name__)

T = TypeVar("T")


def connect(url: str, *, name: str = "whisper-streaming") -> aioredis.Redis:
    """An asyncio client with bytes responses and reconnection with exponential backoff."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=False,
        client_name=name,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=8),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=15,
        socket_keepalive=True,
    )


async def ensure_group(r: aioredis.Redis, stream: str, group: str, start_id: str = "0") -> None:
    """``XGROUP CREATE ... MKSTREAM``, ignoring only BUSYGROUP (the group already exists)."""
    try:
        await r.xgroup_create(stream, group, id=start_id, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class RedisUnavailable(Exception):
    """Redis did not answer for longer than the outage tolerance."""


async def ride_through(
    op: Callable[[], Awaitable[T]], *, tolerance_s: float, what: str = "redis"
) -> T:
    """``op()``, retried through a Redis outage: after redis-py's own reconnection attempts give
    up, keep trying (0.25 s, doubling to 2 s) until ``tolerance_s`` has passed since the first
    failure, then raise :class:`RedisUnavailable`. ``op`` must be safe to repeat (a retried
    XADD may have reached Redis once already: readers drop repeated sequence numbers)."""
    deadline: float | None = None
    delay = 0.25
    while True:
        try:
            return await op()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            now = time.monotonic()
            if deadline is None:
                deadline = now + tolerance_s
                log.warning("%s: Redis unavailable (%s); riding through for up to %.0f s",
                            what, exc, tolerance_s)  # fmt: skip
            if now >= deadline:
                raise RedisUnavailable(
                    f"Redis unavailable for more than {tolerance_s:.0f} s "
                    "(REDIS_OUTAGE_TOLERANCE_S)"
                ) from exc
            await asyncio.sleep(min(delay, deadline - now))
            delay = min(2.0, delay * 2)


def entry_data(fields: dict[bytes, bytes]) -> bytes:
    """The payload of a stream entry written by :func:`entry`; empty if it has none."""
    return fields.get(STREAM_DATA_FIELD, b"")


def entry(data: bytes) -> dict[bytes, bytes]:
    return {STREAM_DATA_FIELD: data}


class Heartbeat:
    """Keeps ``heartbeats:{role}`` (a sorted set of name -> unix time) fresh for one worker, and,
    given ``announce`` (an encoded ``WorkerCapabilities``), ``capabilities:{role}:{name}`` beside
    it with the heartbeat's lifetime ``ttl_s``."""

    def __init__(
        self,
        r: aioredis.Redis,
        keys: Keys,
        role: str,
        name: str,
        interval_s: float,
        *,
        announce: bytes | None = None,
        ttl_s: float = 0.0,
    ):
        self._r = r
        self._key = keys.heartbeats(role)
        self._caps_key = keys.capabilities(role, name)
        self._name = name
        self._interval = interval_s
        self._announce = announce
        self._ttl_ms = max(1, int(max(ttl_s, 2 * interval_s) * 1000))

    async def beat(self) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.zadd(self._key, {self._name: time.time()})
            if self._announce is not None:
                pipe.set(self._caps_key, self._announce, px=self._ttl_ms)
            await pipe.execute()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.beat()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning("heartbeat failed: %s", exc)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._interval)
            except TimeoutError:
                pass

    async def remove(self) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.zrem(self._key, self._name)
            pipe.delete(self._caps_key)
            await pipe.execute()


async def live_workers(r: aioredis.Redis, keys: Keys, role: str, ttl_s: float) -> int:
    """Workers of ``role`` whose last heartbeat is younger than ``ttl_s``; prunes stale ones."""
    now = time.time()
    key = keys.heartbeats(role)
    await r.zremrangebyscore(key, "-inf", now - 10 * ttl_s)
    return int(await r.zcount(key, now - ttl_s, "+inf"))
