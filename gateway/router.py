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
        self._queues: dict[str, dict[str, asyncio.Queue[StreamMessage | Resync]]] = {}
        """session id -> socket token -> queue: while a resuming socket replaces an older one on
        this gateway, both are registered; each unregisters only its own queue."""
        self._lost = False
        self._pubsub: aioredis.client.PubSub | None = None
        self.connected = asyncio.Event()

    def register(self, session_id: str, token: str) -> asyncio.Queue[StreamMessage | Resync]:
        """A queue for one socket (``token``) of the session."""
        queue: asyncio.Queue[StreamMessage | Resync] = asyncio.Queue(SESSION_QUEUE_MAX)
        self._queues.setdefault(session_id, {})[token] = queue
        return queue

    def unregister(self, session_id: str, token: str) -> None:
        """Remove that socket's queue, never another socket's of the same session."""
        queues = self._queues.get(session_id)
        if queues is not None:
            queues.pop(token, None)
            if not queues:
                del self._queues[session_id]

    async def subscribe(self) -> None:
        self._pubsub = self._r.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.psubscribe(self._keys.results_pattern)
        self.connected.set()
        if self._lost:
            self._lost = False
            log.warning("results subscription restored: %d sessions resync", len(self._queues))
            for queue in [q for qs in self._queues.values() for q in qs.values()]:
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
        queues = self._queues.get(sid)
        if not queues:
            return  # a session of another gateway process
        try:
            msg = decode(data)
        except SchemaError as exc:
            log.error("session=%s undecodable result dropped: %s", sid, exc)
            return
        for queue in list(queues.values()):
            try:
                queue.put_nowait(msg)
            except asyncio.QueueFull:
                log.error("session=%s result queue full; result dropped from live path", sid)
