"""Which model pools serve which languages and tasks, and which pool a session is routed to.

Each ASR worker belongs to one model pool (``ASR_POOL``; by default ``en`` for a model that
serves only English, ``multi`` otherwise) and reads that pool's job stream
(``asr:jobs:{pool}``). It announces its model's capabilities and its pool
(:class:`~shared.schemas.WorkerCapabilities`) on ``capabilities:asr:{worker}`` with every
heartbeat, with the heartbeat's lifetime (``HEARTBEAT_TTL_S``), so a dead worker's announcement
goes away with it. At a session's first audio the gateway reads the announcements of the live
workers (:func:`read_pool`) and chooses the session's pool (:func:`route`, pure) from its
language and task and the pools the deployment runs (``ASR_POOLS``, :func:`parse_pools`), or
refuses a session nothing serves, instead of letting an English-only model invent English text
for Chinese speech.

Translation (``task`` translate) is served by a pool that announces it (a multilingual model)
and refused, naming the languages served, where only English-only pools are live.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import redis.asyncio as aioredis

from shared.keys import EN_POOL, MULTI_POOL, Keys
from shared.languages import LANGUAGES
from shared.schemas import SchemaError, WorkerCapabilities, decode_capabilities

TRANSCRIBE = "transcribe"
TRANSLATE = "translate"

PIPELINE_TASKS = frozenset({TRANSCRIBE, TRANSLATE})
"""Tasks the pipeline carries from a session to the ASR workers (``SessionStart.task`` ->
``AsrJob.task``): translation (into English) is served where a live worker announces it."""


def capabilities_of(
    model: object,
    worker: str,
    model_name: str = "",
    pool: str = "",
    restrict: Sequence[str] = (),
) -> WorkerCapabilities:
    """A faster-whisper ``WhisperModel``'s capabilities: ``model.model.is_multilingual`` tells
    an English-only (``.en``) model from a multilingual one. ``restrict`` (``ASR_LANGUAGES``)
    narrows what is announced to those languages (distil-large-v3 is multilingual in form but
    trained on English); ``pool`` (``ASR_POOL``) defaults to ``en`` for a worker that serves
    only English and ``multi`` otherwise. Raises ``ValueError`` for a restriction to languages
    the model cannot do."""
    inner = getattr(model, "model", None)
    multilingual = bool(getattr(inner, "is_multilingual", False))
    languages = sorted(LANGUAGES) if multilingual else ["en"]
    if restrict:
        wanted = set(restrict)
        if not wanted <= set(languages):
            missing = ", ".join(sorted(wanted - set(languages)))
            raise ValueError(f"ASR_LANGUAGES: the model {model_name!r} cannot do {missing}")
        languages = sorted(wanted)
    many = multilingual and len(languages) > 1
    return WorkerCapabilities(
        worker=worker,
        model=model_name,
        pool=pool or (EN_POOL if languages == ["en"] else MULTI_POOL),
        languages=languages,
        detect=many,
        tasks=[TRANSCRIBE, TRANSLATE] if many else [TRANSCRIBE],
    )


@dataclass(frozen=True)
class PoolInfo:
    """One model pool: what it serves and how many live workers it has (0: a pool named in
    ``ASR_POOLS`` with no worker now; its jobs wait for one)."""

    name: str
    languages: frozenset[str]
    detect: bool
    tasks: frozenset[str]
    workers: int = 0

    @property
    def english_only(self) -> bool:
        return self.languages == frozenset({"en"})

    def serves(self, language: str | None, task: str) -> bool:
        """Whether it serves ``language`` (``None``: detection) for ``task``."""
        if task not in self.tasks:
            return False
        return self.detect if language is None else language in self.languages


def parse_pools(spec: str) -> tuple[PoolInfo, ...]:
    """``ASR_POOLS``: ``NAME=LANGUAGES`` separated by spaces, languages comma-separated ISO
    codes or ``*`` (every language, detection and translation). Raises ``ValueError``."""
    return _parse_pools(" ".join(spec.split()))


@lru_cache(maxsize=16)
def _parse_pools(spec: str) -> tuple[PoolInfo, ...]:
    pools: dict[str, PoolInfo] = {}
    for item in spec.split():
        name, sep, langs = item.partition("=")
        if not sep or not name or not langs:
            raise ValueError(f"ASR_POOLS: {item!r} is not NAME=LANGUAGES")
        if name in pools:
            raise ValueError(f"ASR_POOLS: pool {name!r} named twice")
        codes = set(LANGUAGES) if langs == "*" else set(langs.split(","))
        unknown = sorted(codes - set(LANGUAGES))
        if unknown:
            raise ValueError(f"ASR_POOLS: pool {name!r}: unknown language codes {unknown}")
        many = len(codes) > 1
        tasks = {TRANSCRIBE, TRANSLATE} if many else {TRANSCRIBE}
        pools[name] = PoolInfo(name, frozenset(codes), many, frozenset(tasks))
    return tuple(pools.values())


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

    @property
    def pools(self) -> dict[str, PoolInfo]:
        """The live pools, from the announcements (one without a pool name, from a version
        before pools, is left out)."""
        members: dict[str, list[WorkerCapabilities]] = {}
        for c in self.announced:
            if c.pool:
                members.setdefault(c.pool, []).append(c)
        return {
            name: PoolInfo(
                name,
                frozenset(code for c in cs for code in c.languages),
                any(c.detect for c in cs),
                frozenset(t for c in cs for t in c.tasks),
                len(cs),
            )
            for name, cs in sorted(members.items())
        }

    def continues(self, pool: str) -> bool:
        """Whether a live worker of ``pool`` decodes continuation contexts (a pool of CPU
        workers does not by default: the context would only be carried and dropped)."""
        return any(c.continuation for c in self.announced if c.pool == pool)

    @property
    def knowable(self) -> bool:
        """Whether every live worker said what it serves and which pool it is in (and at least
        one is live)."""
        return self.live > 0 and sum(1 for c in self.announced if c.pool) >= self.live


@dataclass(frozen=True)
class Route:
    """The pool a session's jobs go to."""

    pool: str
    live: bool = True
    """A live worker of the pool serves it now (else its jobs wait: scale from zero)."""
    as_english: bool = False
    """Detection asked, but only English-only pools serve: transcribed as English."""


def _best(language: str | None, task: str, pools: Sequence[PoolInfo]) -> PoolInfo | None:
    """The pool of ``pools`` that serves ``language``: for English an English-only pool before a
    multilingual one (a smaller, faster model), then the one with the most workers."""
    fit = [p for p in pools if p.serves(language, task)]
    if not fit:
        return None
    return min(fit, key=lambda p: (language == "en" and not p.english_only, -p.workers, p.name))


def route(
    language: str | None, task: str, pool: Pool, known: Sequence[PoolInfo] = ()
) -> Route | str:
    """The pool for a session of ``language`` (an ISO code, ``None`` = detect) and ``task``,
    or why it cannot be served.

    In order: a live pool that serves it (English: an English-only pool before a multilingual
    one); for detection with only English-only pools live, an English pool, as English (the
    first version's clients send ``language: null`` as their "multilingual" option, and no
    language at all from their Locust test: they must keep working); then a pool the deployment
    runs (``known``, ``ASR_POOLS``) with no live worker now: jobs wait while it scales from zero.
    With no ``known`` pools and nothing to go by (no live worker, or a live worker that has not
    announced, an older version in a rolling upgrade), nothing is refused: English and
    detection go to ``en``, other languages to ``multi``.
    """
    served = ", ".join(pool.languages) or "none announced"
    if task not in PIPELINE_TASKS:
        return f"task {task!r} is not available (languages served: {served})"
    live = pool.pools
    idle = [k for k in known if k.name not in live]
    for candidates, is_live in ((list(live.values()), True), (idle, False)):
        chosen = _best(language, task, candidates)
        if chosen is not None:
            return Route(chosen.name, live=is_live)
        if language is None and (english := _best("en", task, candidates)) is not None:
            return Route(english.name, live=is_live, as_english=True)
    if not known and not pool.knowable:
        as_en = language in (None, "en") and task == TRANSCRIBE
        return Route(EN_POOL if as_en else MULTI_POOL, live=False)
    codes = ", ".join(sorted({c for p in [*live.values(), *idle] for c in p.languages}))
    if task == TRANSLATE and not any(TRANSLATE in p.tasks for p in [*live.values(), *idle]):
        return (
            "translation into English needs a multilingual model; the running ASR workers "
            f"only transcribe, and serve: {codes}"
        )
    what = (
        "language detection"
        if language is None
        else f"language {language!r} ({LANGUAGES.get(language, language)})"
    )
    return f"{what} is not served by the running ASR workers; they serve: {codes}"


def refusal(
    language: str | None, task: str, pool: Pool, known: Sequence[PoolInfo] = ()
) -> str | None:
    """Why a session of ``language`` and ``task`` cannot be served (:func:`route`), or None."""
    chosen = route(language, task, pool, known)
    return chosen if isinstance(chosen, str) else None


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
