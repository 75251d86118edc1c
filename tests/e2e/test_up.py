"""``whisper-streaming up`` — what ``make run`` starts — with its embedded redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, librispeech
from tests.e2e.test_low_latency_clients import refused
from tests.e2e.test_pools import GERMAN
from whisper_streaming.evaluation import wer
from whisper_streaming.replay import load_pcm, stream_pcm
from whisper_streaming.up import free_port

pytestmark = pytest.mark.e2e


def _start_up(tmp_path, port: int, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KEY_PREFIX")}
    env |= {"PORT": str(port), "PYTHONUNBUFFERED": "1", "HEARTBEAT_INTERVAL_S": "0.5",
            "HEARTBEAT_TTL_S": "3"}  # fmt: skip
    log_path = tmp_path / "up.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "whisper_streaming.cli", "up", "--data-dir", str(tmp_path / "redis"), *args],
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return proc, log_path


def _wait_log(proc: subprocess.Popen[bytes], log_path: Path, text: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while text not in (out := log_path.read_text()):
        assert proc.poll() is None, out
        assert time.monotonic() < deadline, f"{text!r} not seen:\n{out[-3000:]}"
        time.sleep(0.2)
    return out


async def pools_announced(port: int, pools: dict[str, int], timeout: float = 60) -> dict:
    """/readyz once every pool has its workers announced (readiness counts heartbeats only)."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz") as r:
            ready = json.load(r)
        if ready.get("asr_pools") == pools or time.monotonic() > deadline:
            assert ready.get("asr_pools") == pools, ready
            return dict(ready)
        await asyncio.sleep(0.3)


async def test_up_runs_the_whole_service_and_stops_cleanly(tmp_path) -> None:
    port = free_port()
    proc, log_path = _start_up(tmp_path, port, "--asr-workers", "2")
    try:
        out = _wait_log(proc, log_path, "Whisper Streaming is up")
        assert f"http://127.0.0.1:{port}" in out
        redis_port = int(re.search(r"embedded redis-server on redis://127.0.0.1:(\d+)", out)[1])
        # the default pools: English on tiny.en (--asr-workers of them), the rest on base
        assert "pool en: tiny.en × 2" in out and "pool multi: base × 1" in out
        ready = await pools_announced(port, {"en": 2, "multi": 1})
        assert ready["asr_workers"] == 3 and len(ready["asr_languages"]) > 90
        utt = next(u for u in librispeech() if u.utt_id == "8455-210777-0068")
        for language in ("en", None):  # English to tiny.en; detection to base
            result = await stream_pcm(
                f"ws://127.0.0.1:{port}/", load_pcm(utt.path), speed=0, language=language
            )
            assert wer([(utt.reference, result.text)]).wer <= 0.2
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    assert code == 0, log_path.read_text()
    # every child and the embedded Redis are gone
    children = subprocess.run(["pgrep", "-f", f"redis-server.*:{redis_port}|--port {redis_port}"],
                              capture_output=True, text=True)  # fmt: skip
    assert children.stdout.strip() == ""


async def test_up_pool_options_start_the_pools_asked_for(tmp_path, corpus) -> None:
    """``--pool`` replaces the default pools: here English only, so German is refused."""
    port = free_port()
    proc, log_path = _start_up(tmp_path, port, "--pool", "english=tiny.en:1")
    try:
        _wait_log(proc, log_path, "Whisper Streaming is up")
        ready = await pools_announced(port, {"english": 1})
        assert ready["asr_languages"] == ["en"]
        german = load_pcm(corpus / "other-languages" / GERMAN)
        error, others, code = await refused(f"ws://127.0.0.1:{port}/?lang=de", german)
        assert error["code"] == "unsupported_language" and others == [] and code == 1003
    finally:
        proc.send_signal(signal.SIGINT)
        status = proc.wait(30)
    assert status == 0, log_path.read_text()


def test_a_busy_port_is_refused_before_anything_starts(tmp_path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc, log_path = _start_up(tmp_path, port)
        assert proc.wait(30) == 2
    out = log_path.read_text()
    assert f"port {port} on 127.0.0.1 is already in use" in out
    assert "embedded redis-server" not in out and not (tmp_path / "redis").exists()


def test_crashed_children_and_redis_are_restarted_and_all_die_with_up(tmp_path) -> None:
    import psutil
    import redis as redis_sync

    port = free_port()
    proc, log_path = _start_up(tmp_path, port, "--pool", "en=tiny.en")  # one worker to kill
    try:
        out = _wait_log(proc, log_path, "Whisper Streaming is up")
        redis_url = re.search(r"embedded redis-server on (redis://\S+)", out)[1]
        supervisor = psutil.Process(proc.pid)

        def child(role: str) -> psutil.Process:
            return next(p for p in supervisor.children() if role in " ".join(p.cmdline()))

        # an ASR worker killed outright comes back, and the service is ready again
        asr = child("asr-worker")
        asr.kill()
        _wait_log(proc, log_path, "asr-worker en 0 restarted", 60)
        assert child("asr-worker").pid != asr.pid
        # Redis killed outright comes back on the same port with its data (AOF)
        r = redis_sync.Redis.from_url(redis_url)
        r.xadd("kept", {"v": "1"})
        time.sleep(1.5)  # appendfsync everysec
        child("redis-server").kill()
        _wait_log(proc, log_path, "redis-server restarted", 60)
        deadline = time.monotonic() + 30
        while True:
            try:
                assert r.xlen("kept") == 1
                break
            except redis_sync.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        r.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as resp:
                    if json.load(resp)["asr_workers"] >= 1:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "not ready again after the restarts"
            time.sleep(0.3)
        # `up` itself SIGKILLed (an OOM kill): no child is left serving the port
        children = supervisor.children(recursive=True)
        proc.kill()
        proc.wait(10)
        _, alive = psutil.wait_procs(children, timeout=40)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
