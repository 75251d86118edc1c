"""How ``up`` keeps a single box running: a crashed child is restarted with backoff.

One ASR worker dying (an OOM, a segfault in a native library) used to stop the whole service;
now :func:`supervise` restarts it, and the embedded redis-server too (with AOF, on the same port
and data directory, so the streams survive). :class:`Backoff` is the pure policy: 1 s, 2 s, 4 s …
up to 30 s between restarts of the same child, back to 1 s once it has run for a minute.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from whisper_streaming.procs import ServiceProcess

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
HEALTHY_AFTER_S = 60.0


@dataclass
class Backoff:
    """Restart delays of one child. Pure: time is passed in."""

    failures: int = 0
    started_at: float = 0.0

    def started(self, now: float) -> None:
        self.started_at = now

    def delay(self, now: float) -> float:
        """The wait before the next restart, after a crash at ``now``."""
        if now - self.started_at >= HEALTHY_AFTER_S:
            self.failures = 0  # it ran long enough: this is a new, unrelated crash
        delay = min(MAX_DELAY_S, FIRST_DELAY_S * 2**self.failures)
        self.failures += 1
        return delay


@dataclass
class Watched:
    """A child and how to start it again."""

    name: str
    process: Callable[[], ServiceProcess | None]  # the current process (None: not running)
    restart: Callable[[], None]
    backoff: Backoff = field(default_factory=Backoff)
    due: float | None = None  # when the pending restart happens


def supervise(watched: list[Watched], stopping: Callable[[], bool], poll_s: float = 0.5) -> None:
    """Until ``stopping()``: restart any child that exited, after its backoff, and log it."""
    now = time.monotonic()
    for w in watched:
        w.backoff.started(now)
    while not stopping():
        now = time.monotonic()
        for w in watched:
            proc = w.process()
            if w.due is None and proc is not None and not proc.alive():
                delay = w.backoff.delay(now)
                w.due = now + delay
                print(f"{w.name} exited with {proc.proc.returncode}; restarting in {delay:.0f} s "
                      f"(restart {w.backoff.failures})", file=sys.stderr, flush=True)  # fmt: skip
            elif w.due is not None and now >= w.due:
                w.due = None
                try:
                    w.restart()
                except Exception as exc:  # noqa: BLE001 - keep supervising the others
                    print(f"{w.name} could not be restarted: {exc}", file=sys.stderr, flush=True)
                    w.due = now + w.backoff.delay(now)
                    continue
                w.backoff.started(now)
                print(f"{w.name} restarted", file=sys.stderr, flush=True)
        time.sleep(poll_s)
