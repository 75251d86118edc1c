"""The end of a final job in the ASR worker: publish, store and ack it atomically, or move it to
the dead-letter stream with an empty, error-flagged result that keeps the session's order."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from shared import metrics
from shared.keys import ASR_GROUP, Keys
from shared.redis_util import entry
from shared.schemas import SPECULATED, AsrJob, AudioControl, Transcript, TurnEvent, encode
from shared.session_state import SET_PROMPT_LUA
from shared.settings import Settings
from workers.speculation import DONE, PUBLISHED, VOID, WAITING, Speculation

log = logging.getLogger(__name__)

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


class FinalPublisher:
    def __init__(
        self, settings: Settings, r: aioredis.Redis, keys: Keys, spec: Speculation, pool: str
    ) -> None:
        self.s = settings
        self.r = r
        self.keys = keys
        self.pool = pool
        self.jobs = keys.asr_jobs(pool)
        """The worker's pool's job stream: what it acks."""
        self.name = settings.consumer_name
        self.spec = spec
        self._set_prompt = r.register_script(_SET_PROMPT)

    async def ack(self, entry_id: bytes) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.xack(self.jobs, ASR_GROUP, entry_id)
            pipe.xdel(self.jobs, entry_id)
            await pipe.execute()

    async def publish_and_ack(
        self,
        entry_id: bytes,
        result: Transcript,
        spec_rev: int | None = None,
        eager: bool = False,
        turn: bool = False,
    ) -> None:
        """Publish the final, append it to the transcript stream and ack its job, atomically; a
        speculative final (``spec_rev``) is stored instead, and published by whichever of this
        store and the VAD worker's commit comes second (workers/speculation.py); with ``eager``
        the store also publishes its text as an ``end_of_turn_eager`` event; with ``turn`` it tells
        the session's VAD worker that the result is there."""
        sid = result.session_id
        if spec_rev is not None:
            result.rev = 0
            prompt = result.text if result.text and result.error is None else ""
            data = encode(result)
            event = b""
            if eager and prompt:
                event = encode(
                    TurnEvent(
                        session_id=sid, kind="end_of_turn_eager", segment=result.segment,
                        rev=spec_rev, start=result.start, end=result.end, text=result.text,
                    )
                )  # fmt: skip
            nudge = b""
            if turn and prompt:
                nudge = encode(AudioControl(session_id=sid, seq=0, kind=SPECULATED))
            outcome = await self.spec.store(
                sid, result.segment, spec_rev, data, prompt, event, nudge
            )
            metrics.ASR_SPECULATIVE.labels(SPEC_OUTCOMES[outcome]).inc()
            await self.ack(entry_id)
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
            pipe.xack(self.jobs, ASR_GROUP, entry_id)
            pipe.xdel(self.jobs, entry_id)
            await pipe.execute()
        if result.text and result.error is None:
            await self._set_prompt(
                keys=[self.keys.session(sid)],
                args=[result.segment, result.text, self.s.session_ttl_s],
            )

    async def dead_letter(
        self, entry_id: bytes, raw: bytes, error: str, job: AsrJob | None
    ) -> None:
        metrics.ASR_DEAD_LETTERS.labels(self.pool).inc()
        metrics.ASR_JOBS.labels(self.pool, "dead_letter").inc()
        dead = self.keys.asr_dead(self.pool)
        log.error("job %s -> %s: %s", entry_id, dead, error)
        await self.r.xadd(
            dead,
            entry(raw) | {b"error": error.encode(), b"id": entry_id, b"worker": self.name.encode()},
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
            await self.publish_and_ack(entry_id, failed, spec_rev(job))
        else:
            await self.ack(entry_id)
