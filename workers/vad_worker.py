"""VAD worker: owns sessions, runs Silero VAD over their audio and cuts ASR jobs.

A worker takes a new session with XREADGROUP on the ``sessions`` stream (group ``vad``) and keeps
that entry pending while the session lives, so its pending list is its set of sessions (and a dead
worker's sessions can be reclaimed with XAUTOCLAIM). It reads the owned sessions' ``audio:{id}``
streams with one blocking XREAD, feeds each chunk to the session's :class:`Segmenter`, and XADDs a
job onto ``asr:jobs`` for every closed segment. On the session's ``audio_end`` entry it flushes,
publishes ``session_done`` with the number of segments, XACKs and XDELs the session entry and puts
a TTL on the audio stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import metrics
from shared.audio import SAMPLE_RATE, float32_to_pcm16, pcm16_to_float32
from shared.keys import VAD_GROUP, Keys
from shared.redis_util import Heartbeat, connect, ensure_group, entry, entry_data
from shared.schemas import (
    AsrJob,
    AudioChunk,
    AudioEnd,
    SchemaError,
    SessionDone,
    SessionStart,
    decode,
    decode_as,
    encode,
)
from shared.settings import Settings
from workers.runtime import TaskSet, install_signal_handlers, start_metrics_server
from workers.segmenter import Segment, Segmenter, SegmenterConfig
from workers.silero import SileroVad

log = logging.getLogger(__name__)

ROLE = "vad"
AUDIO_READ_COUNT = 50
"""Entries per stream per XREAD (≈5 s of audio at the default coalescing)."""
AUDIO_BLOCK_MS = 50
SESSION_BLOCK_MS = 1000
SESSION_IDLE_S = 300.0
"""A session with no audio for this long (its gateway died without saying so) is closed."""


@dataclass
class OwnedSession:
    start: SessionStart
    entry_id: bytes
    segmenter: Segmenter
    last_id: bytes = b"0-0"
    last_audio_at: float = field(default_factory=time.monotonic)
    last_received_at: float = 0.0


class VadWorker:
    def __init__(self, settings: Settings, r: aioredis.Redis, vad: SileroVad) -> None:
        self.s = settings
        self.r = r
        self.keys = Keys(settings.key_prefix)
        self.name = settings.consumer_name
        self.vad = vad
        self.sessions: dict[str, OwnedSession] = {}

    def segmenter_config(self, start: SessionStart) -> SegmenterConfig:
        return SegmenterConfig(
            sample_rate=SAMPLE_RATE,
            threshold=self.s.vad_threshold,
            min_silence_ms=start.min_silence_ms or self.s.vad_min_silence_ms,
            speech_pad_ms=self.s.vad_speech_pad_ms,
            min_speech_ms=self.s.vad_min_speech_ms,
            max_segment_s=self.s.vad_max_segment_s,
        )

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_group(self.r, self.keys.sessions, VAD_GROUP)
        beat = Heartbeat(self.r, self.keys, ROLE, self.name, self.s.heartbeat_interval_s)
        tasks = TaskSet()
        tasks.spawn(beat.run(stop), "heartbeat")
        log.info("vad worker %s ready on %s", self.name, self.keys.sessions)
        try:
            while not stop.is_set():
                try:
                    await self._take_sessions()
                    if self.sessions:
                        await self._read_audio()
                        await self._close_idle()
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    log.warning("redis unavailable (%s); retrying", exc)
                    await asyncio.sleep(1.0)
        finally:
            # Owned sessions stay pending on the sessions stream: another worker reclaims them.
            await tasks.cancel_all()
            try:
                await beat.remove()
            except (RedisConnectionError, RedisTimeoutError):
                pass
            log.info("vad worker %s stopped with %d sessions", self.name, len(self.sessions))

    async def _take_sessions(self) -> None:
        if len(self.sessions) >= self.s.vad_max_sessions:
            return
        resp = await self.r.xreadgroup(
            VAD_GROUP,
            self.name,
            {self.keys.sessions: ">"},
            count=1,
            block=None if self.sessions else SESSION_BLOCK_MS,
        )
        for _stream, entries in resp or []:
            for entry_id, fields in entries:
                await self._own(entry_id, fields)

    async def _own(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            start = decode_as(entry_data(fields), SessionStart)
        except SchemaError as exc:
            metrics.VAD_BAD_MESSAGES.inc()
            log.error("bad session entry %s dropped: %s", entry_id, exc)
            await self.r.xack(self.keys.sessions, VAD_GROUP, entry_id)
            await self.r.xdel(self.keys.sessions, entry_id)
            return
        seg = Segmenter(self.vad.stream(), self.segmenter_config(start))
        self.sessions[start.session_id] = OwnedSession(start, entry_id, seg)
        metrics.VAD_SESSIONS.set(len(self.sessions))
        log.info("session=%s stage=vad owned by %s", start.session_id, self.name)

    async def _read_audio(self) -> None:
        streams = {self.keys.audio(sid): s.last_id for sid, s in self.sessions.items()}
        resp = await self.r.xread(streams, count=AUDIO_READ_COUNT, block=AUDIO_BLOCK_MS)
        for stream, entries in resp or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            sid = name[len(self.keys.audio("")) :]
            owned = self.sessions.get(sid)
            if owned is None:
                continue
            for entry_id, fields in entries:
                owned.last_id = entry_id
                done = await self._on_entry(owned, entry_id, fields)
                if done:
                    break

    async def _on_entry(
        self, owned: OwnedSession, entry_id: bytes, fields: dict[bytes, bytes]
    ) -> bool:
        sid = owned.start.session_id
        try:
            msg = decode(entry_data(fields))
        except SchemaError as exc:
            metrics.VAD_BAD_MESSAGES.inc()
            log.error("session=%s bad audio entry %s skipped: %s", sid, entry_id, exc)
            return False
        owned.last_audio_at = time.monotonic()
        if isinstance(msg, AudioChunk):
            owned.last_received_at = msg.received_at
            audio = pcm16_to_float32(msg.pcm)
            metrics.VAD_AUDIO_SECONDS.inc(len(audio) / SAMPLE_RATE)
            segments = await asyncio.to_thread(owned.segmenter.feed, audio)
            await self._enqueue(owned, segments)
            return False
        if isinstance(msg, AudioEnd):
            await self._finish(owned, msg.reason)
            return True
        metrics.VAD_BAD_MESSAGES.inc()
        log.error("session=%s unexpected %s on audio stream", sid, type(msg).__name__)
        return False

    async def _enqueue(self, owned: OwnedSession, segments: list[Segment]) -> None:
        for seg in segments:
            start, end = seg.seconds(SAMPLE_RATE)
            job = AsrJob(
                session_id=owned.start.session_id,
                segment=seg.index,
                start=round(start, 3),
                end=round(end, 3),
                pcm=float32_to_pcm16(seg.audio),
                language=owned.start.language,
                enqueued_at=time.time(),
                speech_ended_at=owned.last_received_at,
            )
            await self.r.xadd(
                self.keys.asr_jobs,
                entry(encode(job)),
                maxlen=self.s.jobs_stream_maxlen,
                approximate=True,
            )
            metrics.VAD_SEGMENTS.labels(seg.reason).inc()
            log.info(
                "session=%s segment=%d stage=vad start=%.2f end=%.2f reason=%s",
                job.session_id, seg.index, start, end, seg.reason,
            )  # fmt: skip

    async def _finish(self, owned: OwnedSession, reason: str) -> None:
        sid = owned.start.session_id
        await self._enqueue(owned, owned.segmenter.flush())
        done = SessionDone(
            session_id=sid,
            segments=owned.segmenter.segments_emitted,
            audio_seconds=round(owned.segmenter.samples_seen / SAMPLE_RATE, 3),
        )
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.publish(self.keys.results(sid), encode(done))
            pipe.xack(self.keys.sessions, VAD_GROUP, owned.entry_id)
            pipe.xdel(self.keys.sessions, owned.entry_id)
            pipe.expire(self.keys.audio(sid), self.s.session_ttl_s)
            await pipe.execute()
        del self.sessions[sid]
        metrics.VAD_SESSIONS.set(len(self.sessions))
        log.info(
            "session=%s stage=vad done (%s): %d segments, %.1fs audio",
            sid, reason, done.segments, done.audio_seconds,
        )  # fmt: skip

    async def _close_idle(self) -> None:
        now = time.monotonic()
        for owned in list(self.sessions.values()):
            if now - owned.last_audio_at > SESSION_IDLE_S:
                log.warning(
                    "session=%s idle for %.0fs: closing", owned.start.session_id, SESSION_IDLE_S
                )
                await self._finish(owned, "idle")


async def amain(settings: Settings) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    start_metrics_server(settings.metrics_port)
    vad = SileroVad()
    r = connect(settings.effective_redis_url, name=f"vad-{settings.consumer_name}")
    try:
        await VadWorker(settings, r, vad).run(stop)
    finally:
        await r.aclose()


def main(settings: Settings | None = None) -> None:
    from shared.logs import configure

    settings = settings or Settings()
    configure(settings.log_level)
    asyncio.run(amain(settings))


if __name__ == "__main__":
    main()
