"""LOG_FORMAT=json from real processes: every line of the gateway and the workers parses, names
its role and worker, a final's lines carry session_id/segment/stage/latency_ms, and health
probes leave no access-log line."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

from tests.conftest import free_port, librispeech, wait_http
from whisper_streaming.replay import load_pcm, stream_pcm


def lines(log: str) -> list[dict[str, Any]]:
    out = []
    for raw in log.splitlines():
        if raw.strip():
            parsed = json.loads(raw)  # a line that is not JSON fails the test here
            assert isinstance(parsed, dict), raw
            out.append(parsed)
    return out


async def test_json_log_lines_from_a_real_session(spawn) -> None:
    port = free_port()
    env = {"LOG_FORMAT": "json", "ASR_CPU_THREADS": "1"}
    asr = spawn("asr-worker", **env, CONSUMER_NAME="asr-a")
    vad = spawn("vad-worker", **env, CONSUMER_NAME="vad-a")
    gw = spawn("gateway", **env, CONSUMER_NAME="gw-a", PORT=str(port))
    http = f"http://127.0.0.1:{port}"
    await asyncio.to_thread(wait_http, http + "/readyz", 120, [asr, vad, gw])
    utt = librispeech(held_out_only=True)[0]
    result = await stream_pcm(f"ws://127.0.0.1:{port}/", load_pcm(utt.path), speed=0)
    assert result.finals, result.errors
    for path in ("/healthz", "/readyz", "/metrics", "/"):
        with urllib.request.urlopen(http + path, timeout=10) as resp:
            assert resp.status == 200
    for p in (gw, vad, asr):
        p.stop()  # all lines written, the last ones at shutdown too
    by_role = {"asr-worker": (asr, "asr-a"), "vad-worker": (vad, "vad-a"), "gateway": (gw, "gw-a")}
    for role, (proc, worker) in by_role.items():
        parsed = lines(proc.log())
        assert parsed, f"{role} logged nothing"
        for line in parsed:
            assert line["role"] == role and line["worker"] == worker, line
            assert {"time", "level", "logger", "message"} <= line.keys()
    asr_lines = [ln for ln in lines(asr.log()) if ln.get("stage") == "asr" and "segment" in ln]
    assert asr_lines and all(isinstance(ln["latency_ms"], int) for ln in asr_lines)
    started = [ln for ln in lines(gw.log()) if ln.get("stage") == "gateway"]
    assert len(started) == 1 and started[0]["session_id"]
    assert {ln["session_id"] for ln in asr_lines} == {started[0]["session_id"]}
    access = [ln["message"] for ln in lines(gw.log()) if ln["logger"] == "uvicorn.access"]
    assert any('"GET / HTTP' in m for m in access), access
    assert not any(probe in m for m in access for probe in ("/healthz", "/readyz", "/metrics"))
