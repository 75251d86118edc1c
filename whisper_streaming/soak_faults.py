"""The soak test's pure parts: when which fault happens, and what each session lost or received
twice, and which fault to blame (no I/O; whisper_streaming/soak.py runs them)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

WORKER, GATEWAY, REDIS = "worker kill", "gateway kill", "redis restart"
NO_FAULT = "no fault"
"""The cause of a loss or duplicate with no fault shortly before it: a bug outside the faults."""

MIN_GAP_S = 5.0
"""Faults at least this far apart, so each one's effect can be told from the others'."""

TAIL_S = 10.0
"""No fault in the run's last seconds (the sessions in flight then still finish and count)."""

BLAME_WINDOW_S = 20.0
"""A loss or duplicate is blamed on the latest fault at most this long before it."""


@dataclass(frozen=True)
class Fault:
    at_s: float
    """Seconds from the start of the run."""
    kind: str
    """:data:`WORKER`, :data:`GATEWAY` or :data:`REDIS`."""
    target: str
    """The process killed (``redis-server`` for a restart)."""


def schedule(
    duration_s: float,
    *,
    worker_every: float,
    gateway_every: float,
    redis_every: float,
    workers: Sequence[str],
    gateways: Sequence[str],
    seed: int,
) -> list[Fault]:
    """Every ``*_every`` seconds (0: never) a fault of that kind, the victim drawn with ``seed``;
    merged in time order, each moved later to keep :data:`MIN_GAP_S` from the one before, and
    none in the last :data:`TAIL_S`. Gateway kills and Redis restarts start half a period in,
    so the first faults of the three kinds do not pile up."""
    rng = random.Random(seed)
    wanted: list[tuple[float, str]] = []
    for kind, every, offset in (
        (WORKER, worker_every, 0.0),
        (GATEWAY, gateway_every, 0.5),
        (REDIS, redis_every, 0.5),
    ):
        if every <= 0:
            continue
        t = every * (1 + offset)
        while t < duration_s - TAIL_S:
            wanted.append((t, kind))
            t += every
    out: list[Fault] = []
    for t, kind in sorted(wanted):
        if out:
            t = max(t, out[-1].at_s + MIN_GAP_S)
        if t >= duration_s - TAIL_S:
            break
        target = {WORKER: workers, GATEWAY: gateways}.get(kind, ["redis-server"])
        out.append(Fault(round(t, 3), kind, rng.choice(list(target))))
    return out


def blame(t: float, faults: Sequence[Fault], window_s: float = BLAME_WINDOW_S) -> str:
    """The kind of the latest fault in ``[t - window_s, t]``, else :data:`NO_FAULT`."""
    before = [f for f in faults if t - window_s <= f.at_s <= t]
    return max(before, key=lambda f: f.at_s).kind if before else NO_FAULT


@dataclass
class SessionLog:
    """What one soak client saw of its session, over all its sockets (times: seconds from the
    start of the run)."""

    finals: list[tuple[float, int]] = field(default_factory=list)
    """(when, segment) of every final received, in order, repeats included."""
    heard: dict[int, float] = field(default_factory=dict)
    """Segment -> when the last message about it (partial, VAD event, final) arrived."""
    segments: int | None = None
    """The ``segments`` of ``Metadata``: how many the VAD cut (``None``: never closed)."""
    ended_at: float = 0.0

    def lost(self) -> list[tuple[float, int]]:
        """(when, segment) of each segment cut whose final never came: when = the last message
        about it, or about the segment before it, or the end of the session."""
        got = {s for _t, s in self.finals}
        out = []
        for seg in range(self.segments or 0):
            if seg in got:
                continue
            earlier = [self.heard[s] for s in self.heard if s <= seg]
            out.append((max(earlier) if earlier else self.ended_at, seg))
        return out

    def duplicated(self) -> list[tuple[float, int]]:
        """(when, segment) of each final received again after its first."""
        seen: set[int] = set()
        out = []
        for t, seg in self.finals:
            if seg in seen:
                out.append((t, seg))
            seen.add(seg)
        return out


def by_cause(events: Sequence[tuple[float, int]], faults: Sequence[Fault]) -> dict[str, int]:
    """How many of ``events`` (from :meth:`SessionLog.lost` or ``duplicated``) each cause has."""
    out: dict[str, int] = {}
    for t, _seg in events:
        cause = blame(t, faults)
        out[cause] = out.get(cause, 0) + 1
    return out


def merge(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def per_cause(counts: dict[str, int]) -> str:
    """``3 (2 gateway kill, 1 redis restart)``, or ``0``."""
    total = sum(counts.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()) if n) + ")"
