"""VAD worker: owns sessions, runs Silero VAD over their audio and cuts ASR jobs.

A worker takes a new session with XREADGROUP on the ``sessions`` stream (group ``vad``) and keeps
that entry pending while the session lives, so its pending list is its set of sessions (and a dead
worker's sessions can be reclaimed with XAUTOCLAIM). It reads the owned sessions' ``audio:{id}``
streams with one blocking XREAD, feeds each chunk to the session's :class:`Segmenter`, and XADDs a
job onto the session's pool stream ``asr:jobs:{pool}`` for every closed segment. On the session's ``audio_end`` entry it flushes,
publishes ``session_done`` with the number of segments, XACKs and XDELs the session entry and puts
a TTL on the audio stream.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import metrics
from shared.audio import SAMPLE_RATE, pcm16_to_float32
from shared.capabilities import parse_pools
from shared.keys import ASR_GROUP, EN_POOL, MULTI_POOL, VAD_GROUP, Keys
from shared.logs import clip
from shared.redis_util import (
    GroupKeeper,
    Heartbeat,
    connect,
    delivering,
    entry_data,
    is_nogroup,
    own_pending,
    reap_dead,
)
from shared.runtime import (
    TaskSet,
    install_signal_handlers,
    run_with_grace,
    run_worker,
    start_metrics_server,
)
from shared.schemas import (
    SPECULATED,
    AudioChunk,
    AudioControl,
    AudioEnd,
    SchemaError,
    SessionDone,
    SessionStart,
    VadCheckpoint,
    decode,
    decode_as,
    decode_checkpoint,
    encode,
    encode_checkpoint,
)
from shared.session_state import Field, read_bytes, write
from shared.settings import Settings
from workers.ownership import claim_orphans, hand_back, touch
from workers.segmenter import (
    Segmenter,
    SegmenterConfig,
    SegmenterState,
)
from workers.turns import TurnConfig
from workers.vad_backends import VadModel, detection_params, make_vad
from workers.vad_jobs import JobWriter
from workers.vad_session import OwnedSession

log = logging.getLogger(__name__)

ROLE = "vad"
AUDIO_READ_COUNT = 50
"""Entries per stream per XREAD (≈5 s of audio at the default coalescing)."""
AUDIO_BLOCK_MS = 50
SESSION_BLOCK_MS = 1000
DEAD_LETTER_MAXLEN = 10_000
SESSION_IDLE_S = 300.0
"""A session with no audio for this long (its gateway died without saying so) is closed."""


class VadWorker:
    def __init__(self, settings: Settings, r: aioredis.Redis, vad: VadModel) -> None:
        self.s = settings
        self.r = r
        self.reader = delivering(r)
        """For the commands that deliver sessions to this worker (XREADGROUP ``>``,
        XAUTOCLAIM): never retried (shared/redis_util.py ``delivering``)."""
        self.keys = Keys(settings.key_prefix)
        self.name = settings.consumer_name
        self.vad = vad
        self.sessions: dict[str, OwnedSession] = {}
        self.jobs = JobWriter(settings, r, self.keys)
        self._maintained_at = 0.0
        self._reaped_at = 0.0
        self._resume = True
        """Look at what Redis says this worker holds (at start, after a lost connection)."""
        # the ASR groups of the deployment's pools too: KEDA reads their lag even while a pool
        # is scaled to zero (a pool not named in ASR_POOLS gets them with its first job)
        pools = [p.name for p in parse_pools(settings.asr_pools)] or [EN_POOL, MULTI_POOL]
        self.groups = GroupKeeper(
            r,
            [(self.keys.sessions, VAD_GROUP)]
            + [
                (s, ASR_GROUP)
                for p in pools
                for s in (self.keys.asr_jobs(p), self.keys.asr_partials(p))
            ],
            f"vad worker {self.name}",
        )
        """Made at start, made again when Redis lost them (NOGROUP)."""

    def segmenter_config(self, start: SessionStart) -> SegmenterConfig:
        det = detection_params(self.s)
        return SegmenterConfig(
            sample_rate=SAMPLE_RATE,
            threshold=det.threshold,
            neg_threshold=det.neg_threshold,
            min_silence_ms=start.min_silence_ms or det.min_silence_ms,
            speech_pad_ms=self.s.vad_speech_pad_ms,
            min_speech_ms=det.min_speech_ms,
            max_segment_s=self.s.vad_max_segment_s,
            partial_first_ms=self.s.partial_first_ms if start.interim_results else 0,
            partial_interval_ms=self.s.partial_interval_ms,
            min_finalize_ms=self.s.min_finalize_ms,
            speech_pad_end_ms=None
            if self.s.vad_speech_pad_end_ms < 0
            else self.s.vad_speech_pad_end_ms,
            quiet_pad_end_ms=self.s.vad_quiet_pad_end_ms,
            # speaker labels are stateful: a speculative final that is voided would skew them
            tentative=self.s.speculative_finals and not start.diarize,
        )

    def turn_config(self, start: SessionStart) -> TurnConfig:
        smart = start.smart_endpointing
        return TurnConfig(
            smart=self.s.vad_endpointing == "smart" if smart is None else smart,
            endpoint_ms=start.min_silence_ms or detection_params(self.s).min_silence_ms,
            complete_ms=self.s.turn_complete_ms,
            short_ms=self.s.turn_short_ms,
            short_s=self.s.turn_short_s,
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self.groups.ensure()
        beat = Heartbeat(self.r, self.keys, ROLE, self.name, self.s.heartbeat_interval_s)
        tasks = TaskSet()
        tasks.spawn(beat.run(stop), "heartbeat")
        log.info("vad worker %s ready on %s", self.name, self.keys.sessions)
        try:
            while not stop.is_set():
                try:
                    if self._resume:
                        await self._resume_own()
                    await self._maintain()
                    await self._take_sessions()
                    if self.sessions:
                        await self._read_audio()
                        await self._close_idle()
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    log.warning("redis unavailable (%s); retrying", exc)
                    self._resume = True
                    await asyncio.sleep(1.0)
                except ResponseError as exc:
                    if not is_nogroup(exc):
                        raise
                    self.jobs.forget_pools()  # their groups may be gone too
                    await self.groups.recover(exc)
        finally:
            await tasks.cancel_all()
            try:
                await self._hand_back_all()
                await beat.remove()
            except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
                log.warning("could not hand sessions back (%s): they are reclaimed when idle", exc)
            await self.reader.aclose()
            log.info("vad worker %s stopped", self.name)

    async def _resume_own(self) -> None:
        """Own now the sessions that Redis says this worker holds and this process does not (a
        read whose reply was lost when Redis went down, a follow-up that failed, an earlier
        process of the same consumer name), taken over from their checkpoints, rather than
        after ``VAD_CLAIM_IDLE_MS`` by the claim round."""
        owned = {o.entry_id for o in self.sessions.values()}
        for entry_id, fields, _deliveries in await own_pending(
            self.r, self.keys.sessions, VAD_GROUP, self.name
        ):
            if entry_id in owned or len(self.sessions) >= self.s.vad_max_sessions:
                continue  # beyond our room: the claim round gives it to a peer
            if fields is None:  # deleted meanwhile: the session is gone
                await self.r.xack(self.keys.sessions, VAD_GROUP, entry_id)
                continue
            log.warning("resumed session entry %s, held by this worker unread", entry_id)
            await self._own(entry_id, fields, takeover=True)
        self._resume = False

    async def _maintain(self) -> None:
        """Every heartbeat: keep our sessions ours, and take over sessions of dead workers."""
        now = time.monotonic()
        if now - self._maintained_at < self.s.heartbeat_interval_s:
            return
        self._maintained_at = now
        owned = {o.entry_id: sid for sid, o in self.sessions.items()}
        still = await touch(self.r, self.keys, self.name, list(owned))
        for entry_id, sid in owned.items():
            if entry_id not in still:
                log.warning("session=%s was taken over by another worker; dropping it", sid)
                self.sessions.pop(sid, None)
        room = self.s.vad_max_sessions - len(self.sessions)
        if room > 0:
            for entry_id, fields in await claim_orphans(
                self.reader, self.keys, self.name, self.s.vad_claim_idle_ms, room
            ):
                await self._own(entry_id, fields, takeover=True)
        metrics.VAD_SESSIONS.set(len(self.sessions))
        await self._reap(now)

    async def _reap(self, now: float) -> None:
        """Every ``VAD_CLAIM_IDLE_MS``: remove from the group the consumers of dead workers
        (no pending entries, no heartbeat, idle that long), which would stay there forever."""
        if now - self._reaped_at < self.s.vad_claim_idle_ms / 1000:
            return
        self._reaped_at = now
        await reap_dead(
            self.r, self.keys, ROLE, self.name, self.s.heartbeat_ttl_s,
            [(self.keys.sessions, VAD_GROUP)], self.s.vad_claim_idle_ms,
        )  # fmt: skip

    async def _hand_back_all(self) -> None:
        for owned in self.sessions.values():
            await self._checkpoint(owned, force=True)
        ids = [o.entry_id for o in self.sessions.values()]
        await hand_back(self.r, self.keys, self.name, ids)
        if ids:
            log.info("handed %d sessions back", len(ids))
        self.sessions.clear()

    async def _take_sessions(self) -> None:
        if len(self.sessions) >= self.s.vad_max_sessions:
            return
        resp = await self.reader.xreadgroup(
            VAD_GROUP,
            self.name,
            {self.keys.sessions: ">"},
            count=1,
            block=None if self.sessions else SESSION_BLOCK_MS,
        )
        for _stream, entries in resp or []:
            for entry_id, fields in entries:
                await self._own(entry_id, fields)

    async def _own(
        self, entry_id: bytes, fields: dict[bytes, bytes], takeover: bool = False
    ) -> None:
        try:
            start = decode_as(entry_data(fields), SessionStart)
            await self._check_new(start, entry_id)
        except SchemaError as exc:
            log.error("bad session entry %s dropped: %s", entry_id, exc)
            await self._dead_letter(self.keys.sessions, entry_id, fields, exc)
            await self.r.xack(self.keys.sessions, VAD_GROUP, entry_id)
            await self.r.xdel(self.keys.sessions, entry_id)
            return
        stream = self.vad.stream()
        owned = OwnedSession(
            start,
            entry_id,
            Segmenter(stream, self.segmenter_config(start)),
            stream,
            turns=self.turn_config(start),
        )
        if takeover:
            await self._restore(owned)
        self.sessions[start.session_id] = owned
        metrics.VAD_SESSIONS.set(len(self.sessions))
        log.info(
            "session=%s stage=vad %s by %s from %s, jobs to pool %s",
            start.session_id, "taken over" if takeover else "owned", self.name, owned.last_id,
            owned.pool,
        )  # fmt: skip

    async def _check_new(self, start: SessionStart, entry_id: bytes) -> None:
        """A second ``session_start`` of a session (a gateway's XADD retried through a Redis
        outage lands twice; or a forged one) is refused with :class:`SchemaError`: owning it
        again would restart the session's audio from the beginning and orphan the first entry
        (pending for ever, re-owned by every claim round)."""
        sid = start.session_id
        owned = self.sessions.get(sid)
        if owned is not None and owned.entry_id != entry_id:
            raise SchemaError(f"session {clip(sid)} is already owned (by entry {owned.entry_id!r})")
        if await self.r.hexists(self.keys.session(sid), str(Field.SEGMENTS)):
            raise SchemaError(f"session {clip(sid)} has already finished")

    async def _restore(self, owned: OwnedSession) -> None:
        raw = await read_bytes(self.r, self.keys.session(owned.start.session_id), Field.VAD_CKPT)
        if not raw:
            return  # no checkpoint yet: start from the beginning of the audio stream
        try:
            ckpt = decode_checkpoint(raw)
            owned.vad.set_state(ckpt.vad_state)
        except (SchemaError, ValueError) as exc:
            log.error("session=%s bad checkpoint ignored: %s", owned.start.session_id, exc)
            return
        owned.segmenter.restore(
            SegmenterState(
                pos=ckpt.pos,
                buf_start=ckpt.buf_start,
                floor=ckpt.floor,
                next_index=ckpt.next_index,
                buf=np.frombuffer(ckpt.buf, dtype=np.float32),
                pending=np.frombuffer(ckpt.pending, dtype=np.float32),
            )
        )
        owned.last_id = ckpt.cursor.encode()

    async def _checkpoint(self, owned: OwnedSession, force: bool = False) -> None:
        """Save where we are, between utterances only, at most every interval (and right after
        an utterance closed, so that its job is not cut twice after a takeover)."""
        now = time.monotonic()
        due = (
            owned.segments_since_checkpoint
            or now - owned.checkpoint_at >= self.s.vad_checkpoint_interval_s
        )
        if not (due or force):
            return
        state = owned.segmenter.state()
        if state is None:
            return
        ckpt = VadCheckpoint(
            cursor=owned.last_id.decode(),
            pos=state.pos,
            buf_start=state.buf_start,
            floor=state.floor,
            next_index=state.next_index,
            buf=state.buf.astype(np.float32).tobytes(),
            pending=state.pending.astype(np.float32).tobytes(),
            vad_state=owned.vad.state(),
        )
        key = self.keys.session(owned.start.session_id)
        async with self.r.pipeline(transaction=False) as pipe:
            write(pipe, key, {Field.VAD_CKPT: encode_checkpoint(ckpt)}, self.s.session_ttl_s)
            # audio before the checkpoint is never needed again: this bounds the stream
            pipe.xtrim(self.keys.audio(owned.start.session_id), minid=ckpt.cursor)
            await pipe.execute()
        owned.checkpoint_at = now
        owned.segments_since_checkpoint = 0

    async def _dead_letter(
        self, stream: str, entry_id: bytes, fields: dict[bytes, bytes], exc: Exception
    ) -> None:
        metrics.VAD_BAD_MESSAGES.inc()
        await self.r.xadd(
            self.keys.vad_dead,
            {
                b"d": entry_data(fields),
                b"error": f"{type(exc).__name__}: {exc}"[:1000].encode(),
                b"stream": stream.encode(),
                b"id": entry_id,
            },
            maxlen=DEAD_LETTER_MAXLEN,
            approximate=True,
        )

    async def _read_audio(self) -> None:
        streams = {self.keys.audio(sid): s.last_id for sid, s in self.sessions.items()}
        resp = await self.r.xread(streams, count=AUDIO_READ_COUNT, block=AUDIO_BLOCK_MS)
        for stream, entries in resp or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            sid = name[len(self.keys.audio("")) :]
            owned = self.sessions.get(sid)
            if owned is None:
                continue
            done = False
            for entry_id, fields in entries:
                owned.last_id = entry_id
                done = await self._on_entry_safely(owned, entry_id, fields)
                if done:
                    break
            if not done:
                # how far we are, for the gateway's back-pressure
                await self.r.hset(self.keys.session(sid), Field.VAD_SEQ, owned.seq)
                await self._checkpoint(owned)

    async def _on_entry_safely(
        self, owned: OwnedSession, entry_id: bytes, fields: dict[bytes, bytes]
    ) -> bool:
        """:meth:`_on_entry`; an entry that cannot be processed (PCM of an odd length, say) is
        dead-lettered and skipped: it never stops the loop, which serves up to
        ``VAD_MAX_SESSIONS`` other sessions (and the next owner of this one would die the same
        way). Redis errors go up to the loop, which retries."""
        try:
            return await self._on_entry(owned, entry_id, fields)
        except (RedisConnectionError, RedisTimeoutError):
            raise
        except Exception as exc:
            owned.bad_entries += 1
            log.exception(
                "session=%s stage=vad entry %s could not be processed; dead-lettered",
                owned.start.session_id, entry_id,
            )  # fmt: skip
            await self._dead_letter(self.keys.audio(owned.start.session_id), entry_id, fields, exc)
            return False

    async def _on_entry(
        self, owned: OwnedSession, entry_id: bytes, fields: dict[bytes, bytes]
    ) -> bool:
        sid = owned.start.session_id
        try:
            msg = decode(entry_data(fields))
        except SchemaError as exc:
            log.error("session=%s bad audio entry %s skipped: %s", sid, entry_id, exc)
            await self._dead_letter(self.keys.audio(sid), entry_id, fields, exc)
            return False
        if isinstance(msg, AudioControl) and msg.kind == SPECULATED:  # an ASR worker's nudge
            await self.jobs.end_turn(owned)
            return False
        owned.last_audio_at = time.monotonic()
        if isinstance(msg, AudioChunk | AudioControl):
            if owned.seq and msg.seq <= owned.seq:
                # a write the gateway repeated through a Redis outage (it may have landed once)
                log.info("session=%s stage=vad repeated entry seq %d skipped", sid, msg.seq)
                return False
            owned.seq = msg.seq
        if isinstance(msg, AudioChunk):
            owned.last_received_at = msg.received_at
            audio = pcm16_to_float32(msg.pcm)
            fast = owned.pace.add(msg.received_at, len(audio) / SAMPLE_RATE)
            owned.segmenter.fast = fast and self.s.vad_file_mode
            metrics.VAD_AUDIO_SECONDS.inc(len(audio) / SAMPLE_RATE)
            events = await asyncio.to_thread(owned.segmenter.feed, audio)
            await self.jobs.write(owned, events)
            await self.jobs.end_turn(owned)
            return False
        if isinstance(msg, AudioControl):
            if msg.kind == "finalize":
                await self.jobs.write(owned, owned.segmenter.finalize())
            elif msg.kind == "keyterms":  # for the utterances cut from here on
                owned.start.keyterms = list(msg.keyterms or [])
            return False
        if isinstance(msg, AudioEnd):
            await self._finish(owned, msg.reason)
            return True
        # a valid message of another stream (a session_start, a job…): dead-lettered like an
        # undecodable one, so that every entry the worker does not use is accounted for
        log.error("session=%s unexpected %s on audio stream", sid, type(msg).__name__)
        unexpected = SchemaError(f"unexpected {type(msg).__name__} on an audio stream")
        await self._dead_letter(self.keys.audio(sid), entry_id, fields, unexpected)
        return False

    async def _finish(self, owned: OwnedSession, reason: str) -> None:
        sid = owned.start.session_id
        await self.jobs.write(owned, owned.segmenter.flush())
        done = SessionDone(
            session_id=sid,
            segments=owned.segmenter.segments_emitted,
            audio_seconds=round(owned.segmenter.samples_seen / SAMPLE_RATE, 3),
        )
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.publish(self.keys.results(sid), encode(done))
            pipe.xack(self.keys.sessions, VAD_GROUP, owned.entry_id)
            pipe.xdel(self.keys.sessions, owned.entry_id)
            pipe.delete(self.keys.audio(sid))  # every sample is accounted for: free it now
            key = self.keys.session(sid)
            done_fields = {Field.SEGMENTS: done.segments, Field.AUDIO_SECONDS: done.audio_seconds}
            write(pipe, key, done_fields, self.s.session_ttl_s)
            pipe.hdel(key, Field.VAD_CKPT)
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
    vad = await asyncio.to_thread(make_vad, settings)
    r = connect(settings.effective_redis_url, name=f"vad-{settings.consumer_name}")
    try:
        await run_with_grace(VadWorker(settings, r, vad).run(stop), stop, settings.shutdown_grace_s)
    finally:
        await r.aclose()


def main(settings: Settings | None = None) -> None:
    run_worker("vad-worker", settings or Settings(), amain)


if __name__ == "__main__":
    main()
