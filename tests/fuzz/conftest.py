"""The stack the fuzz tests hammer: one gateway, one VAD and one ASR worker, real processes on the
test redis-server, started once for the package (the model loads once), and a healthy session
that runs beside the fuzz and must still get its finals."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from shared.keys import Keys
from tests.conftest import Process, librispeech, wait_http
from whisper_streaming.evaluation import wer
from whisper_streaming.replay import ReplayResult, load_pcm, stream_pcm
from whisper_streaming.up import EmbeddedRedis, free_port

MAX_FRAME_BYTES = 64_000
"""Small, so frames around the limit are cheap to send (2 s of 16 kHz PCM16)."""

HEARTBEAT_TTL_S = 3.0

ENV = {
    "HEARTBEAT_INTERVAL_S": "0.5",
    "HEARTBEAT_TTL_S": str(HEARTBEAT_TTL_S),
    "ASR_CPU_THREADS": "1",
    "AUTH_ENABLED": "false",
    "MAX_FRAME_BYTES": str(MAX_FRAME_BYTES),
    # a job that fails is retried once, soon: the fuzz sees it dead-lettered within seconds
    "ASR_CLAIM_IDLE_MS": "2000",
    "ASR_MAX_DELIVERIES": "2",
    "EOF_TIMEOUT_S": "20",
    "FIRST_AUDIO_TIMEOUT_S": "10",
}

HEALTHY_UTTERANCE = "2830-3980-0043"
MAX_WER = 0.25


@dataclass
class FuzzStack:
    http: str
    ws: str
    keys: Keys
    procs: dict[str, Process]
    r: redis.Redis

    def check_alive(self) -> None:
        """Every process runs and every worker's heartbeat is fresh."""
        for name, p in self.procs.items():
            assert p.alive(), f"{name} died:\n{p.log()[-4000:]}"
        now = time.time()
        for role, name in (("vad", "vad-0"), ("asr", "asr-0")):
            beat = self.r.zscore(self.keys.heartbeats(role), name)
            assert beat is not None and now - beat < HEARTBEAT_TTL_S, (role, beat, now)
        with urllib.request.urlopen(self.http + "/healthz", timeout=10) as resp:
            assert resp.status == 200


@pytest.fixture(scope="package")
def fuzz_stack(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzStack]:
    log_dir: Path = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    prefix = f"fz{uuid.uuid4().hex[:6]}:"
    env = ENV | {"REDIS_URL": redis_server.url, "KEY_PREFIX": prefix, "PORT": str(port)}
    procs = {
        name: Process(role, env | {"CONSUMER_NAME": name}, log_dir, name)
        for name, role in (("asr-0", "asr-worker"), ("vad-0", "vad-worker"), ("gw-0", "gateway"))
    }
    r = redis.Redis.from_url(redis_server.url)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", 180, list(procs.values()))
        yield FuzzStack(
            f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", Keys(prefix), procs, r
        )
    finally:
        for p in reversed(procs.values()):
            p.stop()
        r.close()


@dataclass
class Healthy:
    """A real LibriSpeech utterance streamed through ``/v1/listen`` at real time, again and again,
    in a thread of its own while the fuzz runs; :meth:`check` says each run got its finals."""

    url: str
    pcm: bytes = b""
    reference: str = ""
    runs: list[ReplayResult] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        utt = next(u for u in librispeech() if u.utt_id == HEALTHY_UTTERANCE)
        self.pcm, self.reference = load_pcm(utt.path), utt.reference

    def __enter__(self) -> Healthy:
        self._thread = threading.Thread(target=self._loop, name="healthy-session", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(180)
        if exc[0] is None:
            self._once()  # and a session after the fuzz: nothing it left behind gets in the way

    def _loop(self) -> None:
        while not self._stop.is_set() and not self.failures:
            self._once()

    def _once(self) -> None:
        try:
            run = stream_pcm(self.url + "/v1/listen?interim_results=false", self.pcm, speed=1.0)
            self.runs.append(asyncio.run(asyncio.wait_for(run, 120)))
        except Exception as exc:  # noqa: BLE001 (reported by check())
            self.failures.append(exc)

    def check(self) -> None:
        """Called after the ``with`` block: at least one complete run, each with its finals."""
        assert not self.failures, self.failures
        assert len(self.runs) >= 2, "the healthy session did not complete during the fuzz"
        for run in self.runs:
            assert run.close_code == 1000 and not run.errors, (run.close_code, run.errors)
            assert wer([(self.reference, run.text)]).wer <= MAX_WER, run.text
