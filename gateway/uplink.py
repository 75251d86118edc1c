"""The audio half of a gateway session: client audio in, entries on ``audio:{session}`` out.

:class:`AudioUplink` takes the session's audio as the client sends it (any frame size, any sample
rate, odd byte counts, any of the encodings of :mod:`gateway.encodings`) and, in this order:
checks the frame-size, frame-rate and session-length limits; decodes it to 16 kHz PCM16 (odd
bytes joined across frames, G.711 expanded, Ogg/WebM Opus demuxed and decoded, resampled:
:meth:`AudioUplink.set_input_format`); coalesces into ~``COALESCE_MS`` entries
(:class:`~gateway.ordering.Coalescer`); announces the session on ``sessions`` with its first
audio, with the model pool its jobs go to (or refuses a language no pool serves);
XADDs the entries with the session TTL; and holds the caller back while the session's VAD worker
is behind (back-pressure). It knows nothing of sockets: a WebSocket protocol and a file upload
feed it alike, and a limit broken is a :class:`~gateway.protocol.ProtocolError` for the caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.attachment import APPEND_LUA, Attachment, new_token
from gateway.context import GatewayContext, overloaded
from gateway.encodings import EncodingError, InputFormat
from gateway.ordering import ArrivalClock, Coalescer, FrameCounter
from gateway.protocol import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNSUPPORTED,
    ProtocolError,
    session_replaced,
)
from shared import metrics, session_state
from shared.audio import SAMPLE_RATE
from shared.capabilities import TRANSCRIBE, parse_pools, read_pool, route
from shared.keyterms import KeytermError, check_keyterms
from shared.redis_util import entry, ride_through
from shared.schemas import AudioChunk, AudioControl, AudioEnd, SessionStart, encode
from shared.session_state import Field, State

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKLOG_CHECK_EVERY = 10
"""The gateway looks at a session's VAD backlog every this many audio entries (~1 s)."""

BACKPRESSURE_MAX_WAIT_S = 20.0
"""A session held back this long gives up with ``overloaded`` (before clients' ping timeouts)."""

BACKPRESSURE_POLL_S = 0.05
"""How often a held-back session looks at its VAD worker's progress again."""


class AudioUplink:
    """One session's audio path to Redis. Set the ``SessionStart`` options (``language``,
    ``interim_results``, ``vad_events``, ``diarize``, ``min_silence_ms``), ``owner`` and the
    input format (:meth:`set_input_format`) before the first :meth:`push`; they are announced
    with the first audio. Key terms (:meth:`set_keyterms`) may change at any time."""

    def __init__(self, ctx: GatewayContext, session_id: str, endpoint: str) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.session_id = session_id
        self.endpoint = endpoint
        self.owner = "dev"
        """The API key's name: only the same key may resume the session."""
        self.attachment = Attachment(new_token(s.consumer_name))
        """This socket's token: written as the session's ``conn`` at the announcement (or by a
        resume's takeover); every write of the audio stream is conditional on it."""
        self._append_script: Any = None
        """:data:`APPEND_LUA` by EVALSHA (registered at the first append: the script is sent
        once per Redis server, not with every entry)."""
        self.language: str | None = None
        self.task = TRANSCRIBE
        """``translate`` (into English) or ``transcribe``; checked against the live workers."""
        self.pool = ""
        """The model pool the session's jobs go to, chosen at the first audio (or resumed)."""
        self.interim_results = False
        self.vad_events = False
        self.diarize = False
        self.min_silence_ms: int | None = None
        self.keyterms: list[str] = []
        """Decoded with as ``hotwords`` (bounded: shared/keyterms.py); see :meth:`set_keyterms`."""
        self.text_audio = False
        """The protocol sends its audio in text frames (OpenAI's base64 appends): text frames
        are then held to the audio frame-rate limit, not the control-frame one."""
        self.smart_endpointing: bool | None = None
        """``None``: the server's ``VAD_ENDPOINTING``."""
        self.eager_eot = False
        self.announced = False
        """``session_start`` is on ``sessions`` (the session exists for the workers)."""
        self.ended = False
        """``audio_end`` is on the audio stream (or the resumed session had ended already)."""
        self.samples = 0
        """16 kHz samples received so far."""
        self.written = 0
        """16 kHz samples on the audio stream (``samples`` less what is still being coalesced):
        saved with every entry, what a resume reports as ``audio_received``."""
        self.seq = 0
        """Sequence number of the last entry put on the audio stream."""
        self.received = hashlib.sha256()
        """Of the audio bytes this uplink took, as the client sent them (Deepgram's ``sha256``)."""
        self.clock = ArrivalClock()
        """When each stretch of audio arrived (the downlink measures latency from it)."""
        self.input_format = InputFormat()
        self._decoder = self.input_format.decoder()
        self._coalescer = Coalescer(SAMPLE_RATE * 2 * s.coalesce_ms // 1000, s.coalesce_ms / 1000)
        self._audio_frames = FrameCounter()
        self._text_frames = FrameCounter()
        self._lock = asyncio.Lock()
        """Keeps entries in order: audio, a flush by the ticker, control entries, the end."""

    @property
    def audio_key(self) -> str:
        return self.ctx.keys.audio(self.session_id)

    @property
    def session_key(self) -> str:
        return self.ctx.keys.session(self.session_id)

    def set_input_rate(self, rate: int) -> None:
        """PCM16 (``linear16``) at ``rate``."""
        self.set_input_format(InputFormat("linear16", rate))

    def set_input_format(self, fmt: InputFormat) -> None:
        """The encoding and rate of what :meth:`push` gets (before the first audio: a decoder's
        state does not carry over); :func:`gateway.encodings.parse_input_format` makes one
        from a client's ``encoding`` and ``sample_rate``."""
        self.input_format = fmt
        self._decoder = fmt.decoder()

    async def set_keyterms(self, terms: list[str]) -> None:
        """The session's key terms, checked against the bounds (``invalid_keyterms`` beyond
        them); once the session is announced, for the utterances cut from here on."""
        try:
            self.keyterms = check_keyterms(terms)
        except KeytermError as exc:
            raise ProtocolError("invalid_keyterms", str(exc), CLOSE_INVALID_PAYLOAD) from exc
        await self.control("keyterms")

    def resume(self, *, samples: int, seq: int, ended: bool, pool: str = "") -> None:
        """Continue a session announced by an earlier socket (it saved ``samples`` and ``seq``;
        its pool was chosen then and stays)."""
        self.announced = True
        self.pool = pool
        self.samples = samples
        self.written = samples
        self.seq = seq
        self.ended = ended

    # -- audio in ---------------------------------------------------------------------------

    async def push(self, data: bytes) -> None:
        """One frame of client audio. Raises :class:`ProtocolError` for a broken limit, or
        ``overloaded`` when the VAD worker stays behind for ``BACKPRESSURE_MAX_WAIT_S``."""
        limits = self.ctx.settings
        if len(data) > limits.max_frame_bytes:
            raise ProtocolError(
                "frame_too_large",
                f"binary frame of {len(data)} bytes exceeds the limit of {limits.max_frame_bytes}",
                CLOSE_TOO_BIG,
            )
        await self._throttle()
        metrics.AUDIO_BYTES.inc(len(data))
        self.received.update(data)  # the SHA-256 of what the client sent (Metadata)
        try:
            pcm = self._decoder.push(data)
        except EncodingError as exc:
            raise ProtocolError(
                "invalid_audio",
                f"the audio is not {self.input_format.encoding}: {exc}",
                CLOSE_INVALID_PAYLOAD,
            ) from exc
        if not pcm:
            return
        now = time.monotonic()
        self.samples += len(pcm) // 2
        if self.samples > limits.max_session_s * SAMPLE_RATE:
            raise ProtocolError(
                "session_too_long",
                f"sessions are limited to {limits.max_session_s:.0f} s of audio",
                CLOSE_POLICY,
            )
        self.clock.mark(self.samples, now)
        async with self._lock:
            if not self.announced:
                await self._announce()
            chunk = self._coalescer.push(pcm, now)
            if chunk:
                await self._xadd_audio(chunk)

    async def _throttle(self) -> None:
        """More than ``MAX_FRAMES_PER_SECOND`` binary frames in a second are held back, not
        refused: the socket is not read meanwhile (TCP back-pressure), so a client that sends a
        burst after a network stall loses nothing, and a flood of tiny frames costs no more than
        the limit allows."""
        wait = self._audio_frames.wait_s(time.monotonic(), self.ctx.settings.max_frames_per_second)
        if wait > 0:
            metrics.FRAMES_THROTTLED.inc()
            await asyncio.sleep(wait)

    def check_text_rate(self) -> None:
        """Every text frame (any endpoint, before it is parsed): at most
        ``MAX_TEXT_FRAMES_PER_SECOND``, or ``rate_limited`` and close 1008 like binary frames
        (``MAX_FRAMES_PER_SECOND`` where the audio comes in text frames)."""
        s = self.ctx.settings
        limit = s.max_frames_per_second if self.text_audio else s.max_text_frames_per_second
        if self._text_frames.count(time.monotonic()) > limit:
            raise ProtocolError(
                "rate_limited", f"more than {limit} text frames a second", CLOSE_POLICY
            )

    async def control(self, kind: str) -> None:
        """Put a control entry on the audio stream, in order with the audio before it."""
        if not self.announced:
            return
        async with self._lock:
            await self._flush_locked()
            self.seq += 1
            ctl = AudioControl(session_id=self.session_id, seq=self.seq, kind=kind)
            if kind == "keyterms":
                ctl.keyterms = self.keyterms
            await self._append(encode(ctl))

    async def flush(self) -> None:
        """XADD whatever is coalesced now (a dropped socket's audio, before it detaches)."""
        async with self._lock:
            await self._flush_locked()

    async def end(self, reason: str) -> None:
        """Flush, then ``audio_end``: the VAD worker closes the open utterance and the session."""
        async with self._lock:
            await self._flush_locked()
            self.seq += 1
            end = AudioEnd(session_id=self.session_id, seq=self.seq, reason=reason)
            await self._append(encode(end), ended=True)
            self.ended = True

    async def tick(self) -> None:
        """Run beside a live session: XADD what was coalesced once it has waited
        ``COALESCE_MS``, so a client sending slowly is not held up by the coalescing."""
        period = self.ctx.settings.coalesce_ms / 2000
        while True:
            await asyncio.sleep(period)
            if self._coalescer.due(time.monotonic()):
                async with self._lock:
                    if self.attachment.lost.is_set():
                        return  # another socket has the session: the loop closes this one
                    try:
                        await self._flush_locked()
                    except ProtocolError:
                        if self.attachment.lost.is_set():
                            return  # session_replaced
                        raise

    # -- Redis ------------------------------------------------------------------------------

    async def _ride(self, op: Callable[[], Awaitable[T]]) -> T:
        """A write of this session, ridden through a Redis outage of up to
        ``REDIS_OUTAGE_TOLERANCE_S`` (the socket is not read meanwhile: back-pressure); beyond,
        :class:`RedisUnavailable`, which the socket loop turns into ``service_unavailable``."""
        return await ride_through(
            op, tolerance_s=self.ctx.settings.redis_outage_tolerance_s, what=f"session={self.session_id}"
        )  # fmt: skip

    async def _admit(self) -> str:
        """The model pool for the session's language and task (shared/capabilities.py
        ``route``); refuse, before the session exists, what no pool serves
        (``unsupported_language``, naming the languages served), or a pool whose job stream is
        over ``MAX_JOB_BACKLOG`` (``overloaded``)."""
        s = self.ctx.settings
        live = await self._ride(lambda: read_pool(self.ctx.redis, self.ctx.keys, s.heartbeat_ttl_s))
        chosen = route(self.language, self.task, live, parse_pools(s.asr_pools))
        if isinstance(chosen, str):
            metrics.SESSIONS_REFUSED.labels("unsupported_language").inc()
            log.info("session=%s refused: %s", self.session_id, chosen)
            raise ProtocolError("unsupported_language", chosen, CLOSE_UNSUPPORTED)
        backlog, sessions = await self._ride(lambda: self._lengths(chosen.pool))
        if backlog >= s.max_job_backlog:
            raise overloaded(backlog)
        if sessions >= s.sessions_stream_max:
            raise overloaded(sessions, "sessions are open or waiting")
        metrics.SESSIONS_ROUTED.labels(chosen.pool).inc()
        if not chosen.live:
            log.info("session=%s pool %s has no live worker: its jobs wait for one",
                     self.session_id, chosen.pool)  # fmt: skip
        if chosen.as_english:
            log.info("session=%s detection with only English pools live: served as English",
                     self.session_id)  # fmt: skip
        return chosen.pool

    async def _lengths(self, pool: str) -> tuple[int, int]:
        """Jobs on ``pool``'s stream and entries on ``sessions`` (one round trip)."""
        async with self.ctx.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self.ctx.keys.asr_jobs(pool))
            pipe.xlen(self.ctx.keys.sessions)
            jobs, sessions = await pipe.execute()
        return int(jobs), int(sessions)

    async def _announce(self) -> None:
        self.pool = await self._admit()
        start = SessionStart(
            session_id=self.session_id,
            sample_rate=SAMPLE_RATE,
            source_rate=self.input_format.sample_rate,
            language=self.language,
            created_at=time.time(),
            min_silence_ms=self.min_silence_ms,
            smart_endpointing=self.smart_endpointing,
            eager_eot=self.eager_eot,
            interim_results=self.interim_results,
            vad_events=self.vad_events,
            diarize=self.diarize,
            pool=self.pool,
            task=self.task,
            keyterms=self.keyterms,
        )
        fields: dict[Field, session_state.Value] = {
            Field.STATE: State.ATTACHED,
            Field.ATTACH: 1,
            Field.CONN: self.attachment.token,
            Field.ENDPOINT: self.endpoint,
            Field.OWNER: self.owner,
            Field.POOL: self.pool,
        }

        async def write_start() -> None:
            async with self.ctx.redis.pipeline(transaction=True) as pipe:
                session_state.write(pipe, self.session_key, fields, self.ctx.settings.session_ttl_s)
                # never trimmed (an entry is a live session's ownership): SESSIONS_STREAM_MAX
                # is enforced at admission
                pipe.xadd(self.ctx.keys.sessions, entry(encode(start)))
                await pipe.execute()

        await self._ride(write_start)
        self.announced = True
        log.info(
            "session=%s stage=gateway started (%s, language=%s, task=%s, pool=%s)",
            self.session_id,
            self.endpoint,
            self.language,
            self.task,
            self.pool,
        )

    async def _xadd_audio(self, pcm: bytes) -> None:
        self.seq += 1
        self.written += len(pcm) // 2
        chunk = AudioChunk(
            session_id=self.session_id, seq=self.seq, pcm=pcm, received_at=time.time()
        )

        await self._append(encode(chunk))
        if self.seq % BACKLOG_CHECK_EVERY == 0:
            await self._wait_for_vad()

    async def _append(self, payload: bytes, ended: bool = False) -> None:
        """XADD one entry (with the session TTL on the stream and the hash, even while live: if
        every process of the session dies, nothing stays) — only while this socket is the
        session's attached one (:data:`~gateway.attachment.APPEND_LUA`); otherwise mark the
        attachment lost and raise ``session_replaced``."""
        keys = (self.session_key, self.audio_key)
        argv = (
            self.attachment.token, payload, self.ctx.settings.session_ttl_s,
            self.seq, self.written, "1" if ended else "0",
        )  # fmt: skip
        if self._append_script is None:
            self._append_script = self.ctx.redis.register_script(APPEND_LUA)
        accepted = await self._ride(lambda: self._append_script(keys=keys, args=argv))
        if not accepted:
            self.attachment.lost.set()
            raise session_replaced(self.session_id)

    async def _wait_for_vad(self) -> None:
        """Back-pressure: while the session's VAD worker is behind by more than
        ``AUDIO_BACKLOG_MAX`` entries, stop taking audio (the client's socket backs up) rather
        than dropping any; give up with ``overloaded`` after ``BACKPRESSURE_MAX_WAIT_S``."""
        limit = self.ctx.settings.audio_backlog_max
        deadline = time.monotonic() + BACKPRESSURE_MAX_WAIT_S
        while True:
            done, jobs = await self._ride(self._progress)
            vad_behind = self.seq - done > limit
            if not vad_behind and jobs < self.ctx.settings.jobs_stream_max:
                return
            metrics.BACKPRESSURE_WAITS.inc()
            if time.monotonic() > deadline:
                raise ProtocolError(
                    "overloaded",
                    "speech detection is not keeping up with this session's audio"
                    if vad_behind
                    else f"{jobs} utterances are waiting for transcription",
                    CLOSE_TRY_AGAIN_LATER,
                )
            await asyncio.sleep(BACKPRESSURE_POLL_S)

    async def _progress(self) -> tuple[int, int]:
        """The last audio entry the session's VAD worker took, and the jobs waiting on its
        pool's stream (JOBS_STREAM_MAX is its hard bound: back-pressure, not trimming)."""
        async with self.ctx.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.session_key, str(Field.VAD_SEQ))
            pipe.xlen(self.ctx.keys.asr_jobs(self.pool))
            done, jobs = await pipe.execute()
        return int(done or 0), int(jobs)

    async def _flush_locked(self) -> None:
        chunk = self._coalescer.take()
        if chunk:
            await self._xadd_audio(chunk)
