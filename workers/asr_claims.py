"""What the ASR worker's claim round takes over from a dead worker's partials.

Every half ``ASR_CLAIM_IDLE_MS`` the worker (workers/asr_worker.py, ``_claim_stale``) touches the
entries it holds in memory, reclaims final jobs idle longer than that (it decodes them), drops
the partials a dead worker left pending as long (:func:`drop_stale_partials`: a stale partial is
worthless, so they are acked and deleted, counted as ``stale``), and removes dead consumers
(``shared.redis_util.reap_dead``, shared with the VAD worker).
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from shared import metrics
from shared.keys import ASR_GROUP

log = logging.getLogger(__name__)

ROLE = "asr"
CLAIM_COUNT = 10


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
