"""What the VAD worker writes for the segmenter's events: final jobs on ``asr:jobs:{pool}``,
partial jobs on ``asr:partials:{pool}`` (the session's model pool, chosen by the gateway),
speculative finals (workers/speculation.py) and ``vad_events``.

The worker (vad_worker.py) owns sessions and feeds their audio to each session's
:class:`~workers.segmenter.Segmenter`; :meth:`JobWriter.write` turns what comes out into Redis
writes, in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared import metrics, tracing
from shared.audio import SAMPLE_RATE, float32_to_pcm16
from shared.capabilities import read_pool
from shared.keys import ASR_GROUP, Keys
from shared.redis_util import ensure_group, entry, ride_through
from shared.schemas import (
    AsrJob,
    SchemaError,
    Transcript,
    TurnEvent,
    VadEvent,
    decode_as,
    encode,
)
from shared.session_state import Field, write
from shared.settings import Settings
from workers.continuation import Previous, context_for_next, tail_samples
from workers.segmenter import Event, Partial, Segment, SpeechStart, Tentative, TentativeVoid
from workers.speculation import Speculation, should_speculate
from workers.turns import end_of_turn
from workers.vad_session import OwnedSession

log = logging.getLogger(__name__)


class JobWriter:
    def __init__(self, settings: Settings, r: aioredis.Redis, keys: Keys) -> None:
        self.s = settings
        self.r = r
        self.keys = keys
        self.spec = Speculation(r, keys, settings.transcript_stream_maxlen, settings.session_ttl_s)
        self._ready: set[str] = set()
        """Pools whose job and partial streams have the ``asr`` group (made once per process)."""
        self._continues: dict[str, tuple[float, bool]] = {}
        """Per pool: when its workers' announcements were last read, and whether one of them
        decodes continuation contexts."""

    async def ensure_pool(self, pool: str) -> None:
        """Create the pool's streams and their ``asr`` group, so that KEDA reads their lag even
        while the pool has no worker (scale from zero)."""
        if pool in self._ready:
            return
        await ensure_group(self.r, self.keys.asr_jobs(pool), ASR_GROUP)
        await ensure_group(self.r, self.keys.asr_partials(pool), ASR_GROUP)
        self._ready.add(pool)

    def forget_pools(self) -> None:
        """Redis lost groups (NOGROUP): make each pool's again with its next job."""
        self._ready.clear()

    async def write(
        self, owned: OwnedSession, events: list[Event], stored: Transcript | None = None
    ) -> None:
        """Write what a segmenter emitted; ``stored``: the speculative final of the segment
        being committed, as the end-of-turn rule just read it (not read again)."""
        if events:
            await self.ensure_pool(owned.pool)
        for event in events:
            if isinstance(event, Segment):
                await self._final(owned, event, stored)
            elif isinstance(event, Partial):
                await self._partial_job(owned, event)
            elif isinstance(event, Tentative):
                await self._speculate(owned, event)
            elif isinstance(event, TentativeVoid):
                if owned.speculated.pop(event.index, None) == event.rev:
                    await self._void(owned, event)
            elif isinstance(event, SpeechStart) and owned.start.vad_events:
                await self._vad_event(owned, "speech_started", event.index, event.start)

    async def end_turn(self, owned: OwnedSession) -> None:
        """Smart endpointing: end the utterance now, mid-pause, if its stored speculative final
        says the turn is over (workers/turns.py); the commit publishes that final at once."""
        seg = owned.segmenter
        live = seg.live_tentative
        pause = seg.pause_ms
        if live is None or pause < owned.turns.earliest_ms or pause >= owned.turns.endpoint_ms:
            return
        index, rev = live
        if owned.speculated.get(index) != rev:
            return  # not speculated (a final was waiting): nothing to commit early
        payload = await self.spec.stored_text(owned.start.session_id, index, rev)
        if payload is None:
            return  # not transcribed yet: the next audio looks again
        try:
            stored = decode_as(payload, Transcript)
        except SchemaError:
            return
        if end_of_turn(stored.text, pause, seg.speech_s, owned.turns):
            metrics.VAD_SPECULATIVE.labels("early").inc()
            await self.write(owned, seg.end_turn("turn"), stored)

    async def _void(self, owned: OwnedSession, event: TentativeVoid) -> None:
        sid = owned.start.session_id
        resumed = b""
        if owned.start.eager_eot:
            resumed = encode(
                TurnEvent(session_id=sid, kind="turn_resumed", segment=event.index, rev=event.rev)
            )
        await self.spec.void(sid, event.index, event.rev, resumed)
        metrics.VAD_SPECULATIVE.labels("void").inc()

    def _job(self, owned: OwnedSession, index: int, start: int, end: int, pcm: bytes) -> AsrJob:
        return AsrJob(
            session_id=owned.start.session_id,
            segment=index,
            start=round(start / SAMPLE_RATE, 3),
            end=round(end / SAMPLE_RATE, 3),
            pcm=pcm,
            source_rate=owned.start.source_rate,
            language=owned.start.language,
            enqueued_at=time.time(),
            speech_ended_at=owned.last_received_at,
            diarize=owned.start.diarize,
            task=owned.start.task,
            keyterms=owned.start.keyterms,
        )

    async def _speculate(self, owned: OwnedSession, t: Tentative) -> None:
        """Transcribe the segment now if a worker is free; the endpoint will commit it."""
        if not await should_speculate(self.r, self.keys, owned.pool):
            metrics.VAD_SPECULATIVE.labels("skipped").inc()
            return
        job = self._job(owned, t.index, t.start, t.end, float32_to_pcm16(t.audio))
        job.rev, job.speculative, job.eager = t.rev, True, owned.start.eager_eot
        job.turn = owned.turns.smart
        self._continuation(owned, job)
        # never trimmed: its entries are work (bounded by the gateway's JOBS_STREAM_MAX)
        await self.r.xadd(self.keys.asr_jobs(owned.pool), entry(encode(job)))
        owned.speculated[t.index] = t.rev
        metrics.VAD_SPECULATIVE.labels("sent").inc()

    async def _final(
        self, owned: OwnedSession, seg: Segment, stored: Transcript | None = None
    ) -> None:
        sid = owned.start.session_id
        rev = owned.speculated.pop(seg.index, None)
        committed = False
        if rev is not None and rev == seg.tentative_rev:
            previous = await self._previous(owned, seg, rev, stored)  # the publish clears it
            # publishes now, or when transcribed; makes the segment's partials stale at once
            await self._ride(lambda: self.spec.commit(sid, seg.index, rev), sid)
            metrics.VAD_SPECULATIVE.labels("committed").inc()
            committed = True
            owned.previous = previous
        else:
            await self._final_job(owned, seg)
            owned.previous = None  # its final is still to come: the next segment goes alone
        owned.segments_since_checkpoint += 1
        metrics.VAD_SEGMENTS.labels(seg.reason).inc()
        log.info(
            "session=%s segment=%d stage=vad start=%.2f end=%.2f reason=%s speculative=%s",
            sid, seg.index, seg.start / SAMPLE_RATE, seg.end / SAMPLE_RATE, seg.reason, committed,
        )  # fmt: skip
        if owned.start.vad_events and seg.reason != "max_length":
            await self._vad_event(owned, "utterance_end", seg.index, seg.end)

    def _continuation(self, owned: OwnedSession, job: AsrJob) -> None:
        """Put the previous segment on ``job`` if ``job`` continues its turn."""
        if owned.start.keyterms:  # faster-whisper drops hotwords with a prefix: key terms win
            return
        context = context_for_next(owned.previous, job.segment, job.start)
        if context is not None:
            job.context_pcm, job.context_start = context.pcm, context.start_s
            job.context_words = context.words

    async def continues(self, pool: str) -> bool:
        """Whether the next segments of ``pool``'s sessions carry a continuation context:
        ``ASR_CONTINUATION`` where set, else whether a live worker of the pool announces that
        it decodes them (on for CUDA, off on CPU: workers/asr.py ``resolve_auto``), read again
        once a heartbeat interval. A CPU pool's jobs so carry no audio they would drop, and a
        commit reads no stored words for them."""
        if self.s.asr_continuation is not None:
            return self.s.asr_continuation
        now = time.monotonic()
        read_at, known = self._continues.get(pool, (float("-inf"), False))
        if now - read_at < self.s.heartbeat_interval_s:
            return known
        try:
            live = await read_pool(self.r, self.keys, self.s.heartbeat_ttl_s)
        except RedisError:
            return known  # the commit goes on; the next look reads again
        known = live.continues(pool)
        self._continues[pool] = (now, known)
        return known

    async def _previous(
        self, owned: OwnedSession, seg: Segment, rev: int, stored: Transcript | None = None
    ) -> Previous | None:
        """The committed segment with its speculative final's words (``stored``, or read), if
        that is stored yet and the pool decodes continuations (otherwise the next segment is
        decoded alone)."""
        if not await self.continues(owned.pool):
            return None
        result = stored if stored is not None and stored.segment == seg.index else None
        try:
            if result is None:
                payload = await self.spec.stored_text(owned.start.session_id, seg.index, rev)
                result = decode_as(payload, Transcript) if payload is not None else None
        except (SchemaError, RedisError):  # the commit must go on: the next segment goes alone
            return None
        if result is None or result.error is not None or not result.words:
            return None
        return Previous(
            index=seg.index,
            end_s=round(seg.end / SAMPLE_RATE, 3),
            tail=float32_to_pcm16(seg.audio[-tail_samples() :]),
            words=tuple(result.words),
        )

    async def _final_job(self, owned: OwnedSession, seg: Segment) -> None:
        job = self._job(owned, seg.index, seg.start, seg.end, float32_to_pcm16(seg.audio))
        job.reason = seg.reason
        self._continuation(owned, job)
        # the utterance's trace starts here: from its last audio's arrival to its job (endpointing)
        job.traceparent = tracing.record(
            "vad.segment", "", owned.last_received_at or job.enqueued_at,
            {"session_id": job.session_id, "segment": job.segment, "reason": seg.reason,
             "audio_s": round(job.end - job.start, 3)},
        )  # fmt: skip
        sid = owned.start.session_id

        async def put() -> None:
            async with self.r.pipeline(transaction=False) as pipe:
                pipe.xadd(self.keys.asr_jobs(owned.pool), entry(encode(job)))  # never trimmed
                if owned.start.interim_results:  # makes this segment's partial jobs stale
                    write(
                        pipe,
                        self.keys.session(sid),
                        {Field.FINAL_SEG: seg.index},
                        self.s.session_ttl_s,
                    )
                await pipe.execute()

        await self._ride(put, sid)

    async def _ride(self, op: Callable[[], Awaitable[object]], sid: str) -> None:
        """A final's write, ridden through a Redis outage (``REDIS_OUTAGE_TOLERANCE_S`` on top
        of redis-py's retries): the utterance is cut already, so a failed write would lose it.
        A repeated write is harmless: the gateway keeps one final per segment."""
        await ride_through(op, tolerance_s=self.s.redis_outage_tolerance_s, what=f"session={sid}")

    async def _partial_job(self, owned: OwnedSession, part: Partial) -> None:
        job = self._job(owned, part.index, part.start, part.end, float32_to_pcm16(part.audio))
        job.final, job.rev = False, part.rev
        sid = owned.start.session_id
        async with self.r.pipeline(transaction=False) as pipe:
            newest = {Field.PARTIAL_SEG: part.index, Field.PARTIAL_REV: part.rev}
            write(pipe, self.keys.session(sid), newest, self.s.session_ttl_s)
            pipe.xadd(
                self.keys.asr_partials(owned.pool),
                entry(encode(job)),
                maxlen=self.s.partials_stream_maxlen,
                approximate=True,
            )
            await pipe.execute()
        metrics.VAD_PARTIALS.inc()

    async def _vad_event(self, owned: OwnedSession, kind: str, index: int, sample: int) -> None:
        sid = owned.start.session_id
        event = VadEvent(
            session_id=sid, kind=kind, segment=index, time=round(sample / SAMPLE_RATE, 3)
        )
        await self.r.publish(self.keys.results(sid), encode(event))
