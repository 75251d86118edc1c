"""One WebSocket session: the part both endpoints share.

A session receives audio, coalesces it into ~100 ms entries on ``audio:{session}``, announces
itself on the ``sessions`` stream with its first audio, and sends each final to the client in
segment order. When it ends (eof, close, or a protocol error) the buffered speech is flushed
through the pipeline and its finals are sent before the socket is closed. Subclasses say how text
frames are read and how results are written (:mod:`gateway.legacy`, :mod:`gateway.native`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway.auth import Authenticator, KeySessions
from gateway.ordering import ArrivalClock, Coalescer, ReorderBuffer
from gateway.protocol import (
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    ProtocolError,
)
from gateway.router import ResultRouter, Resync
from shared import metrics
from shared.audio import SAMPLE_RATE, PcmCarry, StreamResampler
from shared.keys import Keys
from shared.redis_util import entry, entry_data
from shared.runtime import TaskSet
from shared.schemas import (
    AudioChunk,
    AudioControl,
    AudioEnd,
    SchemaError,
    SessionDone,
    SessionStart,
    StreamMessage,
    Transcript,
    VadEvent,
    Word,
    decode_as,
    encode,
)
from shared.settings import Settings

log = logging.getLogger(__name__)

BACKLOG_CHECK_EVERY = 10
"""The gateway looks at a session's VAD backlog every this many audio entries (~1 s)."""

BACKPRESSURE_MAX_WAIT_S = 20.0
"""A session held back this long gives up with ``overloaded`` (before clients' ping timeouts)."""

STOP = "stop"
"""What a text-frame handler returns to end the session (eof)."""


@dataclass
class GatewayContext:
    settings: Settings
    redis: aioredis.Redis
    keys: Keys
    router: ResultRouter
    background: TaskSet = field(default_factory=TaskSet)
    """Tasks that outlive a socket (a dropped native session's grace timer)."""
    active: int = 0
    """Sessions open on this gateway process."""
    auth: Authenticator | None = None
    key_sessions: KeySessions | None = None


async def admission_error(ctx: GatewayContext) -> ProtocolError | None:
    """Why a new session must be refused now (1013: try again later), or None."""
    if ctx.active >= ctx.settings.max_sessions:
        metrics.SESSIONS_REFUSED.labels("too_many_sessions").inc()
        return ProtocolError(
            "too_many_sessions",
            f"this gateway serves {ctx.settings.max_sessions} sessions already",
            CLOSE_TRY_AGAIN_LATER,
        )
    backlog = await ctx.redis.xlen(ctx.keys.asr_jobs)
    if backlog >= ctx.settings.max_job_backlog:
        metrics.SESSIONS_REFUSED.labels("overloaded").inc()
        return ProtocolError(
            "overloaded",
            f"{backlog} utterances are waiting for transcription; try again shortly",
            CLOSE_TRY_AGAIN_LATER,
        )
    return None


def final_message(t: Transcript) -> dict[str, Any]:
    """The predecessor's result object, plus type, session, segment and session-audio times
    (and ``speaker``, on finals and words, only where the session asked for ``diarize``)."""
    msg: dict[str, Any] = {
        "type": "final",
        "session_id": t.session_id,
        "segment": t.segment,
        "start": t.start,
        "end": t.end,
        "language": t.language,
        "language_probability": t.language_probability,
        "text": t.text,
        "words": [_word(w) for w in t.words],
        "processing_time": t.processing_time,
    }
    if t.speaker is not None:
        msg["speaker"] = t.speaker
    return msg


def _word(w: Word) -> dict[str, Any]:
    out: dict[str, Any] = {
        "word": w.word,
        "start": w.start,
        "end": w.end,
        "probability": w.probability,
    }
    if w.speaker is not None:
        out["speaker"] = w.speaker
    return out


class Session:
    endpoint = "/"

    def __init__(self, ws: WebSocket, ctx: GatewayContext, session_id: str | None = None) -> None:
        s = ctx.settings
        self.ws = ws
        self.ctx = ctx
        self.keys = ctx.keys
        self.session_id = session_id or uuid.uuid4().hex
        self.owner = "dev"
        """The API key's name: only the same key may resume the session."""
        self.language: str | None = None
        self.interim_results = False
        self.vad_events = False
        self.diarize = False
        self.min_silence_ms: int | None = None
        self.announced = False
        self.ended = False
        """The session's audio has already ended (resuming a finished session)."""
        self.client_gone = False
        self.samples = 0
        self._seq = 0
        self._carry = PcmCarry()
        self._resampler: StreamResampler | None = None
        self._coalescer = Coalescer(SAMPLE_RATE * 2 * s.coalesce_ms // 1000, s.coalesce_ms / 1000)
        self.clock = ArrivalClock()
        self.reorder: ReorderBuffer[Transcript] = ReorderBuffer()
        self.total: int | None = None
        self.audio_seconds = 0.0
        self._rate_window = 0.0
        self._rate_frames = 0
        self._write_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        self._queue: asyncio.Queue[StreamMessage | Resync] = asyncio.Queue()

    # -- hooks -------------------------------------------------------------------------------

    async def on_open(self) -> None:
        """After accept and registration, before reading frames."""

    async def handle_text(self, text: str) -> str | None:
        """One text frame; return :data:`STOP` to end the session. Raise ProtocolError."""
        raise NotImplementedError

    async def deliver_final(self, t: Transcript) -> None:
        raise NotImplementedError

    async def on_partial(self, t: Transcript) -> None:
        """Interim results are only for endpoints that ask for them."""

    async def on_vad_event(self, event: VadEvent) -> None:
        """VAD events are only for endpoints that ask for them."""

    async def after_finals(self) -> None:
        """Called after finals were released in order."""

    async def on_dropped(self) -> bool:
        """The client went away without eof. Return True to keep the session open (resumable);
        False ends it now."""
        return False

    async def on_closing(self) -> None:
        """All finals were sent; the socket is about to close normally."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._queue = self.ctx.router.register(self.session_id)
        self.ctx.active += 1
        metrics.SESSIONS_ACTIVE.inc()
        metrics.SESSIONS_TOTAL.labels(self.endpoint).inc()
        try:
            await self.on_open()
        except ProtocolError as exc:  # e.g. resuming an unknown session
            await self._send(exc.frame())
            self.ctx.router.unregister(self.session_id)
            self.ctx.active -= 1
            metrics.SESSIONS_ACTIVE.dec()
            await self._close(exc.close_code)
            return
        sender = asyncio.create_task(self._send_results(), name=f"send-{self.session_id}")
        ticker = asyncio.create_task(self._tick(), name=f"tick-{self.session_id}")
        close_code, reason = CLOSE_NORMAL, "eof"
        try:
            if not self.ended:
                close_code, reason = await self._receive_loop()
        finally:
            ticker.cancel()
            try:
                await self._end(sender, reason)
            finally:
                if not sender.done():
                    sender.cancel()
                self.ctx.router.unregister(self.session_id)
                self.ctx.active -= 1
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
                    await self.on_audio(data)
                    continue
                text = msg.get("text")
                if text is not None and await self.handle_text(text) == STOP:
                    return CLOSE_NORMAL, "eof"
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
        if self.client_gone and not self.ended and await self.on_dropped():
            async with self._write_lock:
                await self._flush_locked()
            return
        if not self.ended:
            await self.end_audio(reason)
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
            await self.fill_from_transcript()
        if not self.client_gone:
            await self.on_closing()

    async def end_audio(self, reason: str) -> None:
        async with self._write_lock:
            await self._flush_locked()
            self._seq += 1
            end = AudioEnd(session_id=self.session_id, seq=self._seq, reason=reason)
            async with self.ctx.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self.keys.audio(self.session_id), entry(encode(end)))
                pipe.expire(self.keys.audio(self.session_id), self.ctx.settings.session_ttl_s)
                pipe.hset(self.keys.session(self.session_id), "state", "ended")
                pipe.expire(self.keys.session(self.session_id), self.ctx.settings.session_ttl_s)
                await pipe.execute()

    async def fill_from_transcript(self) -> None:
        """The live wait is over: send the finals the live path missed, from the durable
        ``transcript:{session}``, and stop waiting for segments that never came."""
        await self.catch_up()
        if self.total is not None:
            for ready in self.reorder.skip_to(self.total):
                await self._deliver(ready)
        await self.after_finals()

    async def catch_up(self) -> None:
        """Send, in order, the finals on ``transcript:{session}`` that the client has not had."""
        entries = await self.ctx.redis.xrange(self.keys.transcript(self.session_id))
        for _id, fields in entries:
            try:
                t = decode_as(entry_data(fields), Transcript)
            except SchemaError:
                continue
            for ready in self.reorder.push(t.segment, t):
                await self._deliver(ready)
        await self.after_finals()

    async def _close(self, code: int) -> None:
        if self.client_gone or self.ws.client_state != WebSocketState.CONNECTED:
            return
        try:
            await self.ws.close(code)
        except (RuntimeError, OSError):
            pass

    # -- input -------------------------------------------------------------------------------

    def set_input_rate(self, rate: int) -> None:
        self._resampler = None if rate == SAMPLE_RATE else StreamResampler(rate, SAMPLE_RATE)

    async def on_audio(self, data: bytes) -> None:
        if len(data) > self.ctx.settings.max_frame_bytes:
            raise ProtocolError(
                "frame_too_large",
                f"binary frame of {len(data)} bytes exceeds the limit of "
                f"{self.ctx.settings.max_frame_bytes}",
                CLOSE_TOO_BIG,
            )
        self._check_rate()
        metrics.AUDIO_BYTES.inc(len(data))
        pcm = self._carry.push(data)
        if self._resampler is not None:
            pcm = self._resampler.push(pcm)
        if not pcm:
            return
        now = time.monotonic()
        self.samples += len(pcm) // 2
        if self.samples > self.ctx.settings.max_session_s * SAMPLE_RATE:
            raise ProtocolError(
                "session_too_long",
                f"sessions are limited to {self.ctx.settings.max_session_s:.0f} s of audio",
                CLOSE_POLICY,
            )
        self.clock.mark(self.samples, now)
        async with self._write_lock:
            if not self.announced:
                await self._announce()
            chunk = self._coalescer.push(pcm, now)
            if chunk:
                await self._xadd_audio(chunk)

    def _check_rate(self) -> None:
        now = time.monotonic()
        if now - self._rate_window >= 1.0:
            self._rate_window, self._rate_frames = now, 0
        self._rate_frames += 1
        if self._rate_frames > self.ctx.settings.max_frames_per_second:
            raise ProtocolError(
                "rate_limited",
                f"more than {self.ctx.settings.max_frames_per_second} frames a second",
                CLOSE_POLICY,
            )

    @property
    def seq(self) -> int:
        """Sequence number of the last entry put on the audio stream."""
        return self._seq

    @seq.setter
    def seq(self, value: int) -> None:
        self._seq = value

    async def control(self, kind: str) -> None:
        """Put a control entry on the audio stream, in order with the audio before it."""
        if not self.announced:
            return
        async with self._write_lock:
            await self._flush_locked()
            self._seq += 1
            ctl = AudioControl(session_id=self.session_id, seq=self._seq, kind=kind)
            await self.ctx.redis.xadd(self.keys.audio(self.session_id), entry(encode(ctl)))

    async def _announce(self) -> None:
        start = SessionStart(
            session_id=self.session_id,
            sample_rate=SAMPLE_RATE,
            language=self.language,
            created_at=time.time(),
            min_silence_ms=self.min_silence_ms,
            interim_results=self.interim_results,
            vad_events=self.vad_events,
            diarize=self.diarize,
        )
        ttl = self.ctx.settings.session_ttl_s
        async with self.ctx.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.keys.session(self.session_id),
                mapping={
                    "state": "attached",
                    "attach": 1,
                    "endpoint": self.endpoint,
                    "owner": self.owner,
                },
            )
            pipe.expire(self.keys.session(self.session_id), ttl)
            pipe.xadd(
                self.keys.sessions,
                entry(encode(start)),
                maxlen=self.ctx.settings.sessions_stream_maxlen,
                approximate=True,
            )
            await pipe.execute()
        self.announced = True
        log.info(
            "session=%s stage=gateway started (%s, language=%s)",
            self.session_id,
            self.endpoint,
            self.language,
        )

    async def _xadd_audio(self, pcm: bytes) -> None:
        self._seq += 1
        chunk = AudioChunk(
            session_id=self.session_id, seq=self._seq, pcm=pcm, received_at=time.time()
        )
        key = self.keys.audio(self.session_id)
        async with self.ctx.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, entry(encode(chunk)))
            # a TTL even while live: if every process of the session dies, nothing stays behind
            pipe.expire(key, self.ctx.settings.session_ttl_s)
            await pipe.execute()
        if self._seq % BACKLOG_CHECK_EVERY == 0:
            await self._wait_for_vad()

    async def _wait_for_vad(self) -> None:
        """Back-pressure: while the session's VAD worker is behind by more than
        ``AUDIO_BACKLOG_MAX`` entries, stop taking audio (the client's socket backs up) rather
        than dropping any; give up with ``overloaded`` after ``BACKPRESSURE_MAX_WAIT_S``."""
        limit = self.ctx.settings.audio_backlog_max
        key = self.keys.session(self.session_id)
        deadline = time.monotonic() + BACKPRESSURE_MAX_WAIT_S
        while True:
            done = await self.ctx.redis.hget(key, "vad_seq")
            if self._seq - int(done or 0) <= limit:
                return
            metrics.BACKPRESSURE_WAITS.inc()
            if time.monotonic() > deadline:
                raise ProtocolError(
                    "overloaded",
                    "speech detection is not keeping up with this session's audio",
                    CLOSE_TRY_AGAIN_LATER,
                )
            await asyncio.sleep(0.05)

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
        while self.total is None or self.reorder.next < self.total:
            msg = await self._queue.get()
            if isinstance(msg, Transcript):
                if msg.final:
                    for ready in self.reorder.push(msg.segment, msg):
                        await self._deliver(ready)
                    await self.after_finals()
                elif msg.segment >= self.reorder.next:
                    await self.on_partial(msg)
            elif isinstance(msg, VadEvent):
                await self.on_vad_event(msg)
            elif isinstance(msg, SessionDone):
                self.total = msg.segments
                self.audio_seconds = msg.audio_seconds
            elif isinstance(msg, Resync):
                await self._resync()

    async def _resync(self) -> None:
        """Catch up on what the live path lost: finals from the transcript stream, and the
        segment count if the session's audio already ended."""
        done = await self.ctx.redis.hmget(
            self.keys.session(self.session_id), ["segments", "audio_seconds"]
        )
        if done[0] is not None:
            self.total = int(done[0])
            self.audio_seconds = float(done[1] or 0)
        await self.catch_up()

    async def _deliver(self, t: Transcript) -> None:
        if not t.text or self.client_gone:
            return  # silence, a failed segment (dead-lettered), or nobody listening
        await self.deliver_final(t)
        metrics.FINALS_SENT.inc()
        arrived = self.clock.arrival(int(t.end * SAMPLE_RATE))
        if arrived is not None:
            metrics.FINAL_LATENCY.observe(max(0.0, time.monotonic() - arrived))

    async def send(self, obj: dict[str, Any]) -> None:
        await self._send(obj)

    async def _send(self, obj: dict[str, Any]) -> None:
        if self.client_gone:
            return
        async with self._send_lock:
            try:
                await self.ws.send_json(obj)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.client_gone = True
