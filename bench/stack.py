"""The service under test: an embedded redis-server, N ASR workers, M VAD workers and one
gateway, each a real ``python -m whisper_streaming.cli ROLE`` process on loopback, free ports.

Every child dies with the benchmark (PR_SET_PDEATHSIG, see :mod:`whisper_streaming.procs`), and
:meth:`BenchStack.stop` (run from a ``with`` block, so on errors and Ctrl-C too) stops them with
SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from bench.machine import REPO
from shared.keys import ASR_JOBS_STREAM, ASR_PARTIALS_STREAM
from whisper_streaming.procs import ServiceProcess, process_tree, spawn, stop_all
from whisper_streaming.up import free_port

Proc = ServiceProcess  # one process of the stack: ``role``, ``proc``, ``log_path``, ``tail()``


@dataclass
class StackConfig:
    asr_workers: int = 1
    vad_workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    """Service settings (ASR_CPU_THREADS, ASR_BEAM_SIZE, COALESCE_MS, VAD_MIN_SILENCE_MS …)."""

    def label(self) -> str:
        threads = self.env.get("ASR_CPU_THREADS", "0")
        threads = "all-cores" if threads == "0" else threads
        knobs = " ".join(
            f"{k}={v}"
            for k, v in sorted(self.env.items())
            if k not in ("ASR_CPU_THREADS", "ASR_MODEL")
        )
        return (
            f"{self.asr_workers} ASR worker(s) × {threads} threads, {self.vad_workers} VAD, "
            f"1 gateway, {self.env.get('ASR_MODEL') or 'tiny.en'} int8 CPU"
            + (f", {knobs}" if knobs else "")
        )


class BenchStack:
    """``with BenchStack(cfg) as stack:`` → ``stack.ws_url``, ``stack.redis``, ``stack.procs``."""

    def __init__(self, cfg: StackConfig, ready_timeout: float = 120.0) -> None:
        self.cfg = cfg
        self.ready_timeout = ready_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="whisper-bench-"))
        self.procs: list[Proc] = []
        self.redis_port = free_port()
        self.port = free_port()
        self.redis: redis.Redis | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/listen"

    def _spawn(self, role: str, cmd: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = spawn(
            role,
            cmd,
            env=env,
            cwd=REPO,
            log_path=self.dir / f"{role}.log",
            own_group=True,  # a terminal Ctrl-C reaches only the benchmark
            die_with_parent=True,
        )
        self.procs.append(proc)
        return proc

    def __enter__(self) -> BenchStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found (make install installs it)")
        self._spawn(
            "redis",
            [
                binary, "--port", str(self.redis_port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--loglevel", "warning",
            ],
        )  # fmt: skip
        self.redis = redis.Redis(port=self.redis_port)
        self._wait(lambda: bool(self.redis and self.redis.ping()), "redis")
        env = (
            dict(os.environ)
            | {
                "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
                "HEARTBEAT_INTERVAL_S": "1",
                "HEARTBEAT_TTL_S": "5",
                "AUTH_ENABLED": "false",  # loopback only, as `up` runs in development mode
            }
            | self.cfg.env
        )
        cli = [sys.executable, "-m", "whisper_streaming.cli"]
        host = socket.gethostname()
        for i in range(self.cfg.asr_workers):
            own = {"CONSUMER_NAME": f"{host}-asr-{i}"}
            self._spawn(f"asr-{i}", cli + ["asr-worker"], env | own)
        for i in range(self.cfg.vad_workers):
            self._spawn(
                f"vad-{i}", cli + ["vad-worker"], env | {"CONSUMER_NAME": f"{host}-vad-{i}"}
            )
        self._spawn("gateway", cli + ["gateway"], env | {"CONSUMER_NAME": f"{host}-gw"})
        self._wait(self._ready, "gateway /readyz")
        # /readyz wants one worker of each kind; wait for all of them to have said hello.
        self._wait(self._all_heartbeats, "all worker heartbeats")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def _all_heartbeats(self) -> bool:
        assert self.redis is not None
        asr = self.redis.zcard("heartbeats:asr")
        vad = self.redis.zcard("heartbeats:vad")
        return bool(asr >= self.cfg.asr_workers and vad >= self.cfg.vad_workers)

    def _wait(self, check: Any, what: str) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if not p.alive():
                    raise RuntimeError(f"{p.role} exited with {p.proc.returncode}:\n{p.tail()}")
            with contextlib.suppress(redis.RedisError, OSError):
                if check():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{what} not ready after {self.ready_timeout}s")

    def dead(self) -> list[Proc]:
        return [p for p in self.procs if not p.alive()]

    def stop(self) -> None:
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.close()
        stop_all([p for p in self.procs if p.role != "redis"], 25)
        for p in self.procs:
            if p.role == "redis":  # last: the workers drain into it
                p.stop(5)
        self.procs.clear()
        keep = os.environ.get("BENCH_KEEP_LOGS")  # a directory: the service logs are copied there
        if keep:
            shutil.copytree(
                self.dir, keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.rdb")
            )
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- measurement ---------------------------------------------------------------------------

    def _trees(self) -> dict[str, list[psutil.Process]]:
        """Per role, its process and that process's children; roles whose process is gone are
        left out."""
        return {p.role: tree for p in self.procs if (tree := process_tree(p.pid))}

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds so far, per role (with the role's child processes)."""
        out = {}
        for role, tree in self._trees().items():
            with contextlib.suppress(psutil.Error):
                out[role] = sum(t.user + t.system for t in (q.cpu_times() for q in tree))
        return out

    def rss_mib(self) -> dict[str, float]:
        out = {}
        for role, tree in self._trees().items():
            with contextlib.suppress(psutil.Error):
                out[role] = sum(q.memory_info().rss for q in tree) / 2**20
        return out

    def redis_used_mib(self) -> float:
        assert self.redis is not None
        return float(self.redis.info("memory")["used_memory"]) / 2**20

    def backlog(self) -> int:
        assert self.redis is not None
        streams = [
            *self.redis.scan_iter(match=f"{ASR_JOBS_STREAM}:*", _type="stream"),
            *self.redis.scan_iter(match=f"{ASR_PARTIALS_STREAM}:*", _type="stream"),
        ]  # every model pool's
        return sum(int(self.redis.xlen(s)) for s in streams)


class Sampler:
    """Samples service RSS and Redis memory every ``every`` seconds between start and stop, and
    the CPU seconds each process spent in between."""

    def __init__(self, stack: BenchStack, every: float = 0.5) -> None:
        self.stack = stack
        self.every = every
        self.peak_rss: dict[str, float] = {}
        self.peak_redis_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu0: dict[str, float] = {}
        self._t0 = 0.0
        self._me = psutil.Process()
        self._me0 = 0.0

    def _run(self) -> None:
        client = redis.Redis(port=self.stack.redis_port)
        try:
            while not self._stop.wait(self.every):
                for role, mib in self.stack.rss_mib().items():
                    self.peak_rss[role] = max(self.peak_rss.get(role, 0.0), mib)
                with contextlib.suppress(redis.RedisError):
                    used = float(client.info("memory")["used_memory"]) / 2**20
                    self.peak_redis_mib = max(self.peak_redis_mib, used)
        finally:
            client.close()

    def __enter__(self) -> Sampler:
        self._cpu0 = self.stack.cpu_seconds()
        t = self._me.cpu_times()
        self._me0 = t.user + t.system
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.wall = time.monotonic() - self._t0
        cpu1 = self.stack.cpu_seconds()
        self.cpu = {r: round(cpu1[r] - self._cpu0.get(r, 0.0), 2) for r in cpu1}
        t = self._me.cpu_times()
        self.client_cpu = round(t.user + t.system - self._me0, 2)

    def result(self) -> dict[str, Any]:
        total = sum(self.cpu.values())
        return {
            "wall_s": round(self.wall, 2),
            "cpu_s": self.cpu,
            "cpu_s_total": round(total, 2),
            "cores_busy": round(total / self.wall, 2) if self.wall else None,
            "client_cpu_s": self.client_cpu,
            "peak_rss_mib": {k: round(v, 1) for k, v in self.peak_rss.items()},
            "peak_rss_mib_total": round(sum(self.peak_rss.values()), 1),
            "peak_redis_used_mib": round(self.peak_redis_mib, 2),
        }
