"""Service processes: start one (``python -m whisper_streaming.cli ROLE`` or any command), send its
output to a file, check it, read its log, and stop it: SIGTERM, then SIGKILL after a timeout.

Used by ``up``, the soak test, the benchmark stack, the autoscale demo and the test fixtures.
A worker drains on its first SIGTERM and exits at once on a second one: to wait for processes
already sent one, use :func:`wait_all` (not :func:`stop_all` or :meth:`ServiceProcess.stop`).
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


def set_pdeathsig(sig: int = signal.SIGTERM) -> None:
    """Have Linux send this process ``sig`` when its parent dies (runs in the child: between
    fork and exec, or first thing in a multiprocessing child)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


def process_tree(pid: int) -> list[Any]:
    """The ``psutil.Process`` of ``pid`` and of its live descendants (an ASR worker's partial
    decoder), for CPU and memory figures; empty if it is gone. psutil is a dev dependency: the
    benchmarks and the soak test use this, the service does not."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


@dataclass(eq=False)
class ServiceProcess:
    """A started process: its role, its ``Popen``, and the file its output goes to (if any).
    Compared by identity, so it can be kept in sets and as a dict key."""

    role: str
    proc: subprocess.Popen[bytes]
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        """Whether it is still running."""
        return self.proc.poll() is None

    def log(self) -> str:
        """Its whole log so far ('' without a log file)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, n: int = 3000) -> str:
        """The last ``n`` characters of its log."""
        return self.log()[-n:]

    def terminate(self) -> None:
        """Send SIGTERM if it is still running (a worker then drains and exits)."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def wait_or_kill(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for it to exit, then SIGKILL it; its exit status."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; its exit status."""
        self.terminate()
        return self.wait_or_kill(timeout)

    def kill(self) -> int:
        """SIGKILL (no draining) and reap it; its exit status."""
        self.proc.kill()
        return self.proc.wait()


def cli_command(role: str) -> list[str]:
    """``python -m whisper_streaming.cli ROLE`` with this interpreter."""
    return [sys.executable, "-m", "whisper_streaming.cli", role]


def spawn(
    role: str,
    cmd: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    log_path: Path | None = None,
    append: bool = False,
    own_group: bool = False,
    die_with_parent: bool = False,
) -> ServiceProcess:
    """Start ``cmd`` (by default the CLI ``role``).

    ``env`` replaces the environment (``None``: inherit). With ``log_path`` stdout and stderr go to
    that file (truncated, or appended to with ``append``); without it they are the terminal's.
    ``own_group`` starts a new session, so a Ctrl-C in the terminal does not reach it;
    ``die_with_parent`` has Linux SIGTERM it when this process dies (PR_SET_PDEATHSIG).
    """
    args = list(cmd) if cmd is not None else cli_command(role)
    log = log_path.open("ab" if append else "wb") if log_path is not None else None
    try:
        proc = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT if log is not None else None,
            start_new_session=own_group,
            preexec_fn=set_pdeathsig if die_with_parent else None,
        )
    finally:
        if log is not None:
            log.close()  # the child holds its own copy
    return ServiceProcess(role, proc, log_path)


def wait_all(procs: Iterable[ServiceProcess], grace: float) -> None:
    """Wait for every process until one shared deadline ``grace`` seconds away (at least 0.1 s
    each), and SIGKILL those still running then."""
    deadline = time.monotonic() + grace
    for p in procs:
        p.wait_or_kill(max(0.1, deadline - time.monotonic()))


def stop_all(procs: Iterable[ServiceProcess], grace: float) -> None:
    """SIGTERM every process still running, the last started first, then :func:`wait_all`."""
    procs = list(procs)
    for p in reversed(procs):
        p.terminate()
    wait_all(procs, grace)
