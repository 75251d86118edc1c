"""One WebSocket session on the predecessor-compatible endpoint (``/`` and ``/ws``).

Receives audio, coalesces it into ~100 ms entries on ``audio:{session}``, announces the session on
the ``sessions`` stream with its first audio, and sends each final to the client in segment order.
On ``{"type": "eof"}`` or a close, the buffered speech is flushed through the pipeline and its
finals are sent before the socket is closed normally.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway.ordering import ArrivalClock, Coalescer, ReorderBuffer
from gateway.protocol import (
    CLOSE_NORMAL,
    CLOSE_TOO_BIG,
    ClientConfig,
    Eof,
    ProtocolError,
    parse_text_frame,
)
from gateway.router import ResultRouter
from shared import metrics
from shared.audio import SAMPLE_RATE, PcmCarry
from shared.keys import Keys
from shared.redis_util import entry, entry_data
from shared.schemas import (
    AudioChunk,
    AudioEnd,
    SchemaError,
    SessionDone,
    SessionStart,
    StreamMessage,
    Transcript,
    decode_as,
    encode,
)
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class GatewayContext:
    settings: Settings
    redis: aioredis.Redis
    keys: Keys
    router: ResultRouter


def final_message(t: Transcript) -> dict[str, Any]:
    """The predecessor's result object, plus type, session, segment and session-audio times."""
    return {
        "type": "final",
        "session_id": t.session_id,
        "segment": t.segment,
        "start": t.start,
        "end": t.end,
        "language": t.language,
        "language_probability": t.language_probability,
        "text": t.text,
        "words": [
            {"word": w.word, "start": w.start, "end": w.end, "probability": w.probability}
            for w in t.words
        ],
        "processing_time": t.processing_time,
    }


class LegacySession:
    def __init__(self, ws: WebSocket, ctx: GatewayContext, endpoint: str) -> None:
        s = ctx.settings
        self.ws = ws
        self.ctx = ctx
        self.endpoint = endpoint
        self.session_id = uuid.uuid4().hex
        self.config = ClientConfig()
        self.announced = False
        self.client_gone = False
        self.samples = 0
        self._seq = 0
        self._carry = PcmCarry()
        self._coalescer = Coalescer(SAMPLE_RATE * 2 * s.coalesce_ms // 1000, s.coalesce_ms / 1000)
        self._clock = ArrivalClock()
        self._reorder: ReorderBuffer[Transcript] = ReorderBuffer()
        self._total: int | None = None
        self._write_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        self._queue: asyncio.Queue[StreamMessage] = asyncio.Queue()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._queue = self.ctx.router.register(self.session_id)
        metrics.SESSIONS_ACTIVE.inc()
        metrics.SESSIONS_TOTAL.labels(self.endpoint).inc()
        ticker = asyncio.create_task(self._tick(), name=f"tick-{self.session_id}")
        sender = asyncio.create_task(self._send_results(), name=f"send-{self.session_id}")
        close_code = CLOSE_NORMAL
        reason = "eof"
        try:
            close_code, reason = await self._receive_loop()
        finally:
            ticker.cancel()
            try:
                await self._end(sender, reason)
            finally:
                if not sender.done():
                    sender.cancel()
                self.ctx.router.unregister(self.session_id)
                metrics.SESSIONS_ACTIVE.dec()
                await self._close(close_code)

    async def _receive_loop(self) -> tuple[int, str]:
        try:
            while True:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    self.client_gone = True
                    return CLOSE_NORMAL, "disconnect"
                data = msg.get("bytes")
                if data is not None:
                    await self._on_audio(data)
                    continue
                text = msg.get("text")
                if text is not None:
                    parsed = parse_text_frame(text)
                    if isinstance(parsed, Eof):
                        return CLOSE_NORMAL, "eof"
                    self._on_config(parsed)
        except ProtocolError as exc:
            metrics.FRAMES_REJECTED.labels(exc.code).inc()
            log.warning("session=%s protocol error %s: %s", self.session_id, exc.code, exc.message)
            await self._send(exc.frame())
            return exc.close_code, exc.code
        except WebSocketDisconnect:
            self.client_gone = True
            return CLOSE_NORMAL, "disconnect"

    async def _end(self, sender: asyncio.Task[None], reason: str) -> None:
        if not self.announced:
            return
        async with self._write_lock:
            await self._flush_locked()
            self._seq += 1
            end = AudioEnd(session_id=self.session_id, seq=self._seq, reason=reason)
            await self.ctx.redis.xadd(self.ctx.keys.audio(self.session_id), entry(encode(end)))
        if self.client_gone:
            return  # finals stay on transcript:{session} for the session TTL
        try:
            await asyncio.wait_for(asyncio.shield(sender), self.ctx.settings.eof_timeout_s)
        except TimeoutError:
            log.warning(
                "session=%s finals still missing after %.0fs; reading the transcript stream",
                self.session_id,
                self.ctx.settings.eof_timeout_s,
            )
            await self._fill_gaps()

    async def _fill_gaps(self) -> None:
        entries = await self.ctx.redis.xrange(self.ctx.keys.transcript(self.session_id))
        for _id, fields in entries:
            try:
                t = decode_as(entry_data(fields), Transcript)
            except SchemaError:
                continue
            for ready in self._reorder.push(t.segment, t):
                await self._deliver(ready)
        if self._total is not None:
            for ready in self._reorder.skip_to(self._total):
                await self._deliver(ready)

    async def _close(self, code: int) -> None:
        if self.client_gone or self.ws.client_state != WebSocketState.CONNECTED:
            return
        try:
            await self.ws.close(code)
        except (RuntimeError, OSError):
            pass

    # -- input -------------------------------------------------------------------------------

    def _on_config(self, config: ClientConfig) -> None:
        if self.announced:
            log.info("session=%s config after audio ignored", self.session_id)
            return
        self.config = config

    async def _on_audio(self, data: bytes) -> None:
        if len(data) > self.ctx.settings.max_frame_bytes:
            raise ProtocolError(
                "frame_too_large",
                f"binary frame of {len(data)} bytes exceeds the limit of "
                f"{self.ctx.settings.max_frame_bytes}",
                CLOSE_TOO_BIG,
            )
        metrics.AUDIO_BYTES.inc(len(data))
        pcm = self._carry.push(data)
        if not pcm:
            return
        now = time.monotonic()
        self.samples += len(pcm) // 2
        self._clock.mark(self.samples, now)
        async with self._write_lock:
            if not self.announced:
                await self._announce()
            chunk = self._coalescer.push(pcm, now)
            if chunk:
                await self._xadd_audio(chunk)

    async def _announce(self) -> None:
        start = SessionStart(
            session_id=self.session_id,
            sample_rate=SAMPLE_RATE,
            language=self.config.language,
            created_at=time.time(),
        )
        await self.ctx.redis.xadd(
            self.ctx.keys.sessions,
            entry(encode(start)),
            maxlen=self.ctx.settings.sessions_stream_maxlen,
            approximate=True,
        )
        self.announced = True
        log.info(
            "session=%s stage=gateway started (%s, language=%s)",
            self.session_id,
            self.endpoint,
            self.config.language,
        )

    async def _xadd_audio(self, pcm: bytes) -> None:
        self._seq += 1
        chunk = AudioChunk(
            session_id=self.session_id, seq=self._seq, pcm=pcm, received_at=time.time()
        )
        await self.ctx.redis.xadd(
            self.ctx.keys.audio(self.session_id),
            entry(encode(chunk)),
            maxlen=self.ctx.settings.audio_stream_maxlen,
            approximate=True,
        )

    async def _flush_locked(self) -> None:
        chunk = self._coalescer.take()
        if chunk:
            await self._xadd_audio(chunk)

    async def _tick(self) -> None:
        period = self.ctx.settings.coalesce_ms / 2000
        while True:
            await asyncio.sleep(period)
            if self._coalescer.due(time.monotonic()):
                async with self._write_lock:
                    await self._flush_locked()

    # -- output ------------------------------------------------------------------------------

    async def _send_results(self) -> None:
        while self._total is None or self._reorder.next < self._total:
            msg = await self._queue.get()
            if isinstance(msg, Transcript):
                for ready in self._reorder.push(msg.segment, msg):
                    await self._deliver(ready)
            elif isinstance(msg, SessionDone):
                self._total = msg.segments

    async def _deliver(self, t: Transcript) -> None:
        if not t.text or self.client_gone:
            return  # silence, a failed segment (dead-lettered), or nobody listening
        await self._send(final_message(t))
        metrics.FINALS_SENT.inc()
        arrived = self._clock.arrival(int(t.end * SAMPLE_RATE))
        if arrived is not None:
            metrics.FINAL_LATENCY.observe(max(0.0, time.monotonic() - arrived))

    async def _send(self, obj: dict[str, Any]) -> None:
        async with self._send_lock:
            try:
                await self.ws.send_json(obj)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.client_gone = True
