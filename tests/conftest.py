"""Shared fixtures: the corpus, a real redis-server on a free port, worker processes and the
whole service started as a user would start it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from shared.runtime import TASK_DUMP
from whisper_streaming.corpus import Utterance, corpus_dir, librispeech  # noqa: F401 (re-exported)
from whisper_streaming.procs import ServiceProcess
from whisper_streaming.procs import spawn as spawn_process
from whisper_streaming.up import EmbeddedRedis, free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def corpus() -> Path:
    return corpus_dir()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis_client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def key_prefix() -> str:
    """A namespace of its own for each test, so tests sharing the Redis never see each other."""
    return f"t{uuid.uuid4().hex[:8]}:"


class Process(ServiceProcess):
    """A service process (``whisper-streaming ROLE``) with its output captured to a file:
    ``alive()``, ``log()``, ``stop(timeout)`` (SIGTERM, then SIGKILL), ``kill()``, ``proc``."""

    def __init__(self, role: str, env: dict[str, str], log_dir: Path, name: str | None = None):
        full_env = dict(os.environ) | env
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        log_path = log_dir / f"{name or role}-{uuid.uuid4().hex[:6]}.log"
        started = spawn_process(role, env=full_env, cwd=REPO, log_path=log_path)
        super().__init__(role, started.proc, log_path)


SPAWNED = pytest.StashKey[list["Process"]]()
"""The processes a test started with :func:`spawn` (their logs go into its report if it fails)."""


@pytest.fixture
def spawn(
    redis_server: EmbeddedRedis, key_prefix: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator:
    """Start worker/gateway processes in this test's namespace; stopped at teardown."""
    started: list[Process] = []
    request.node.stash[SPAWNED] = started

    def _spawn(role: str, **env: str) -> Process:
        base = {
            "REDIS_URL": redis_server.url,
            "KEY_PREFIX": key_prefix,
            "CONSUMER_NAME": f"{role}-{len(started)}",
            "HEARTBEAT_INTERVAL_S": "0.5",
            "HEARTBEAT_TTL_S": "3",
            "AUTH_ENABLED": "false",
        }
        p = Process(role, base | env, tmp_path)
        started.append(p)
        return p

    yield _spawn
    for p in started:
        p.stop()


async def wait_reclaimed(
    survivor: Process, r: aioredis.Redis, jobs: str, victim: str, timeout: float = 30.0
) -> None:
    """Wait (bounded) until ``survivor`` has logged a reclaim and the killed ``victim`` holds
    nothing in the ASR group of the job stream ``jobs``."""
    from shared.keys import ASR_GROUP

    deadline = time.monotonic() + timeout
    while True:
        held = await r.xpending_range(jobs, ASR_GROUP, "-", "+", 10, victim)
        if "reclaimed job" in survivor.log() and not held:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{victim}'s jobs were not reclaimed in {timeout:.0f} s: {held}")
        await asyncio.sleep(0.2)


def wait_http(url: str, timeout: float = 60.0, procs: list[Process] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for p in procs or []:
            if not p.alive():
                raise RuntimeError(f"{p.role} exited early:\n{p.log()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s: {last}")


@dataclass
class Service:
    """A running stack: gateway + workers against the test Redis."""

    http: str
    ws: str
    redis_url: str
    key_prefix: str
    procs: list[Process]


@contextmanager
def running_service(
    redis_server: EmbeddedRedis, log_dir: Path, asr: list[dict[str, str]], prefix: str = "svc"
) -> Iterator[Service]:
    """One gateway, one VAD worker and an ASR worker per entry of ``asr`` (its own settings)
    against the test Redis, in a namespace of their own; stopped on exit."""
    port = free_port()
    prefix = f"{prefix}{uuid.uuid4().hex[:6]}:"
    env = {
        "REDIS_URL": redis_server.url,
        "KEY_PREFIX": prefix,
        "PORT": str(port),
        "HEARTBEAT_INTERVAL_S": "0.5",
        "HEARTBEAT_TTL_S": "3",
        "ASR_CPU_THREADS": "1",
        "AUTH_ENABLED": "false",
    }
    procs = [
        Process("asr-worker", env | {"CONSUMER_NAME": f"asr-{i}"} | extra, log_dir, f"asr-{i}")
        for i, extra in enumerate(asr)
    ] + [
        Process("vad-worker", env | {"CONSUMER_NAME": "vad-0"}, log_dir, "vad-0"),
        Process("gateway", env | {"CONSUMER_NAME": "gw-0"}, log_dir, "gateway"),
    ]
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", 180, procs)
        yield Service(
            f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", redis_server.url, prefix, procs
        )
    finally:
        for p in reversed(procs):
            p.stop()


LOG_TAIL_CHARS = 1500
"""How much of each service process's log a failed test's report carries."""
TASK_DUMP_CHARS = 4000
"""How much of each live process's task dump (SIGUSR1, shared/runtime.py) it carries."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that ran service processes (a :class:`Service` fixture, or :func:`spawn`)
    reports the tail of each one's log (CI shows the end of the output, not the files the
    processes wrote), and, for each one still running, where its asyncio tasks wait (the
    SIGUSR1 task dump): what a process that stopped making progress is stuck on."""
    report = yield
    if report.failed and call.when == "call":
        procs = [
            (name, p)
            for name, value in getattr(item, "funcargs", {}).items()
            if isinstance(value, Service)
            for p in value.procs
        ] + [("spawn", p) for p in item.stash.get(SPAWNED, [])]
        alive = [p for _name, p in procs if p.alive()]
        for p in alive:
            os.kill(p.pid, signal.SIGUSR1)
        if alive:
            time.sleep(1.0)  # each process logs its dump from its own loop
        for name, p in procs:
            state = "alive" if p.alive() else f"exited {p.proc.poll()}"
            text = p.log()
            cut = text.rfind(TASK_DUMP) if p in alive else -1
            before, dump = (text, "") if cut < 0 else (text[:cut], text[cut:])
            report.sections.append(
                (f"{name}: {p.role} ({state}), log tail", before[-LOG_TAIL_CHARS:])
            )
            if dump:
                report.sections.append((f"{name}: {p.role}, task dump", dump[:TASK_DUMP_CHARS]))
    return report


@pytest.fixture(scope="session")
def service(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The service as ``whisper-streaming up`` runs it (one gateway, one VAD and two ASR workers),
    shared by the end-to-end tests; each test's sessions are isolated by their session ids."""
    with running_service(redis_server, tmp_path_factory.mktemp("service"), [{}, {}]) as svc:
        yield svc
