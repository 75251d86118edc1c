"""ASR worker: consumes ``asr:jobs`` through the ``asr`` consumer group and publishes transcripts.

The loop: XREADGROUP one job, transcribe it in a thread (the model is loaded once), then in one
MULTI: PUBLISH on ``results:{session}``, XADD to ``transcript:{session}`` (bounded, with a TTL), XACK.
Pending jobs idle longer than ``ASR_CLAIM_IDLE_MS`` (a dead worker's) are reclaimed with
XAUTOCLAIM; a job delivered ``ASR_MAX_DELIVERIES`` times, or one that cannot be decoded, goes to
the dead-letter stream ``asr:dead`` and an empty, error-flagged result keeps the session's ordering
going. One bad job never stops the loop. Partial jobs (``asr:partials``) come after finals; with
``ASR_PARTIALS_PREEMPT`` they are decoded in a child process that is stopped while finals run
(workers/partial_decoder.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import metrics
from shared.keys import ASR_GROUP, Keys
from shared.redis_util import Heartbeat, connect, ensure_group, entry, entry_data
from shared.runtime import TaskSet, install_signal_handlers, run_with_grace, start_metrics_server
from shared.schemas import AsrJob, SchemaError, Transcript, decode_as, encode
from shared.settings import Settings
from workers.asr import (
    DecodeOptions,
    Transcriber,
    load_model,
    resolve_auto,
)
from workers.batching import BatchTranscriber
from workers.diarize import SpeakerLabeler
from workers.partial_decoder import PartialDecoder
from workers.speculation import DONE, PUBLISHED, SET_PROMPT_LUA, VOID, WAITING, Speculation

log = logging.getLogger(__name__)

ROLE = "asr"
READ_BLOCK_MS = 1000
YIELD_POLL_MS = 50
"""How often a yielding partial worker (``ASR_PARTIALS_YIELD``) looks again while finals run."""
YIELD_MAX_S = 10.0
"""A final pending longer than this is not being decoded (no CPU decode of ≤ 30 s takes so long)
but is a dead worker's, waiting to be reclaimed."""
YIELD_SCAN = 32
"""Pending final entries looked at (the oldest first) per check."""
DEAD_LETTER_MAXLEN = 10_000

_SET_PROMPT = (
    SET_PROMPT_LUA
    + """
set_prompt(KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
)


SPEC_OUTCOMES = {PUBLISHED: "published", WAITING: "stored", DONE: "late", VOID: "void"}


def spec_rev(job: AsrJob) -> int | None:
    """The revision to store a speculative final under; ``None`` for an ordinary job."""
    return job.rev if job.speculative else None


def queue_wait(job: AsrJob) -> float:
    """Seconds the job waited on the stream (0 if it does not say when it was queued)."""
    return max(0.0, time.time() - job.enqueued_at) if job.enqueued_at else 0.0


def final_in_progress(pending: list[dict[str, Any]]) -> bool:
    """A final job was delivered lately and is not acknowledged yet: some worker is decoding it.
    (A dead worker's job stays pending until reclaimed: it stops counting after ``YIELD_MAX_S``,
    so it cannot hold partials back.)"""
    return any(p["time_since_delivered"] < YIELD_MAX_S * 1000 for p in pending)


class AsrWorker:
    def __init__(
        self,
        settings: Settings,
        r: aioredis.Redis,
        transcriber: Transcriber,
        batcher: BatchTranscriber | None = None,
        partial_decoder: PartialDecoder | None = None,
    ) -> None:
        self.s = settings
        self.r = r
        self.keys = Keys(settings.key_prefix)
        self.name = settings.consumer_name
        self.transcriber = transcriber
        self.batcher = batcher if settings.asr_batch_size > 1 else None
        self.partial_decoder = partial_decoder
        self._set_prompt = r.register_script(_SET_PROMPT)
        self._last_claim = 0.0
        self.speakers = SpeakerLabeler(settings, r, self.keys)
        self.spec = Speculation(
            r, self.keys, settings.transcript_stream_maxlen, settings.session_ttl_s
        )

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_group(self.r, self.keys.asr_jobs, ASR_GROUP)
        await ensure_group(self.r, self.keys.asr_partials, ASR_GROUP)
        beat = Heartbeat(self.r, self.keys, ROLE, self.name, self.s.heartbeat_interval_s)
        tasks = TaskSet()
        tasks.spawn(beat.run(stop), "heartbeat")
        log.info("asr worker %s ready on %s", self.name, self.keys.asr_jobs)
        try:
            while not stop.is_set():
                try:
                    await self._claim_stale()
                    await self._read_once()
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    log.warning("redis unavailable (%s); retrying", exc)
                    await asyncio.sleep(1.0)
        finally:
            await tasks.cancel_all()
            try:
                await beat.remove()
                await self._leave_groups()
            except (RedisConnectionError, RedisTimeoutError):
                pass
            log.info("asr worker %s stopped", self.name)

    async def _leave_groups(self) -> None:
        """Remove our consumer from the groups, unless it still holds pending entries (they
        would be lost from the pending list; left there, they are reclaimed)."""
        for stream in (self.keys.asr_jobs, self.keys.asr_partials):
            left = await self.r.xpending_range(
                stream, ASR_GROUP, min="-", max="+", count=1, consumername=self.name
            )
            if not left:
                await self.r.xgroup_delconsumer(stream, ASR_GROUP, self.name)

    async def _read_once(self) -> None:
        """Finals first: a partial is taken only when no final job is waiting (and never by a
        finals-only worker, ``ASR_PARTIALS=false``). With ``ASR_FINALS_POLL_MS`` a worker that
        serves partials does not wait on the final jobs: Redis hands a new final to a worker
        blocked on its stream, so it goes to an idle finals-only worker, and this one (whose
        ``ASR_NICE`` makes it slow next to any other work) takes only finals left waiting."""
        jobs, partials = self.keys.asr_jobs, self.keys.asr_partials
        pending: list[list[dict[str, Any]]] = []
        if not self.s.asr_partials:
            resp = await self.r.xreadgroup(
                ASR_GROUP, self.name, {jobs: ">"}, count=1, block=READ_BLOCK_MS
            )
        else:  # a waiting final, and whether one is being decoded: one round trip
            async with self.r.pipeline(transaction=False) as pipe:
                pipe.xreadgroup(ASR_GROUP, self.name, {jobs: ">"}, count=1)
                if self.s.asr_partials_yield:  # the oldest pending finals
                    pipe.xpending_range(jobs, ASR_GROUP, min="-", max="+", count=YIELD_SCAN)
                resp, *pending = await pipe.execute()
        if not resp and self.s.asr_partials:
            poll = self.s.asr_finals_poll_ms
            if pending and final_in_progress(pending[0]):
                await asyncio.sleep((poll or YIELD_POLL_MS) / 1000)
                return
            resp = await self.r.xreadgroup(
                ASR_GROUP,
                self.name,
                {partials: ">"} if poll else {jobs: ">", partials: ">"},
                count=1,
                block=poll or READ_BLOCK_MS,
            )
        finals: list[tuple[bytes, dict[bytes, bytes]]] = []
        interim: list[tuple[bytes, dict[bytes, bytes]]] = []
        for stream, entries in resp or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            (finals if name == jobs else interim).extend(entries)
        if finals and self.batcher is not None:
            more = await self.r.xreadgroup(
                ASR_GROUP, self.name, {jobs: ">"}, count=self.s.asr_batch_size - 1
            )
            finals += [e for _stream, entries in more or [] for e in entries]
        if len(finals) > 1:
            await self.handle_batch(finals)
        else:
            for entry_id, fields in finals:
                await self.handle_safely(entry_id, fields, deliveries=1)
        for entry_id, fields in interim:
            await self.handle_partial(entry_id, fields)

    async def _final_in_progress(self) -> bool:
        """Whether the partial decoder must hold (``ASR_PARTIALS_PREEMPT``)."""
        pending = await self.r.xpending_range(
            self.keys.asr_jobs, ASR_GROUP, min="-", max="+", count=YIELD_SCAN
        )
        return final_in_progress(pending)

    async def _yield_to_finals(self) -> None:
        """Before a partial starts: wait while a final is being decoded (it may have arrived
        in the instant between this worker's check and its read of the partial), decoding a
        final that waits meanwhile."""
        while await self._final_in_progress():
            await self._take_waiting_final()
            await asyncio.sleep(YIELD_POLL_MS / 1000)

    async def _take_waiting_final(self) -> None:
        """While this worker's partial is stopped: decode a final that waits (every finals-only
        worker is busy), as this worker would between partials (``ASR_FINALS_POLL_MS``)."""
        if not self.s.asr_finals_poll_ms:
            return
        resp = await self.r.xreadgroup(ASR_GROUP, self.name, {self.keys.asr_jobs: ">"}, count=1)
        for _stream, entries in resp or []:
            for entry_id, fields in entries:
                await self.handle_safely(entry_id, fields, deliveries=1)

    async def handle_batch(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Final jobs waiting together, from any sessions, decoded as batches (one per language);
        anything that cannot be batched, or a batch that fails, goes through :meth:`handle` one
        by one (with its retry and dead-letter rules)."""
        assert self.batcher is not None
        groups: dict[str | None, list[tuple[bytes, AsrJob]]] = {}
        singles: list[tuple[bytes, dict[bytes, bytes]]] = []
        for entry_id, fields in entries:
            try:
                job = decode_as(entry_data(fields), AsrJob)
            except SchemaError:
                singles.append((entry_id, fields))
                continue
            if self.batcher.can_batch(job):
                groups.setdefault(job.language, []).append((entry_id, job))
            else:
                singles.append((entry_id, fields))
        for group in groups.values():
            jobs = [j for _i, j in group]
            prompts = [
                await self._prompt(j) if self.s.asr_condition_on_previous else None for j in jobs
            ]
            try:
                results = await asyncio.to_thread(self.batcher.transcribe, jobs, prompts)
            except Exception:
                log.exception("batch of %d failed; taking its jobs one by one", len(jobs))
                singles += [(i, entry(encode(j))) for i, j in group]
                continue
            metrics.ASR_BATCH_SIZE.observe(len(jobs))
            for (entry_id, job), prompt, result in zip(group, prompts, results, strict=True):
                result = await asyncio.to_thread(self.transcriber.recover, job, prompt, result)
                await self._finish(entry_id, job, result, queue_wait(job))
            log.info("stage=asr batch of %d in %.2fs", len(jobs), results[0].processing_time)
        for entry_id, fields in singles:
            await self.handle_safely(entry_id, fields, deliveries=1)

    async def handle_partial(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        """Transcribe a partial job unless it is stale; never retried, never dead-lettered."""
        try:
            job = decode_as(entry_data(fields), AsrJob)
            if self.s.asr_partials_yield:
                await self._yield_to_finals()
            if await self._is_stale(job):
                metrics.ASR_PARTIALS.labels("stale").inc()
                return
            prompt = await self._prompt(job) if self.s.asr_condition_on_previous else None
            beam = self.s.asr_partial_beam_size
            if self.partial_decoder is not None:  # stopped while a final is decoded
                result = await self.partial_decoder.transcribe(
                    job, prompt, beam, self._final_in_progress, self._take_waiting_final
                )
            else:
                result = await asyncio.to_thread(self.transcriber.transcribe, job, prompt, beam)
            if await self._is_stale(job, final_only=True):
                metrics.ASR_PARTIALS.labels("stale").inc()
                return
            await self.r.publish(self.keys.results(job.session_id), encode(result))
            metrics.ASR_PARTIALS.labels("ok").inc()
        except (RedisConnectionError, RedisTimeoutError):
            raise
        except Exception:
            metrics.ASR_PARTIALS.labels("error").inc()
            log.exception("partial %s failed; dropped", entry_id)
        finally:
            await self.r.xack(self.keys.asr_partials, ASR_GROUP, entry_id)
            await self.r.xdel(self.keys.asr_partials, entry_id)

    async def _is_stale(self, job: AsrJob, final_only: bool = False) -> bool:
        """Superseded by the segment's final, or (unless ``final_only``) by a newer partial."""
        final_seg, partial_seg, partial_rev = await self.r.hmget(
            self.keys.session(job.session_id), ["final_seg", "partial_seg", "partial_rev"]
        )
        if final_seg is not None and int(final_seg) >= job.segment:
            return True
        if final_only or partial_seg is None or partial_rev is None:
            return False
        newer = (int(partial_seg), int(partial_rev)) > (job.segment, job.rev)
        return bool(newer)

    async def _claim_stale(self) -> None:
        now = time.monotonic()
        if now - self._last_claim < self.s.asr_claim_idle_ms / 2000:
            return
        self._last_claim = now
        cursor: bytes | str = "0-0"
        while True:
            cursor, claimed, _deleted = await self.r.xautoclaim(
                self.keys.asr_jobs, ASR_GROUP, self.name, self.s.asr_claim_idle_ms, cursor, count=10
            )
            for entry_id, fields in claimed:
                info = await self.r.xpending_range(
                    self.keys.asr_jobs, ASR_GROUP, min=entry_id, max=entry_id, count=1
                )
                deliveries = int(info[0]["times_delivered"]) if info else 1
                log.warning("reclaimed job %s (delivery %d)", entry_id, deliveries)
                await self.handle_safely(entry_id, fields, deliveries=deliveries)
            if cursor in (b"0-0", "0-0"):
                return

    async def handle_safely(
        self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int
    ) -> None:
        """:meth:`handle`, with any unexpected error logged and the entry left pending (it is
        reclaimed, and dead-lettered after ``ASR_MAX_DELIVERIES``): one job never kills the loop."""
        try:
            await self.handle(entry_id, fields, deliveries)
        except (RedisConnectionError, RedisTimeoutError):
            raise
        except Exception:
            metrics.ASR_JOBS.labels("error").inc()
            log.exception("job %s: unexpected error; left pending for a retry", entry_id)

    async def handle(self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> None:
        raw = entry_data(fields)
        try:
            job = decode_as(raw, AsrJob)
        except SchemaError as exc:
            log.error("undecodable job %s: %s", entry_id, exc)
            await self._dead_letter(entry_id, raw, f"schema: {exc}", None)
            return
        if deliveries > self.s.asr_max_deliveries:
            await self._dead_letter(entry_id, raw, f"delivered {deliveries} times", job)
            return
        if job.speculative and not await self.spec.wanted(job.session_id, job.segment, job.rev):
            metrics.ASR_SPECULATIVE.labels("stale").inc()
            await self._ack(entry_id)
            return
        waited = queue_wait(job)
        prompt = await self._prompt(job) if self.s.asr_condition_on_previous else None
        try:
            result = await asyncio.to_thread(self.transcriber.transcribe, job, prompt)
        except Exception as exc:
            log.exception(
                "job %s (session %s segment %d) failed on delivery %d",
                entry_id, job.session_id, job.segment, deliveries,
            )  # fmt: skip
            if deliveries >= self.s.asr_max_deliveries:
                await self._dead_letter(entry_id, raw, f"{type(exc).__name__}: {exc}", job)
            else:
                metrics.ASR_JOBS.labels("retry").inc()
            return  # left pending: reclaimed after ASR_CLAIM_IDLE_MS
        await self._finish(entry_id, job, result, waited)
        metrics.ASR_PROCESSING.observe(result.processing_time)
        if job.end > job.start:
            metrics.ASR_RTF.observe(result.processing_time / (job.end - job.start))
        log.info(
            "session=%s segment=%d stage=asr audio_s=%.2f latency_ms=%d queue_ms=%d text=%r",
            job.session_id, job.segment, job.end - job.start,
            result.processing_time * 1000, waited * 1000, result.text[:60],
        )  # fmt: skip

    async def _finish(
        self, entry_id: bytes, job: AsrJob, result: Transcript, waited: float
    ) -> None:
        """A final is done: label its speaker, publish, store and ack it (never half-done)."""
        result.queue_time = round(waited, 4)
        await self.speakers.label(job, result)
        await asyncio.shield(self._publish_and_ack(entry_id, result, spec_rev(job)))
        metrics.ASR_JOBS.labels("ok").inc()
        metrics.ASR_QUEUE_WAIT.observe(waited)

    async def _prompt(self, job: AsrJob) -> str | None:
        value = await self.r.hget(self.keys.session(job.session_id), "prompt")
        return value.decode("utf-8", "replace") if value else None

    async def _ack(self, entry_id: bytes) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.asr_jobs, ASR_GROUP, entry_id)
            pipe.xdel(self.keys.asr_jobs, entry_id)
            await pipe.execute()

    async def _publish_and_ack(
        self, entry_id: bytes, result: Transcript, spec_rev: int | None = None
    ) -> None:
        """Publish the final, append it to the transcript stream and ack its job, atomically; a
        speculative final (``spec_rev``) is stored instead, and published by whichever of this
        store and the VAD worker's commit comes second (workers/speculation.py)."""
        sid = result.session_id
        if spec_rev is not None:
            result.rev = 0
            prompt = result.text if result.text and result.error is None else ""
            data = encode(result)
            outcome = await self.spec.store(sid, result.segment, spec_rev, data, prompt)
            metrics.ASR_SPECULATIVE.labels(SPEC_OUTCOMES[outcome]).inc()
            await self._ack(entry_id)
            return
        data = encode(result)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.xadd(
                self.keys.transcript(sid),
                entry(data),
                maxlen=self.s.transcript_stream_maxlen,
                approximate=True,
            )
            pipe.expire(self.keys.transcript(sid), self.s.session_ttl_s)
            pipe.publish(self.keys.results(sid), data)
            pipe.xack(self.keys.asr_jobs, ASR_GROUP, entry_id)
            pipe.xdel(self.keys.asr_jobs, entry_id)
            await pipe.execute()
        if result.text and result.error is None:
            await self._set_prompt(
                keys=[self.keys.session(sid)],
                args=[result.segment, result.text, self.s.session_ttl_s],
            )

    async def _dead_letter(
        self, entry_id: bytes, raw: bytes, error: str, job: AsrJob | None
    ) -> None:
        metrics.ASR_DEAD_LETTERS.inc()
        metrics.ASR_JOBS.labels("dead_letter").inc()
        log.error("job %s -> %s: %s", entry_id, self.keys.asr_dead, error)
        await self.r.xadd(
            self.keys.asr_dead,
            {b"d": raw, b"error": error.encode(), b"id": entry_id, b"worker": self.name.encode()},
            maxlen=DEAD_LETTER_MAXLEN,
            approximate=True,
        )
        if job is not None:  # keep the session's ordering going: an empty, flagged result
            failed = Transcript(
                session_id=job.session_id,
                segment=job.segment,
                start=job.start,
                end=job.end,
                text="",
                final=job.final,
                error=error,
                worker=self.name,
            )
            await self._publish_and_ack(entry_id, failed, spec_rev(job))
        else:
            await self._ack(entry_id)


async def amain(settings: Settings) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    start_metrics_server(settings.metrics_port)
    if settings.asr_nice:
        os.nice(settings.asr_nice)
    settings = resolve_auto(settings)  # device, compute type, beam, batch size
    model = await asyncio.to_thread(load_model, settings)
    options = DecodeOptions.from_settings(settings)
    transcriber = Transcriber(model, options, settings.consumer_name)
    batcher = BatchTranscriber(model, options, settings.consumer_name)
    decoder = None
    if settings.asr_partials and settings.asr_partials_preempt:
        decoder = PartialDecoder(settings)
        await decoder.start()
    r = connect(settings.effective_redis_url, name=f"asr-{settings.consumer_name}")
    try:
        worker = AsrWorker(settings, r, transcriber, batcher, decoder)
        await run_with_grace(worker.run(stop), stop, settings.shutdown_grace_s)
    finally:
        await r.aclose()
        if decoder is not None:
            await decoder.close()


def main(settings: Settings | None = None) -> None:
    from shared.logs import configure

    settings = settings or Settings()
    configure(settings.log_level)
    asyncio.run(amain(settings))


if __name__ == "__main__":
    main()
