"""Session ownership on the ``sessions`` stream (group ``vad``), as pending entries.

A VAD worker owns a session by keeping its entry pending. Live owners reset their entries' idle
time every few seconds (``touch``); entries idle longer than ``VAD_CLAIM_IDLE_MS`` belong to a dead
worker and are taken over with XAUTOCLAIM (``claim_orphans``). A worker shutting down hands its
sessions back at once by parking them, idle, on the ``handback`` consumer (``hand_back``), so the
next claim round of any live worker takes them without waiting for the idle time.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.keys import VAD_GROUP, Keys

HANDBACK_CONSUMER = "handback"
LONG_IDLE_MS = 10**9


async def touch(r: aioredis.Redis, keys: Keys, name: str, ids: list[bytes]) -> set[bytes]:
    """Reset the idle time of our entries; return the ids that are still ours (an entry we lost
    to a claimer while we were stalled must not be processed twice)."""
    if not ids:
        return set()
    pending = await r.xpending_range(
        keys.sessions, VAD_GROUP, min="-", max="+", count=10 * len(ids) + 100, consumername=name
    )
    mine = {p["message_id"] for p in pending}
    kept = [i for i in ids if i in mine]
    if kept:
        await r.xclaim(keys.sessions, VAD_GROUP, name, 0, kept, justid=True)
    return set(kept)


async def claim_orphans(
    r: aioredis.Redis, keys: Keys, name: str, idle_ms: int, count: int
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Sessions whose owner stopped touching them (died, or handed them back)."""
    claimed: list[tuple[bytes, dict[bytes, bytes]]] = []
    cursor: bytes | str = "0-0"
    while len(claimed) < count:
        cursor, entries, _deleted = await r.xautoclaim(
            keys.sessions, VAD_GROUP, name, idle_ms, cursor, count=count - len(claimed)
        )
        claimed.extend((i, f) for i, f in entries if f is not None)
        if cursor in (b"0-0", "0-0"):
            break
    return claimed


async def hand_back(r: aioredis.Redis, keys: Keys, name: str, ids: list[bytes]) -> None:
    """Park our sessions as long idle on the handback consumer, then leave the group."""
    if ids:
        await r.xclaim(
            keys.sessions, VAD_GROUP, HANDBACK_CONSUMER, 0, ids, idle=LONG_IDLE_MS, justid=True
        )
    left = await r.xpending_range(
        keys.sessions, VAD_GROUP, min="-", max="+", count=1, consumername=name
    )
    if not left:
        await r.xgroup_delconsumer(keys.sessions, VAD_GROUP, name)
