"""ASR worker: consumes its model pool's ``asr:jobs:{pool}`` and ``asr:partials:{pool}`` through
the ``asr`` consumer group and publishes transcripts.

A thin shell around the pure scheduling policy (workers/asr_policy.py): it reads, asks the policy
what to do next, decodes in a thread (the model is loaded once), publishes and acks. A final is
published in one MULTI: PUBLISH on ``results:{session}``, XADD to ``transcript:{session}``
(bounded, with a TTL), XACK. Pending jobs idle longer than ``ASR_CLAIM_IDLE_MS`` (a dead
worker's) are reclaimed with XAUTOCLAIM; a job delivered ``ASR_MAX_DELIVERIES`` times, or one that
cannot be decoded, goes to the pool's dead-letter stream ``asr:dead:{pool}`` and an empty, error-flagged result
keeps the session's ordering going. One bad job never stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AbstractAsyncContextManager

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import metrics, session_state, tracing
from shared.capabilities import capabilities_of
from shared.keys import ASR_GROUP, EN_POOL, Keys
from shared.redis_util import (
    OWN_PENDING_PAGE,
    GroupKeeper,
    Heartbeat,
    connect,
    delivering,
    entry,
    entry_data,
    held,
    is_nogroup,
    own_pending,
    reap_dead,
    ride_through,
    touch_pending,
)
from shared.runtime import (
    TaskSet,
    install_signal_handlers,
    run_with_grace,
    run_worker,
    start_metrics_server,
)
from shared.schemas import (
    AsrJob,
    SchemaError,
    Transcript,
    WorkerCapabilities,
    decode_as,
    encode,
    encode_capabilities,
)
from shared.session_state import Field, SpecField, read_ints, read_text, spec_field
from shared.settings import Settings
from workers.asr import DecodeOptions, Transcriber, load_model, resolve_auto
from workers.asr_claims import ROLE, drop_stale_partials
from workers.asr_policy import (
    ORDINARY,
    SPECULATIVE,
    URGENT,
    Action,
    DecodeBatch,
    DecodeFinal,
    DecodePartial,
    DropPartials,
    Final,
    Marks,
    Partial,
    Read,
    State,
    Stop,
    next_action,
)
from workers.asr_publish import FinalPublisher, spec_rev
from workers.batching import BatchTranscriber
from workers.diarize import SpeakerLabeler
from workers.speculation import Speculation

log = logging.getLogger(__name__)

READ_BLOCK_MS = 1000
"""A blocked read returns after this long with nothing, so the loop sees the stop event."""

_MARKS = (Field.FINAL_SEG, Field.PARTIAL_SEG, Field.PARTIAL_REV)


def queue_wait(job: AsrJob) -> float:
    """Seconds the job waited on the stream (0 if it does not say when it was queued)."""
    return max(0.0, time.time() - job.enqueued_at) if job.enqueued_at else 0.0


Entries = list[tuple[bytes, dict[bytes, bytes]]]


class AsrWorker:
    def __init__(
        self,
        settings: Settings,
        r: aioredis.Redis,
        transcriber: Transcriber,
        batcher: BatchTranscriber | None = None,
        capabilities: WorkerCapabilities | None = None,
    ) -> None:
        self.s = settings
        self.r = r
        self.reader = delivering(r)
        """For the commands that deliver entries to this worker (XREADGROUP ``>``,
        XAUTOCLAIM): never retried by redis-py; their errors set ``_resume``."""
        self.keys = Keys(settings.key_prefix)
        self.name = settings.consumer_name
        self.transcriber = transcriber
        caps = capabilities or WorkerCapabilities(
            worker=settings.consumer_name, pool=settings.asr_pool or EN_POOL, languages=["en"]
        )
        caps.stream = self.keys.asr_jobs(caps.pool)
        self.capabilities = caps
        """What this worker announces with its heartbeat: its pool and what it serves (the
        gateway routes sessions to a pool that serves their language)."""
        self.pool = caps.pool
        self.jobs = self.keys.asr_jobs(self.pool)
        self.partials = self.keys.asr_partials(self.pool)
        self.batcher = batcher if settings.asr_batch_size > 1 else None
        self.state = State(
            batch_size=settings.asr_batch_size if self.batcher else 1,
            partial_share=settings.asr_partial_share,
        )
        self._last_claim = 0.0
        self._resume = True
        """Look at what Redis says this worker holds before the next step (at start, and after
        every lost connection): :meth:`_resume_own`."""
        self.speakers = SpeakerLabeler(settings, r, self.keys)
        self.spec = Speculation(
            r, self.keys, settings.transcript_stream_maxlen, settings.session_ttl_s
        )
        self.out = FinalPublisher(settings, r, self.keys, self.spec, self.pool)
        self.groups = GroupKeeper(
            r, [(self.jobs, ASR_GROUP), (self.partials, ASR_GROUP)], f"asr worker {self.name}"
        )
        """Made at start, made again when Redis lost them (NOGROUP)."""

    async def run(self, stop: asyncio.Event) -> None:
        await self.groups.ensure()
        beat = Heartbeat(
            self.r,
            self.keys,
            ROLE,
            self.name,
            self.s.heartbeat_interval_s,
            announce=encode_capabilities(self.capabilities),
            ttl_s=self.s.heartbeat_ttl_s,
        )
        tasks = TaskSet()
        tasks.spawn(beat.run(stop), "heartbeat")
        log.info("asr worker %s of pool %s ready on %s", self.name, self.pool, self.jobs)
        try:
            while True:
                self.state.closing = stop.is_set()
                try:
                    if not self.state.closing:
                        if self._resume:
                            await self._resume_own()
                        await self._claim_stale()
                    action = next_action(self.state, time.monotonic())
                    if isinstance(action, Stop):
                        break
                    await self.step(action)
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    if self.state.closing:
                        break
                    log.warning("redis unavailable (%s); retrying", exc)
                    self._resume = True
                    await asyncio.sleep(1.0)
                except ResponseError as exc:
                    if not is_nogroup(exc):
                        log.exception("asr worker %s: step failed", self.name)
                        await asyncio.sleep(0.1)
                    elif not self.state.closing:
                        await self.groups.recover(exc)
                except Exception:  # a bug or bad data outside one job's handling: keep going
                    log.exception("asr worker %s: step failed", self.name)
                    await asyncio.sleep(0.1)
        finally:
            await tasks.cancel_all()
            try:
                await beat.remove()
                await self._leave_groups()
            except (RedisConnectionError, RedisTimeoutError, ResponseError):
                pass
            await self.reader.aclose()
            log.info("asr worker %s stopped", self.name)

    async def step(self, action: Action) -> None:
        """Carry out one action of the policy."""
        if isinstance(action, Read):
            await self._read(action)
            return
        self.state.take(action)
        if isinstance(action, DecodeFinal):
            await self.handle_safely(action.final.entry_id, action.final.fields, deliveries=1)
        elif isinstance(action, DecodeBatch):
            await self.handle_batch([(f.entry_id, f.fields) for f in action.finals])
        elif isinstance(action, DecodePartial):
            await self.handle_partial(action.partial)
        elif isinstance(action, DropPartials):
            outcome = "shutdown" if self.state.closing else "stale"
            metrics.ASR_PARTIALS.labels(self.pool, outcome).inc(len(action.partials))
            await self._drop_partials([p.entry_id for p in action.partials])

    async def _leave_groups(self) -> None:
        """Remove our consumer from the groups, unless it still holds pending entries (they
        would be lost from the pending list; left there, they are reclaimed)."""
        for stream in (self.jobs, self.partials):
            left = await self.r.xpending_range(
                stream, ASR_GROUP, min="-", max="+", count=1, consumername=self.name
            )
            if not left:
                await self.r.xgroup_delconsumer(stream, ASR_GROUP, self.name)

    async def _read(self, action: Read) -> None:
        """XREADGROUP what the policy asked for, then the session marks of every held partial
        (one pipeline): the policy decides on them as they are now."""
        streams = {self.jobs: action.finals, self.partials: action.partials}
        wanted = {s: n for s, n in streams.items() if n > 0}
        resp = await self._xread(wanted)
        if not resp and action.block:  # nothing waits: block on both, woken by the first entry
            ids = {s: ">" for s in wanted}
            block = action.block_ms or READ_BLOCK_MS
            resp = await self.reader.xreadgroup(ASR_GROUP, self.name, ids, count=1, block=block)
            if resp:  # the rest of a burst (a batch of finals, newer revisions) follows at once
                resp += await self._xread({s: n - 1 for s, n in wanted.items() if n > 1})
        finals: list[Final] = []
        partials: list[Partial] = []
        for stream, entries in resp or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            for entry_id, fields in entries:
                if name == self.jobs:
                    finals.append(Final(entry_id, fields, await self._rank(fields)))
                elif (partial := await self._parse_partial(entry_id, fields)) is not None:
                    partials.append(partial)
        held = self.state.sessions() | {p.job.session_id for p in partials}
        self.state.read(finals, partials, await self._marks(held))

    async def _rank(self, fields: dict[bytes, bytes]) -> int:
        """How urgent a final job is (workers/asr_policy.py, rule 1); undecodable: ordinary (it
        is dead-lettered when handled)."""
        try:
            job = decode_as(entry_data(fields), AsrJob)
        except SchemaError:
            return ORDINARY
        if job.reason == "finalize":
            return URGENT
        if not job.speculative:
            return ORDINARY
        committed = await self.r.hget(
            self.keys.speculative(job.session_id), spec_field(job.segment, SpecField.COMMITTED)
        )
        return URGENT if committed is not None and int(committed) == job.rev else SPECULATIVE

    async def _xread(self, counts: dict[str, int]) -> list[tuple[bytes | str, Entries]]:
        """Non-blocking XREADGROUP of each stream with its own COUNT, in one round trip."""
        async with self.reader.pipeline(transaction=False) as pipe:
            for stream, count in counts.items():
                pipe.xreadgroup(ASR_GROUP, self.name, {stream: ">"}, count=count)
            return [part for got in await pipe.execute() for part in got or []]

    async def _parse_partial(self, entry_id: bytes, fields: dict[bytes, bytes]) -> Partial | None:
        try:
            return Partial(entry_id, decode_as(entry_data(fields), AsrJob))
        except SchemaError as exc:
            metrics.ASR_PARTIALS.labels(self.pool, "error").inc()
            log.error("undecodable partial %s: %s; dropped", entry_id, exc)
            await self._drop_partials([entry_id])
            return None

    async def _marks(self, sessions: set[str]) -> dict[str, Marks]:
        if not sessions:
            return {}
        order = sorted(sessions)
        async with self.r.pipeline(transaction=False) as pipe:
            for sid in order:
                pipe.hmget(self.keys.session(sid), [str(f) for f in _MARKS])
            got = await pipe.execute()
        return {
            sid: Marks(*(None if v is None else int(v) for v in values))
            for sid, values in zip(order, got, strict=True)
        }

    async def _drop_partials(self, entry_ids: list[bytes]) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.xack(self.partials, ASR_GROUP, *entry_ids)
            pipe.xdel(self.partials, *entry_ids)
            await pipe.execute()

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
                async with self._held(self.jobs, [i for i, _j in group]):
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

    async def handle_partial(self, partial: Partial) -> None:
        """Transcribe a partial job (the policy found it current); publish it unless its
        segment's final came out meanwhile. Never retried, never dead-lettered."""
        entry_id, job = partial.entry_id, partial.job
        try:
            prompt, language = await self._context(job)
            beam = self.s.asr_partial_beam_size
            started = time.monotonic()
            async with self._held(self.partials, [entry_id]):
                result = await asyncio.to_thread(
                    self.transcriber.transcribe, job, prompt, beam, language
                )
            self.state.partial_decoded(started, time.monotonic())
            (final_seg,) = await read_ints(
                self.r, self.keys.session(job.session_id), Field.FINAL_SEG
            )
            if Marks(final_seg=final_seg).final_out(job.segment):
                metrics.ASR_PARTIALS.labels(self.pool, "stale").inc()
                return
            await self.r.publish(self.keys.results(job.session_id), encode(result))
            metrics.ASR_PARTIALS.labels(self.pool, "ok").inc()
        except (RedisConnectionError, RedisTimeoutError):
            raise
        except Exception as exc:
            if is_nogroup(exc):
                raise
            metrics.ASR_PARTIALS.labels(self.pool, "error").inc()
            log.exception("partial %s (session %s) failed; dropped", entry_id, job.session_id)
        finally:
            await self._drop_partials([entry_id])

    def _held(self, stream: str, ids: list[bytes]) -> AbstractAsyncContextManager[None]:
        """Keep ``ids`` claimed while they decode (a decode longer than
        ``ASR_CLAIM_IDLE_MS`` is not taken over and decoded again by a peer)."""
        return held(self.r, stream, ASR_GROUP, self.name, ids, self.s.asr_claim_idle_ms)

    async def _resume_own(self) -> None:
        """Decode now the final jobs that Redis says this worker holds and this process does
        not: a read whose reply was lost when Redis went down, or whose follow-up (the marks, a
        rank) failed, or an earlier process of the same consumer name. Left alone they would
        wait a whole ``ASR_CLAIM_IDLE_MS`` for the claim round (a minute by default: the
        session's end gives up first). Partials so held are dropped (their session has newer
        ones by now)."""
        held = {f.entry_id for f in self.state.finals}
        for entry_id, fields, deliveries in await own_pending(
            self.r, self.jobs, ASR_GROUP, self.name
        ):
            if entry_id in held:
                continue
            if fields is None:  # deleted meanwhile: nothing to decode
                await self.out.ack(entry_id)
                continue
            log.warning("resumed job %s, held by this worker unread (delivery %d)",
                        entry_id, deliveries)  # fmt: skip
            await self.handle_safely(entry_id, fields, deliveries=deliveries)
        kept = {p.entry_id for p in self.state.partials}
        held_partials = await self.r.xpending_range(  # ids only: a partial's audio is not read
            self.partials, ASR_GROUP, min="-", max="+", count=OWN_PENDING_PAGE,
            consumername=self.name,
        )  # fmt: skip
        lost = [p["message_id"] for p in held_partials if p["message_id"] not in kept]
        if lost:
            metrics.ASR_PARTIALS.labels(self.pool, "stale").inc(len(lost))
            await self._drop_partials(lost)
        self._resume = False

    async def _claim_stale(self) -> None:
        """The claim round (workers/asr_claims.py): keep what we hold, take over a dead
        worker's jobs (decoded) and partials (dropped), remove dead consumers."""
        now = time.monotonic()
        if now - self._last_claim < self.s.asr_claim_idle_ms / 2000:
            return
        self._last_claim = now
        held_finals = [f.entry_id for f in self.state.finals]
        await touch_pending(self.r, self.jobs, ASR_GROUP, self.name, held_finals)
        held_partials = [p.entry_id for p in self.state.partials]
        await touch_pending(self.r, self.partials, ASR_GROUP, self.name, held_partials)
        await self._claim_jobs()
        await drop_stale_partials(
            self.reader, self.partials, self.name, self.s.asr_claim_idle_ms, self.pool
        )
        await reap_dead(
            self.r, self.keys, ROLE, self.name, self.s.heartbeat_ttl_s,
            [(self.jobs, ASR_GROUP), (self.partials, ASR_GROUP)], self.s.asr_claim_idle_ms,
        )  # fmt: skip

    async def _claim_jobs(self) -> None:
        cursor: bytes | str = "0-0"
        while True:
            cursor, claimed, _deleted = await self.reader.xautoclaim(
                self.jobs, ASR_GROUP, self.name, self.s.asr_claim_idle_ms, cursor, count=10
            )
            for entry_id, fields in claimed:
                info = await self.r.xpending_range(
                    self.jobs, ASR_GROUP, min=entry_id, max=entry_id, count=1
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
        except Exception as exc:
            if is_nogroup(exc):  # the stream or group is gone: the loop recreates it
                raise
            metrics.ASR_JOBS.labels(self.pool, "error").inc()
            log.exception("job %s: unexpected error; left pending for a retry", entry_id)

    async def handle(self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> None:
        raw = entry_data(fields)
        try:
            job = decode_as(raw, AsrJob)
        except SchemaError as exc:
            log.error("undecodable job %s: %s", entry_id, exc)
            await self.out.dead_letter(entry_id, raw, f"schema: {exc}", None)
            return
        if deliveries > self.s.asr_max_deliveries:
            await self.out.dead_letter(entry_id, raw, f"delivered {deliveries} times", job)
            return
        if job.speculative and not await self.spec.wanted(job.session_id, job.segment, job.rev):
            metrics.ASR_SPECULATIVE.labels("stale").inc()
            await self.out.ack(entry_id)
            return
        waited = queue_wait(job)
        prompt, language = await self._context(job)
        try:
            async with self._held(self.jobs, [entry_id]):
                result = await asyncio.to_thread(
                    self.transcriber.transcribe, job, prompt, None, language
                )
        except Exception as exc:
            log.exception(
                "job %s (session %s segment %d) failed on delivery %d",
                entry_id, job.session_id, job.segment, deliveries,
            )  # fmt: skip
            if deliveries >= self.s.asr_max_deliveries:
                await self.out.dead_letter(entry_id, raw, f"{type(exc).__name__}: {exc}", job)
            else:
                metrics.ASR_JOBS.labels(self.pool, "retry").inc()
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
        result.traceparent = tracing.record(
            "asr.transcribe", job.traceparent, job.enqueued_at or time.time(),
            {"session_id": job.session_id, "segment": job.segment, "worker": self.name,
             "queue_ms": round(waited * 1000), "processing_ms": round(result.processing_time * 1000)},
        )  # fmt: skip
        await self.speakers.label(job, result)
        # A decoded final is not thrown away because Redis blinked (it would wait a whole
        # ASR_CLAIM_IDLE_MS to be reclaimed and decoded again): the publish rides through the
        # outage. Repeating it is safe: the gateway drops a second answer for a segment.
        await ride_through(
            lambda: asyncio.shield(
                self.out.publish_and_ack(
                    entry_id, result, spec_rev(job), eager=job.eager, turn=job.turn
                )
            ),
            tolerance_s=self.s.redis_outage_tolerance_s,
            what=f"session={job.session_id} segment={job.segment}",
        )
        if job.language is None and result.text and result.language:
            await self._remember_language(job.session_id, result.language)
        metrics.ASR_JOBS.labels(self.pool, "ok").inc()
        metrics.ASR_QUEUE_WAIT.labels(self.pool).observe(waited)

    async def _prompt(self, job: AsrJob) -> str | None:
        return await read_text(self.r, self.keys.session(job.session_id), Field.PROMPT) or None

    async def _context(self, job: AsrJob) -> tuple[str | None, str | None]:
        """The session's prompt (if prompting is on) and, for a detecting session, the
        language of its latest final (one HMGET)."""
        if job.language is not None and not self.s.asr_condition_on_previous:
            return None, None
        prompt, language = await self.r.hmget(
            self.keys.session(job.session_id), [str(Field.PROMPT), str(Field.LANGUAGE)]
        )
        text = prompt.decode("utf-8", "replace") if prompt else None
        return (text if self.s.asr_condition_on_previous else None), (
            language.decode() if language and job.language is None else None
        )

    async def _remember_language(self, session_id: str, language: str) -> None:
        """The session's language for the detection of its next utterances (a hint: two
        workers finishing out of order may leave the older one, which only delays a switch)."""
        key = self.keys.session(session_id)
        async with self.r.pipeline(transaction=True) as pipe:
            session_state.write(pipe, key, {Field.LANGUAGE: language}, self.s.session_ttl_s)
            await pipe.execute()


async def amain(settings: Settings) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    start_metrics_server(settings.metrics_port)
    settings = resolve_auto(settings)  # device, compute type, beam, batch size
    model = await asyncio.to_thread(load_model, settings)
    options = DecodeOptions.from_settings(settings)
    transcriber = Transcriber(
        model, options, settings.consumer_name, settings.asr_language_switch_probability
    )
    batcher = BatchTranscriber(model, options, settings.consumer_name)
    r = connect(settings.effective_redis_url, name=f"asr-{settings.consumer_name}")
    try:
        caps = capabilities_of(
            model,
            settings.consumer_name,
            settings.asr_model or "bundled tiny.en",
            settings.asr_pool,
            settings.asr_language_list,
        )
        caps.continuation = options.continuation
        log.info("asr worker %s (pool %s) serves languages %s, tasks %s", settings.consumer_name,
                 caps.pool, "all" if caps.detect else caps.languages, caps.tasks)  # fmt: skip
        worker = AsrWorker(settings, r, transcriber, batcher, caps)
        await run_with_grace(worker.run(stop), stop, settings.shutdown_grace_s)
    finally:
        await r.aclose()


def main(settings: Settings | None = None) -> None:
    run_worker("asr-worker", settings or Settings(), amain)


if __name__ == "__main__":
    main()
