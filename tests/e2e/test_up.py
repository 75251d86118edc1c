"""``whisper-streaming up`` — what ``make run`` starts — with its embedded redis-server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import REPO, librispeech
from whisper_streaming.evaluation import wer
from whisper_streaming.replay import load_pcm, stream_pcm
from whisper_streaming.up import free_port

pytestmark = pytest.mark.e2e


async def test_up_runs_the_whole_service_and_stops_cleanly(tmp_path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KEY_PREFIX")}
    env |= {"PORT": str(port), "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "up.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "whisper_streaming.cli", "up", "--asr-workers", "2"],
        env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while "Whisper Streaming is up" not in (tmp_path / "up.log").read_text():
            assert proc.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, "not up in time"
            time.sleep(0.2)
        out = (tmp_path / "up.log").read_text()
        assert f"http://127.0.0.1:{port}" in out
        redis_port = int(re.search(r"embedded redis-server on redis://127.0.0.1:(\d+)", out)[1])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz") as r:
            assert json.load(r)["asr_workers"] == 2
        utt = next(u for u in librispeech() if u.utt_id == "8455-210777-0068")
        result = await stream_pcm(f"ws://127.0.0.1:{port}/", load_pcm(utt.path), speed=0)
        assert wer([(utt.reference, result.text)]).wer <= 0.2
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        log.close()
    assert code == 0, (tmp_path / "up.log").read_text()
    # every child and the embedded Redis are gone
    children = subprocess.run(["pgrep", "-f", f"redis-server.*:{redis_port}|--port {redis_port}"],
                              capture_output=True, text=True)  # fmt: skip
    assert children.stdout.strip() == ""
