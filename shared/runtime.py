"""What every worker process shares: signal handling, task hygiene and the metrics endpoint."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


def install_signal_handlers(stop: asyncio.Event) -> None:
    """First SIGTERM/SIGINT sets ``stop`` (drain and exit 0); a second one exits at once."""
    loop = asyncio.get_running_loop()

    def _on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        log.info("signal %s: draining", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig)
    install_task_dump()


def await_chain(task: asyncio.Task[Any]) -> str:
    """Where a task is waiting: each coroutine of its ``await`` chain (``file:line function``),
    outermost first, then what the innermost one awaits (a future, a sleep)."""
    if task.done():
        return "(done)"
    hops: list[str] = []
    obj: Any = task.get_coro()
    for _ in range(64):  # bounded: a chain is a few dozen coroutines at most
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        hops.append(f"{os.path.basename(code.co_filename)}:{frame.f_lineno} {code.co_name}")
        nxt = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
        if nxt is None:
            break
        obj = nxt
    else:
        hops.append("…")
    if obj is not None and getattr(obj, "cr_frame", None) is None and hops:
        # what the innermost coroutine awaits: a future (C asyncio's iterator over one)
        hops.append("Future" if type(obj).__name__ == "FutureIter" else type(obj).__name__)
    return " > ".join(hops) or "(no frame)"


TASK_DUMP = "task dump (SIGUSR1)"
"""The line that starts a task dump in the log."""


def dump_tasks() -> None:
    """Log one line per task of the running loop saying where it waits (SIGUSR1)."""
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    log.warning("%s: %d tasks", TASK_DUMP, len(tasks))
    for task in tasks:
        log.warning("task %s: %s", task.get_name(), await_chain(task))


def install_task_dump() -> None:
    """``kill -USR1 <pid>`` logs where each asyncio task of the process waits: what a process
    that stopped making progress (a session that never ends, a worker that takes nothing) is
    stuck on, without stopping it. Only a loop of the main thread can have signal handlers: an
    app run in another thread (a test client's) goes without."""
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
    except (RuntimeError, ValueError):
        log.debug("not the main thread: no SIGUSR1 task dump")


class TaskSet:
    """Keeps references to background tasks and surfaces their exceptions in the log."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def cancel_all(self, timeout: float = 5.0) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)


async def run_with_grace(
    work: Coroutine[Any, Any, None], stop: asyncio.Event, grace: float
) -> None:
    """Run a worker loop that drains when ``stop`` is set; if it is still busy ``grace`` seconds
    after the signal, log what is stuck and exit non-zero (its pending work is reclaimed by other
    workers)."""
    task = asyncio.create_task(work, name="worker-loop")
    stopped = asyncio.create_task(stop.wait(), name="stop-wait")
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            log.error("still busy %.0fs after the stop signal: exiting with work pending", grace)
            os._exit(1)
    stopped.cancel()
    task.result()


def start_metrics_server(port: int) -> None:
    if port:
        from prometheus_client import start_http_server

        start_http_server(port)
        log.info("metrics on :%d/metrics", port)


def run_worker(role: str, settings: Any, amain: Callable[[Any], Coroutine[Any, Any, None]]) -> None:
    """A worker process's ``main``: logs (role and worker name on every line) and traces for
    ``role``, then ``amain(settings)`` until it returns; traces are flushed on the way out."""
    from shared import tracing
    from shared.logs import configure

    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # until the loop dumps tasks on it
    configure(settings.log_level, settings.log_format, role, settings.consumer_name)
    tracing.configure(settings.otlp_traces_endpoint, role, settings.consumer_name)
    try:
        asyncio.run(amain(settings))
    finally:
        tracing.shutdown()
