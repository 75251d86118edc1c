"""Redis helpers shared by the gateway and the workers: connections, groups (recreated when
Redis lost them), entries held while processed, dead consumers removed, heartbeats."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
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


def delivering(r: aioredis.Redis) -> aioredis.Redis:
    """A client of the same server as ``r`` (its own connections) that never retries a command:
    for the commands that deliver entries to a consumer (XREADGROUP ``>``, XAUTOCLAIM). A
    retried delivering command is not a repeat of the first: when a connection drops after Redis
    served it, the entries it delivered are pending to the consumer and the retry delivers
    others, so they would wait a whole claim idle time. Its errors reach the worker's loop, which then looks at
    what it holds (:func:`own_pending`)."""
    pool = r.connection_pool
    kwargs = dict(pool.connection_kwargs, retry=Retry(NoBackoff(), 0))
    return aioredis.Redis(
        connection_pool=type(pool)(connection_class=pool.connection_class, **kwargs)
    )


async def ensure_group(r: aioredis.Redis, stream: str, group: str, start_id: str = "0") -> None:
    """``XGROUP CREATE ... MKSTREAM``, ignoring only BUSYGROUP (the group already exists)."""
    try:
        await r.xgroup_create(stream, group, id=start_id, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def is_nogroup(exc: BaseException) -> bool:
    """Whether Redis answered NOGROUP: the stream or its group is gone (a restart without
    persistence, a FLUSHALL, an operator's DEL); or, to a blocked XREADGROUP, that its stream
    was deleted meanwhile (``UNBLOCKED the stream key no longer exists``)."""
    if not isinstance(exc, ResponseError):
        return False
    text = str(exc)
    return "NOGROUP" in text or ("UNBLOCKED" in text and "no longer exists" in text)


GROUP_RECOVERY_PAUSE_S = 1.0
"""Groups lost again within this long of a recovery: wait this long first (no busy loop)."""


class GroupKeeper:
    """The consumer groups one worker reads, made at start and made again whenever Redis
    answers NOGROUP: the worker logs the loss once and carries on with new entries (those of
    the lost stream are gone with it) instead of exiting or failing in a loop."""

    def __init__(self, r: aioredis.Redis, groups: Sequence[tuple[str, str]], who: str) -> None:
        self._r = r
        self.groups = list(groups)
        """(stream, group) pairs."""
        self._who = who
        self._recovered_at = -GROUP_RECOVERY_PAUSE_S
        self.recoveries = 0

    async def ensure(self) -> None:
        for stream, group in self.groups:
            await ensure_group(self._r, stream, group)

    async def recover(self, exc: BaseException) -> None:
        """Recreate every group after a NOGROUP answer (``exc``), logged once per loss."""
        since = time.monotonic() - self._recovered_at
        if since < GROUP_RECOVERY_PAUSE_S:
            await asyncio.sleep(GROUP_RECOVERY_PAUSE_S - since)
        self.recoveries += 1
        log.warning("%s: consumer groups lost (%s): recreating %s", self._who,
                    str(exc).splitlines()[-1][:200], ", ".join(s for s, _g in self.groups))  # fmt: skip
        await self.ensure()
        self._recovered_at = time.monotonic()


_TOUCH_LUA = """
-- KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3..] entry ids.
-- Resets the idle time of the entries still pending on this consumer (XCLAIM JUSTID: the
-- delivery count stays); returns them. An entry another consumer took meanwhile stays theirs.
local claim = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
local kept = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    kept[#kept + 1] = ARGV[i]
    claim[#claim + 1] = ARGV[i]
  end
end
if #kept > 0 then
  claim[#claim + 1] = 'JUSTID'
  redis.call(unpack(claim))
end
return kept
"""


async def touch_pending(
    r: aioredis.Redis, stream: str, group: str, consumer: str, ids: Sequence[bytes]
) -> set[bytes]:
    """Reset the idle time of our pending ``ids`` (so XAUTOCLAIM does not take them); return
    those still ours."""
    if not ids:
        return set()
    kept = await r.eval(_TOUCH_LUA, 1, stream, group, consumer, *ids)
    return {k if isinstance(k, bytes) else str(k).encode() for k in kept}


OWN_PENDING_PAGE = 100
"""Entries per round trip when a consumer's pending entries are listed."""


async def own_pending(
    r: aioredis.Redis, stream: str, group: str, consumer: str
) -> list[tuple[bytes, dict[bytes, bytes] | None, int]]:
    """What Redis says ``consumer`` holds on ``stream``: each entry delivered to it and not
    acked, with its fields (``None``: the entry was deleted meanwhile) and how often it was
    delivered, oldest first. A process holds in memory only what it read; this is also what a
    read whose reply was lost (Redis went down after it served the XREADGROUP), or whose
    follow-up failed, or an earlier process of the same name, left with it. Each call counts
    one more delivery of each entry (XREADGROUP from ``0``)."""
    found: list[tuple[bytes, dict[bytes, bytes] | None, int]] = []
    after: bytes | str = "0"
    while True:
        resp: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]] | None
        resp = await r.xreadgroup(group, consumer, {stream: after}, count=OWN_PENDING_PAGE)  # type: ignore[assignment]
        entries = [e for _stream, got in resp or [] for e in got]
        if not entries:
            return found
        counts = {
            p["message_id"]: int(p["times_delivered"])
            for p in await r.xpending_range(
                stream, group, min=entries[0][0], max=entries[-1][0], count=len(entries),
                consumername=consumer,
            )
        }  # fmt: skip
        found += [(i, f or None, counts.get(i, 1)) for i, f in entries]
        if len(entries) < OWN_PENDING_PAGE:
            return found
        after = entries[-1][0]


def hold_interval_s(claim_idle_ms: int) -> float:
    """How often an entry being processed is touched: three times per claim idle time, so one
    late touch (a stalled loop, a slow Redis) still comes before a peer may claim it."""
    return claim_idle_ms / 3000


@asynccontextmanager
async def held(
    r: aioredis.Redis,
    stream: str,
    group: str,
    consumer: str,
    ids: Sequence[bytes],
    claim_idle_ms: int,
) -> AsyncIterator[None]:
    """While the body runs (a decode longer than the claim idle time, say), keep ``ids``
    claimed by ``consumer``: peers reclaim only what a dead worker left."""
    every = hold_interval_s(claim_idle_ms)

    async def keep() -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await touch_pending(r, stream, group, consumer, ids)
            except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
                log.warning("could not extend the claim of %d entries of %s: %s",
                            len(ids), stream, exc)  # fmt: skip

    task = asyncio.create_task(keep(), name=f"hold {stream}")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


_REAP_LUA = """
-- KEYS[1] stream; ARGV[1] group, ARGV[2] consumer. Deletes the consumer only if it holds no
-- pending entry (checked in the same atomic step: DELCONSUMER would drop them).
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


async def live_names(r: aioredis.Redis, keys: Keys, role: str, ttl_s: float) -> set[str]:
    """Names of the workers of ``role`` whose heartbeat is younger than ``ttl_s``."""
    names = await r.zrangebyscore(keys.heartbeats(role), time.time() - ttl_s, "+inf")
    return {n.decode() if isinstance(n, bytes) else str(n) for n in names}


async def reap_consumers(
    r: aioredis.Redis, stream: str, group: str, live: set[str], idle_ms: int
) -> list[str]:
    """Remove the consumers of ``group`` that hold no pending entries, are not in ``live``
    (no heartbeat) and have been idle longer than ``idle_ms``: dead workers' names, which would
    otherwise stay in the group (and in its metrics) forever. Returns the names removed."""
    try:
        consumers = await r.xinfo_consumers(stream, group)
    except ResponseError as exc:
        if is_nogroup(exc) or "no such key" in str(exc).lower():
            return []
        raise
    removed = []
    for c in consumers:
        raw = c["name"]
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        if name in live or int(c["pending"]) or int(c["idle"]) < idle_ms:
            continue
        if await r.eval(_REAP_LUA, 1, stream, group, name):
            removed.append(name)
            log.info("removed dead consumer %s from %s of %s", name, group, stream)
    return removed


async def reap_dead(
    r: aioredis.Redis,
    keys: Keys,
    role: str,
    me: str,
    heartbeat_ttl_s: float,
    groups: Sequence[tuple[str, str]],
    idle_ms: int,
) -> list[str]:
    """Remove dead ``role`` workers' consumers (no pending entries, no heartbeat, idle longer
    than ``idle_ms``) from each ``(stream, group)``; ``me`` is alive whatever its heartbeat
    says. Returns the names removed."""
    live = await live_names(r, keys, role, heartbeat_ttl_s) | {me}
    removed: list[str] = []
    for stream, group in groups:
        removed += await reap_consumers(r, stream, group, live, idle_ms)
    return removed


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
