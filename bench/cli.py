"""Command-line pieces shared by the benchmark entry points."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

from bench.machine import git_rev, load1, machine, now
from bench.stack import StackConfig


def add_quiet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quiet-load",
        type=float,
        default=1.0,
        help="before starting, wait for the 1-minute load average to drop below this …",
    )
    p.add_argument("--quiet-wait", type=float, default=120.0, help="… for at most this long (s)")


def wait_quiet(args: argparse.Namespace) -> dict[str, float]:
    """Other work on the machine skews every timing: wait a while for it to calm down, and
    record what the load was when we started anyway."""
    started = time.monotonic()
    while load1() >= args.quiet_load and time.monotonic() - started < args.quiet_wait:
        time.sleep(5)
    return {"waited_s": round(time.monotonic() - started), "load_when_started": load1()}


def add_stack_args(p: argparse.ArgumentParser) -> None:
    add_quiet_args(p)
    p.add_argument(
        "--asr-workers",
        type=lambda v: 0 if v == "auto" else int(v),
        default=0,
        help="auto (default): what `make run` starts on this machine (whisper_streaming/up.py)",
    )
    p.add_argument("--vad-workers", type=int, default=1)
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="service setting for every process (repeatable), e.g. ASR_CPU_THREADS=1",
    )


def stack_config(args: argparse.Namespace) -> StackConfig:
    env = dict(kv.split("=", 1) for kv in args.env)
    workers = args.asr_workers
    if not workers:  # as `up` would: ASR_CPU_THREADS as given, or shared out
        import os

        from whisper_streaming.up import auto_asr_workers

        device = env.get("ASR_DEVICE", "cpu")  # the benchmarks' stack is tiny.en on the CPU
        given = int(env.get("ASR_CPU_THREADS", "0"))
        workers, threads = auto_asr_workers(device, os.cpu_count() or 1, given)
        if threads:
            env["ASR_CPU_THREADS"] = str(threads)
    return StackConfig(
        asr_workers=workers,
        vad_workers=args.vad_workers,
        env=env,
    )


def sigterm_as_interrupt() -> None:
    """SIGTERM runs the same clean-up as Ctrl-C."""

    def _raise(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)


def meta(cfg: StackConfig) -> dict[str, Any]:
    return {
        "command": " ".join(["python -m", _module()] + sys.argv[1:]),
        "date": now(),
        "commit": git_rev(),
        "machine": machine(),
        "load_start": load1(),
        "stack": cfg.label(),
    }


def _module() -> str:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name.removesuffix(".__main__") if spec else sys.argv[0]


def finish(m: dict[str, Any]) -> None:
    m["load_end"] = load1()
