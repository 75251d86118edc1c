"""The ASR worker's claim round, beside its reading: what a dead worker left is taken over.

Every half ``ASR_CLAIM_IDLE_MS`` the worker (workers/asr_worker.py) first touches the entries it
holds in memory (read, not decoded yet) so that no peer takes them, then reclaims final jobs idle
longer than that (it decodes them), reclaims pending partials idle as long (a dead worker's: a
stale partial is worthless, so they are acked and deleted, counted as ``stale``), and removes
from both groups the consumers that hold nothing, have no heartbeat and have been idle as long.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from shared import metrics
from shared.keys import ASR_GROUP, Keys
from shared.redis_util import live_names, reap_consumers, touch_pending
from shared.settings import Settings

log = logging.getLogger(__name__)

ROLE = "asr"
CLAIM_COUNT = 10


async def touch_held(r: aioredis.Redis, stream: str, name: str, ids: list[bytes]) -> None:
    """Keep the entries we hold in memory ours (their idle time restarts)."""
    if ids:
        await touch_pending(r, stream, ASR_GROUP, name, ids)


async def drop_stale_partials(
    r: aioredis.Redis, partials: str, name: str, idle_ms: int, pool: str
) -> int:
    """XAUTOCLAIM the partials pending longer than ``idle_ms`` (a dead worker's) and drop
    them; returns how many."""
    dropped = 0
    cursor: bytes | str = "0-0"
    while True:
        cursor, claimed, _deleted = await r.xautoclaim(
            partials, ASR_GROUP, name, idle_ms, cursor, count=CLAIM_COUNT
        )
        ids = [entry_id for entry_id, _fields in claimed]
        if ids:
            async with r.pipeline(transaction=True) as pipe:
                pipe.xack(partials, ASR_GROUP, *ids)
                pipe.xdel(partials, *ids)
                await pipe.execute()
            dropped += len(ids)
        if cursor in (b"0-0", "0-0"):
            break
    if dropped:
        metrics.ASR_PARTIALS.labels(pool, "stale").inc(dropped)
        log.warning("dropped %d partials a dead worker left pending on %s", dropped, partials)
    return dropped


async def reap_dead(
    r: aioredis.Redis, settings: Settings, keys: Keys, streams: list[str]
) -> list[str]:
    """Remove dead workers' consumers (no pending entries, no heartbeat, idle longer than
    ``ASR_CLAIM_IDLE_MS``) from the ``asr`` group of each stream."""
    live = await live_names(r, keys, ROLE, settings.heartbeat_ttl_s)
    live.add(settings.consumer_name)
    removed: list[str] = []
    for stream in streams:
        removed += await reap_consumers(r, stream, ASR_GROUP, live, settings.asr_claim_idle_ms)
    return removed
