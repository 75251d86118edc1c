"""One pub/sub connection per gateway process, routing results to per-session queues."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.keys import Keys
from shared.schemas import SchemaError, StreamMessage, decode

log = logging.getLogger(__name__)


class Resync:
    """Put on every session's queue after the subscription was lost and restored: results
    published meanwhile never arrive, so sessions re-read their durable transcript stream."""


RESYNC = Resync()

SESSION_QUEUE_MAX = 1000
"""Results waiting for one session's socket; beyond this the session is too slow and results are
dropped from the live path (they stay on the durable transcript stream)."""


class ResultRouter:
    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self._r = r
        self._keys = keys
        self._queues: dict[str, asyncio.Queue[StreamMessage | Resync]] = {}
        self._lost = False
        self._pubsub: aioredis.client.PubSub | None = None
        self.connected = asyncio.Event()

    def register(self, session_id: str) -> asyncio.Queue[StreamMessage | Resync]:
        queue: asyncio.Queue[StreamMessage | Resync] = asyncio.Queue(SESSION_QUEUE_MAX)
        self._queues[session_id] = queue
        return queue

    def unregister(self, session_id: str) -> None:
        self._queues.pop(session_id, None)

    async def subscribe(self) -> None:
        self._pubsub = self._r.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.psubscribe(self._keys.results_pattern)
        self.connected.set()
        if self._lost:
            self._lost = False
            log.warning("results subscription restored: %d sessions resync", len(self._queues))
            for queue in self._queues.values():
                try:
                    queue.put_nowait(RESYNC)
                except asyncio.QueueFull:
                    pass

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if self._pubsub is None:
                    await self.subscribe()
                assert self._pubsub is not None
                msg = await self._pubsub.get_message(timeout=1.0)
                if msg is not None:
                    self._dispatch(msg)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.connected.clear()
                self._lost = True
                log.warning("results subscription lost (%s); reconnecting", exc)
                await self._close_pubsub()
                await asyncio.sleep(0.5)
        await self._close_pubsub()

    async def _close_pubsub(self) -> None:
        if self._pubsub is not None:
            try:
                await self._pubsub.aclose()
            except (RedisConnectionError, RedisTimeoutError, OSError):
                pass
            self._pubsub = None

    def _dispatch(self, msg: dict[str, object]) -> None:
        channel = msg.get("channel")
        data = msg.get("data")
        if not isinstance(channel, bytes) or not isinstance(data, bytes):
            return
        sid = self._keys.session_from_channel(channel.decode())
        queue = self._queues.get(sid)
        if queue is None:
            return  # a session of another gateway process
        try:
            queue.put_nowait(decode(data))
        except SchemaError as exc:
            log.error("session=%s undecodable result dropped: %s", sid, exc)
        except asyncio.QueueFull:
            log.error("session=%s result queue full; result dropped from live path", sid)
