"""Pure statistics of a benchmark run: percentiles, and matching what the service sent back
against ground-truth speech regions to get per-utterance latencies. No I/O, no model."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

END_TOLERANCE_S = 0.25
"""A final's segment may end this much before a region starts and still overlap it: the
service's VAD and the ground truth disagree by a window or two at the edges."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0–100), linear interpolation between closest ranks (numpy's default
    method). None for no values."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, p50, p95, max (seconds, rounded to ms)."""

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    return {
        "n": len(values),
        "p50": r(percentile(values, 50)),
        "p95": r(percentile(values, 95)),
        "max": r(max(values) if values else None),
    }


@dataclass(frozen=True)
class Message:
    """A ``partial`` or ``final`` as the client received it: session-audio times, arrival time."""

    type: str
    segment: int
    start: float
    end: float
    text: str
    received: float
    processing_time: float = 0.0
    """The ASR worker's own time for this result (finals and partials carry it)."""
    from_finalize: bool = False
    """A final of a segment the client's ``Finalize`` closed."""


@dataclass(frozen=True)
class Region:
    """Ground-truth speech: from ``start`` to ``end``, seconds of session audio."""

    start: float
    end: float


@dataclass(frozen=True)
class RegionLatency:
    region: Region
    first_partial: float | None
    """Seconds from sending the onset to the first partial overlapping the region."""
    first_text: float | None
    """The same for the first partial *or* final (what a user first sees)."""
    final: float | None
    """Seconds from sending the end of speech to the final whose segment spans it."""


class SendLog:
    """When each audio position left the client: ``(audio seconds sent so far, clock)`` pairs in
    sending order. :meth:`sent_at` is the clock of the first frame that carried sample ``t``."""

    def __init__(self, entries: Sequence[tuple[float, float]]) -> None:
        self._audio = [a for a, _ in entries]
        self._clock = [c for _, c in entries]

    def sent_at(self, t: float) -> float | None:
        i = bisect.bisect_left(self._audio, t)
        return self._clock[i] if i < len(self._clock) else None


def region_latencies(
    regions: Sequence[Region], messages: Sequence[Message], sent: SendLog
) -> list[RegionLatency]:
    """Per ground-truth region: first-partial, first-text and final latency (None when nothing
    matched, e.g. no partial for a short utterance, or a missed utterance)."""
    by_time = sorted(messages, key=lambda m: m.received)
    out = []
    for reg in regions:
        onset, end = sent.sent_at(reg.start), sent.sent_at(reg.end)
        overlapping = [m for m in by_time if m.start <= reg.end and m.end >= reg.start]
        partial = next((m for m in overlapping if m.type == "partial"), None)
        first = overlapping[0] if overlapping else None
        # the final of the region's end: the last of the finals overlapping the region (a
        # region cut at the maximum length has several). The segment may end a little before
        # the ground truth does: the service keeps VAD_SPEECH_PAD_END_MS after *its* end of speech
        ends = [
            m
            for m in by_time
            if m.type == "final" and m.start < reg.end and m.end + END_TOLERANCE_S > reg.start
        ]
        final = max(ends, key=lambda m: (m.start, -m.received), default=None)
        out.append(
            RegionLatency(
                reg,
                None if partial is None or onset is None else partial.received - onset,
                None if first is None or onset is None else first.received - onset,
                None if final is None or end is None else final.received - end,
            )
        )
    return out


def merge_regions(regions: Sequence[Region], min_gap: float) -> list[Region]:
    """Join regions separated by less than ``min_gap`` seconds (sorted by start)."""
    merged: list[Region] = []
    for reg in sorted(regions, key=lambda r: r.start):
        if merged and reg.start - merged[-1].end < min_gap:
            merged[-1] = Region(merged[-1].start, max(merged[-1].end, reg.end))
        else:
            merged.append(reg)
    return merged


def rate(audio_seconds: float, wall_seconds: float) -> float:
    """Audio seconds processed per wall second."""
    return audio_seconds / wall_seconds if wall_seconds > 0 else float("nan")


def linearity(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """Least-squares line through (x, y) and how far the worst point is from it (relative to
    the largest y): a quick answer to "does this grow linearly?"."""
    n = len(xs)
    if n < 2:
        return {"slope": float("nan"), "intercept": float("nan"), "max_rel_dev": float("nan")}
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    icpt = my - slope * mx
    top = max(abs(y) for y in ys) or 1.0
    dev = max(abs(y - (slope * x + icpt)) for x, y in zip(xs, ys, strict=True)) / top
    return {"slope": slope, "intercept": icpt, "max_rel_dev": dev}
