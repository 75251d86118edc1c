"""Pure helpers of a gateway session: result reordering, frame coalescing, arrival times."""

from __future__ import annotations

import bisect
from typing import Generic, TypeVar

T = TypeVar("T")


class ReorderBuffer(Generic[T]):
    """Releases items in segment order (0, 1, 2, …) whatever order they arrive in; drops
    duplicates (a job retried after a worker died may be answered twice)."""

    def __init__(self, first: int = 0, max_held: int = 10_000) -> None:
        self.next = first
        self._held: dict[int, T] = {}
        self._max_held = max_held

    def push(self, segment: int, item: T) -> list[T]:
        if segment < self.next or segment in self._held:
            return []
        if len(self._held) >= self._max_held:
            raise OverflowError("too many results held back waiting for an earlier segment")
        self._held[segment] = item
        out: list[T] = []
        while self.next in self._held:
            out.append(self._held.pop(self.next))
            self.next += 1
        return out

    def missing(self, upto: int) -> list[int]:
        """The segments before ``upto`` neither released nor held: what a skip gives up on."""
        return [k for k in range(self.next, upto) if k not in self._held]

    def skip_to(self, segment: int) -> list[T]:
        """Give up on segments before ``segment``; release what is held from there on."""
        out = [self._held.pop(k) for k in sorted(self._held) if k < segment]
        self.next = max(self.next, segment)
        while self.next in self._held:
            out.append(self._held.pop(self.next))
            self.next += 1
        return out

    @property
    def waiting(self) -> int:
        return len(self._held)


class Coalescer:
    """Gathers small PCM frames into entries of at least ``target_bytes``, or whatever is there
    once the oldest byte has waited ``max_wait_s``."""

    def __init__(self, target_bytes: int, max_wait_s: float) -> None:
        self.target = target_bytes
        self.max_wait = max_wait_s
        self._parts: list[bytes] = []
        self._size = 0
        self._since: float | None = None

    def push(self, pcm: bytes, now: float) -> bytes | None:
        if pcm:
            if self._since is None:
                self._since = now
            self._parts.append(pcm)
            self._size += len(pcm)
        return self.take() if self._size >= self.target else None

    def due(self, now: float) -> bool:
        return self._since is not None and now - self._since >= self.max_wait

    def take(self) -> bytes | None:
        if not self._size:
            return None
        data = b"".join(self._parts)
        self._parts, self._size, self._since = [], 0, None
        return data

    @property
    def buffered(self) -> int:
        return self._size


class ArrivalClock:
    """Remembers when each stretch of session audio arrived, to measure latency from the
    moment the last sample of a segment reached the gateway."""

    def __init__(self, max_points: int = 100_000) -> None:
        self._samples: list[int] = []
        self._times: list[float] = []
        self._max = max_points

    def mark(self, total_samples: int, now: float) -> None:
        self._samples.append(total_samples)
        self._times.append(now)
        if len(self._samples) > self._max:
            del self._samples[: self._max // 2]
            del self._times[: self._max // 2]

    def arrival(self, sample: int) -> float | None:
        """When the audio up to ``sample`` had arrived (``None`` if unknown)."""
        i = bisect.bisect_left(self._samples, sample)
        if i >= len(self._samples):
            return self._times[-1] if self._times else None
        return self._times[i]


class FrameCounter:
    """Frames in the current one-second window (a window starts with the first frame after the
    last one ended): the per-session frame-rate limits count with it."""

    def __init__(self) -> None:
        self._window = 0.0
        self._frames = 0

    def count(self, now: float) -> int:
        """Count one frame at ``now``; return how many the current window holds."""
        if now - self._window >= 1.0:
            self._window, self._frames = now, 0
        self._frames += 1
        return self._frames

    def wait_s(self, now: float, limit: int) -> float:
        """Count one frame at ``now``; the seconds to hold it back so that no window holds more
        than ``limit`` (0 when it is within): waiting that long and reading nothing meanwhile is
        back-pressure on the client. Counts the held frame in the window it is let through in."""
        if self.count(now) <= limit:
            return 0.0
        wait = max(0.0, self._window + 1.0 - now)
        self._window, self._frames = now + wait, 1
        return wait
