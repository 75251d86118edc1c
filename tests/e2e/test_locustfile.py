"""Our locustfile's scenario (the predecessor's Locust test plus end-of-speech-to-final latency)
run against the service: the client logic always (no Locust needed), and Locust itself headless
for a few seconds when the optional ``load`` group is installed (``poetry install --with load``)."""

from __future__ import annotations

import ast
import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection, connect

from loadtest.predecessor import CHUNK_BYTES, SILENCE_FRAME, Run, Timeline
from tests.conftest import REPO, Service, librispeech
from whisper_streaming.evaluation import wer
from whisper_streaming.replay import load_pcm

pytestmark = pytest.mark.e2e

UTTERANCES = ("1089-134691-0000", "2830-3980-0043")
"""Two short held-out utterances that tiny.en gets right with a beam and greedy alike: this file
tests delivery; accuracy is measured on the whole held-out set (tests/e2e/test_pipeline.py)."""


class SyncWebsocket:
    """websockets' sync client behind the websocket-client methods the scenario uses."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[int] = []

    def send_binary(self, data: bytes) -> None:
        self.frames.append(len(data))
        self.ws.send(data)

    def send(self, data: str) -> None:
        self.ws.send(data)

    def recv(self) -> str | bytes:
        return self.ws.recv()

    def close(self) -> None:
        self.ws.close()


def test_timeline_finds_when_audio_was_sent() -> None:
    t = Timeline()
    t.sent(8000, 10.0)  # 0.25 s
    t.sent(8000, 10.25)  # 0.5 s
    assert t.sent_at(0.1) == 10.0 and t.sent_at(0.25) == 10.0 and t.sent_at(0.3) == 10.25
    assert t.sent_at(0.6) is None


def test_predecessor_scenario_against_the_service(service: Service) -> None:
    utts = {u.utt_id: u for u in librispeech()}
    files = [load_pcm(utts[i].path) for i in UTTERANCES]
    run = Run()
    with connect(service.ws + "/", max_size=None) as ws:
        conn = SyncWebsocket(ws)
        run.stream(conn, files, pace=4.0)  # 250 ms chunks every 62.5 ms: 4 x real time
    assert not run.errors
    expected = [min(CHUNK_BYTES, len(f) - i) for f in files for i in range(0, len(f), CHUNK_BYTES)]
    assert [n for n in conn.frames if n != len(SILENCE_FRAME)] == expected
    assert conn.frames.count(len(SILENCE_FRAME)) == len(files) == 2
    reference = " ".join(utts[i].reference for i in UTTERANCES)
    assert wer([(reference, " ".join(f.text for f in run.finals))]).wer <= 0.2
    assert run.finals and all(f.latency is not None and f.latency >= 0 for f in run.finals)
    ends = [f.end_of_speech for f in run.finals]
    assert ends == sorted(ends) and ends[-1] <= run.timeline.total_bytes / 32000


def test_locustfile_uses_the_scenario() -> None:
    tree = ast.parse((REPO / "locustfile.py").read_text())
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    imported = {a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names} | {
        a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names
    }
    assert "PredecessorClient" in classes
    assert {"Run", "load_files", "User", "events", "websocket"} <= imported


@pytest.mark.skipif(
    importlib.util.find_spec("locust") is None or importlib.util.find_spec("websocket") is None,
    reason="the optional load group is not installed (poetry install --with load)",
)
def test_locust_headless_reports_end_of_speech_latency(
    service: Service, corpus: Path, tmp_path: Path
) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "a.flac").symlink_to(next(u.path for u in librispeech() if u.utt_id == UTTERANCES[1]))
    env = dict(os.environ, LOAD_AUDIO_DIR=str(audio), LOAD_PACE="4", LOAD_MAX_FILES="1")
    cmd = [sys.executable, "-m", "locust", "-f", str(REPO / "locustfile.py"), "--headless",
           "--host", service.ws, "-u", "1", "-r", "1", "-t", "12s", "--stop-timeout", "30",
           "--csv", str(tmp_path / "load"), "--only-summary"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=90)
    with (tmp_path / "load_stats.csv").open() as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    assert "end_of_speech_to_final" in rows, proc.stderr[-3000:]
    assert int(rows["end_of_speech_to_final"]["Request Count"]) >= 1
    assert int(rows["session"]["Request Count"]) >= 1
    assert all(int(r["Failure Count"]) == 0 for r in rows.values()), proc.stderr[-3000:]
