"""whisper_streaming.procs: stopping real child processes (SIGTERM, then SIGKILL at a deadline)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from whisper_streaming.procs import ServiceProcess, spawn, stop_all, wait_all

# Each child installs its SIGTERM handler, then says "ready" (so no signal arrives before the
# handler is in place) and sleeps.
POLITE = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("ready", flush=True)
time.sleep(60)
"""
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(60)
"""


def start(code: str, log_dir: Path, name: str) -> ServiceProcess:
    p = spawn(name, [sys.executable, "-c", code], log_path=log_dir / f"{name}.log")
    deadline = time.monotonic() + 30
    while "ready" not in p.log():
        assert p.alive(), p.log()
        assert time.monotonic() < deadline, "child never got ready"
        time.sleep(0.02)
    return p


def test_stop_returns_the_exit_status_of_a_child_that_obeys_sigterm(tmp_path: Path) -> None:
    p = start(POLITE, tmp_path, "polite")
    assert p.alive()
    t0 = time.monotonic()
    assert p.stop(10) == 0
    assert time.monotonic() - t0 < 5
    assert not p.alive()
    assert p.stop(10) == 0  # already gone: no signal, same status
    assert p.tail(6) == "ready\n"


def test_stop_kills_a_child_that_ignores_sigterm_after_the_timeout(tmp_path: Path) -> None:
    p = start(STUBBORN, tmp_path, "stubborn")
    t0 = time.monotonic()
    assert p.stop(0.5) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - t0 < 5
    assert not p.alive()


def test_stop_all_shares_one_deadline_and_kills_the_leftovers(tmp_path: Path) -> None:
    procs = [
        start(STUBBORN, tmp_path, "stubborn-0"),
        start(POLITE, tmp_path, "polite"),
        start(STUBBORN, tmp_path, "stubborn-1"),
    ]
    t0 = time.monotonic()
    stop_all(procs, 2.0)
    took = time.monotonic() - t0
    # one deadline for all: about 2 s, not 2 s per stubborn child
    assert 2.0 <= took < 3.5, took
    assert [p.proc.returncode for p in procs] == [-signal.SIGKILL, 0, -signal.SIGKILL]
    assert not any(p.alive() for p in procs)


def test_wait_all_does_not_signal_again(tmp_path: Path) -> None:
    p = start(POLITE, tmp_path, "polite")
    gone = start(POLITE, tmp_path, "gone")
    assert gone.kill() == -signal.SIGKILL
    p.terminate()
    wait_all([gone, p], 5)
    assert (gone.proc.returncode, p.proc.returncode) == (-signal.SIGKILL, 0)


def test_spawn_appends_to_the_log_when_asked(tmp_path: Path) -> None:
    log = tmp_path / "role.log"
    for _ in range(2):
        p = spawn("role", [sys.executable, "-c", "print('hello')"], log_path=log, append=True)
        assert p.proc.wait(10) == 0
    assert log.read_text() == "hello\nhello\n"
    p = spawn("role", [sys.executable, "-c", "print('again')"], log_path=log)
    p.proc.wait(10)
    assert p.log() == "again\n"
