"""Which languages and tasks the live ASR workers serve, and whether a session can be served.

Each ASR worker announces its model's capabilities (:class:`~shared.schemas.WorkerCapabilities`)
on ``capabilities:asr:{worker}`` with every heartbeat, with the heartbeat's lifetime
(``HEARTBEAT_TTL_S``), so a dead worker's announcement goes away with it. At session start the
gateway reads the announcements of the live workers (:func:`read_pool`) and refuses a session no
live worker can serve (:func:`refusal`, pure), instead of letting an English-only model invent
English text for Chinese speech.

Translation (``task`` translate) is served where a live worker announces it (a multilingual
model) and refused, naming the languages served, where only English-only workers are live.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from shared.keys import Keys
from shared.languages import LANGUAGES
from shared.schemas import SchemaError, WorkerCapabilities, decode_capabilities

TRANSCRIBE = "transcribe"
TRANSLATE = "translate"

PIPELINE_TASKS = frozenset({TRANSCRIBE, TRANSLATE})
"""Tasks the pipeline carries from a session to the ASR workers (``SessionStart.task`` ->
``AsrJob.task``): translation (into English) is served where a live worker announces it."""


def capabilities_of(model: object, worker: str, model_name: str = "") -> WorkerCapabilities:
    """A faster-whisper ``WhisperModel``'s capabilities: ``model.model.is_multilingual`` tells
    an English-only (``.en``) model from a multilingual one."""
    inner = getattr(model, "model", None)
    multilingual = bool(getattr(inner, "is_multilingual", False))
    if multilingual:
        return WorkerCapabilities(
            worker=worker,
            model=model_name,
            languages=sorted(LANGUAGES),
            detect=True,
            tasks=[TRANSCRIBE, TRANSLATE],
        )
    return WorkerCapabilities(
        worker=worker, model=model_name, languages=["en"], detect=False, tasks=[TRANSCRIBE]
    )


@dataclass(frozen=True)
class Pool:
    """The live ASR workers as the gateway sees them at one moment."""

    live: int = 0
    """Workers with a fresh heartbeat."""
    announced: list[WorkerCapabilities] = field(default_factory=list)
    """Their capabilities, for those that announced them (an older worker does not)."""

    @property
    def languages(self) -> list[str]:
        return sorted({code for c in self.announced for code in c.languages})


def refusal(language: str | None, task: str, pool: Pool) -> str | None:
    """Why a session of ``language`` (an ISO code, ``None`` = detect) and ``task`` cannot be
    served by ``pool``, or None if it can.

    Nothing is refused while no worker is live (jobs wait for one: the pool may scale from
    zero) or while a live worker has not said what it serves (an older version in a rolling
    upgrade). Detection with English-only workers is served, as English: the first version's
    clients send ``language: null`` (its "multilingual" option) and no language at all (its
    Locust test), and an English-only model transcribes everything as English.
    """
    served = ", ".join(pool.languages) or "none announced"
    if task not in PIPELINE_TASKS:
        return f"task {task!r} is not available (languages served: {served})"
    if pool.live == 0 or len(pool.announced) < pool.live:
        return None
    if task == TRANSLATE and not any(TRANSLATE in c.tasks for c in pool.announced):
        return (
            "translation into English needs a multilingual model; the running ASR workers "
            f"only transcribe, and serve: {served}"
        )
    if language is None:
        return None
    if any(language in c.languages and task in c.tasks for c in pool.announced):
        return None
    name = LANGUAGES.get(language, language)
    return (
        f"language {language!r} ({name}) is not served by the running ASR workers; "
        f"they serve: {served}"
    )


async def read_pool(r: aioredis.Redis, keys: Keys, ttl_s: float, role: str = "asr") -> Pool:
    """The live workers of ``role`` (heartbeat younger than ``ttl_s``) and their announcements."""
    names = await r.zrangebyscore(keys.heartbeats(role), time.time() - ttl_s, "+inf")
    if not names:
        return Pool()
    workers = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    raw = await r.mget([keys.capabilities(role, w) for w in workers])
    announced = []
    for data in raw:
        if data is None:
            continue
        try:
            announced.append(
                decode_capabilities(data if isinstance(data, bytes) else data.encode())
            )
        except SchemaError:
            continue  # another version's announcement: treated as not announced
    return Pool(live=len(workers), announced=announced)
