"""What every gateway session shares: the process context, admission control, the session count,
and the JSON shape of a final (the predecessor's result object)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from gateway.auth import Authenticator, KeySessions
from gateway.protocol import CLOSE_TRY_AGAIN_LATER, ProtocolError
from gateway.router import ResultRouter
from shared import metrics
from shared.capabilities import parse_pools, read_pool
from shared.keys import EN_POOL, MULTI_POOL, Keys
from shared.runtime import TaskSet
from shared.schemas import Transcript, Word
from shared.settings import Settings

log = logging.getLogger(__name__)


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
    uploads: int = 0
    """Uploads being received and decoded (spooled in /tmp) by this gateway process."""
    auth: Authenticator | None = None
    key_sessions: KeySessions | None = None
    draining: bool = False
    """Set by :meth:`drain` (SIGTERM): sessions end as if the client had sent eof."""
    receivers: set[asyncio.Task[Any]] = field(default_factory=set)
    """The receive loops of the open sockets (cancelled by :meth:`drain`)."""
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while no session is open (:func:`counted`)."""

    async def drain(self, grace_s: float) -> None:
        """Stop every live socket session as at an eof: flush its audio, end it, deliver its
        finals (within ``grace_s`` in all), and let it close with 1012 (service restart), so a
        client of ``/`` does not lose its last utterance and knows to reconnect."""
        self.draining = True
        if not self.active:
            return
        log.info("draining %d sessions (up to %.0f s)", self.active, grace_s)
        for task in list(self.receivers):
            task.cancel()
        try:
            await asyncio.wait_for(self.idle.wait(), grace_s)
        except TimeoutError:
            log.warning("%d sessions still open after the drain grace", self.active)


async def admission_error(ctx: GatewayContext) -> ProtocolError | None:
    """Why a new session must be refused now (1013: try again later), or None."""
    if ctx.draining:
        metrics.SESSIONS_REFUSED.labels("shutting_down").inc()
        return ProtocolError(
            "shutting_down", "this gateway is shutting down; connect again", CLOSE_TRY_AGAIN_LATER
        )
    if ctx.active >= ctx.settings.max_sessions:
        metrics.SESSIONS_REFUSED.labels("too_many_sessions").inc()
        return ProtocolError(
            "too_many_sessions",
            f"this gateway serves {ctx.settings.max_sessions} sessions already",
            CLOSE_TRY_AGAIN_LATER,
        )
    backlogs = await pool_backlogs(ctx)
    backlog = min(backlogs.values())
    if backlog >= ctx.settings.max_job_backlog:  # no pool could take the session's jobs
        return overloaded(backlog)
    return None


def overloaded(
    backlog: int, waiting: str = "utterances are waiting for transcription"
) -> ProtocolError:
    """``overloaded`` (1013) for a new session refused at a bound: ``backlog`` jobs waiting on
    its model pool's stream (or, with ``waiting`` saying so, entries on another stream)."""
    metrics.SESSIONS_REFUSED.labels("overloaded").inc()
    return ProtocolError(
        "overloaded", f"{backlog} {waiting}; try again shortly", CLOSE_TRY_AGAIN_LATER
    )


async def pool_backlogs(ctx: GatewayContext) -> dict[str, int]:
    """Jobs waiting on the job stream of each model pool, live or named in ``ASR_POOLS`` (with
    neither, ``en`` and ``multi``). At connect the session's language is not known yet: it is
    refused when no pool has room; at its first audio, when its own pool has none."""
    live = await read_pool(ctx.redis, ctx.keys, ctx.settings.heartbeat_ttl_s)
    known = {p.name for p in parse_pools(ctx.settings.asr_pools)}
    names = sorted(set(live.pools) | known) or [EN_POOL, MULTI_POOL]
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.xlen(ctx.keys.asr_jobs(name))
        return dict(zip(names, [int(n) for n in await pipe.execute()], strict=True))


@contextmanager
def counted(ctx: GatewayContext, endpoint: str) -> Iterator[None]:
    """One open session of this process for its lifetime (admission control and metrics)."""
    ctx.active += 1
    ctx.idle.clear()
    metrics.SESSIONS_ACTIVE.inc()
    metrics.SESSIONS_TOTAL.labels(endpoint).inc()
    try:
        yield
    finally:
        ctx.active -= 1
        if not ctx.active:
            ctx.idle.set()
        metrics.SESSIONS_ACTIVE.dec()


def final_message(t: Transcript) -> dict[str, Any]:
    """The predecessor's result object, plus type, session, segment and session-audio times
    (and ``speaker``, on finals and words, only where the session asked for ``diarize``;
    ``translation``, ``{"language": "en", "text": …}``, only where it asked for translation)."""
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
    if t.translation is not None:
        msg["translation"] = {"language": t.translation.language, "text": t.translation.text}
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
