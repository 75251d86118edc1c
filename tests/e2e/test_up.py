"""``whisper-streaming up`` — what ``make run`` starts — with its embedded redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO, librispeech
from tests.e2e.test_low_latency_clients import refused
from tests.e2e.test_pools import GERMAN
from whisper_streaming.evaluation import wer
from whisper_streaming.replay import load_pcm, stream_pcm
from whisper_streaming.up import free_port

pytestmark = pytest.mark.e2e


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


@contextmanager
def running_up(tmp_path: Path, *args: str) -> Iterator[tuple[int, str]]:
    """``whisper-streaming up ARGS`` on a free port until it says it is up: its port and output so
    far; then Ctrl-C, and it must exit 0."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KEY_PREFIX")}
    env |= {"PORT": str(port), "PYTHONUNBUFFERED": "1"}
    path = tmp_path / "up.log"
    log = path.open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "whisper_streaming.cli", "up", *args],
        env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while "Whisper Streaming is up" not in path.read_text():
            assert proc.poll() is None, path.read_text()
            assert time.monotonic() < deadline, "not up in time"
            time.sleep(0.2)
        yield port, path.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        log.close()
    assert code == 0, path.read_text()


async def test_up_pool_options_start_the_pools_asked_for(tmp_path, corpus) -> None:
    """``--pool`` replaces the default pools: here English only, so German is refused."""
    with running_up(tmp_path, "--pool", "english=tiny.en:1") as (port, _out):
        ready = await pools_announced(port, {"english": 1})
        assert ready["asr_languages"] == ["en"]
        german = load_pcm(corpus / "other-languages" / GERMAN)
        error, others, code = await refused(f"ws://127.0.0.1:{port}/?lang=de", german)
        assert error["code"] == "unsupported_language" and others == [] and code == 1003


async def test_up_runs_the_whole_service_and_stops_cleanly(tmp_path) -> None:
    with running_up(tmp_path, "--asr-workers", "2") as (port, out):
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
    # every child and the embedded Redis are gone
    children = subprocess.run(["pgrep", "-f", f"redis-server.*:{redis_port}|--port {redis_port}"],
                              capture_output=True, text=True)  # fmt: skip
    assert children.stdout.strip() == ""
