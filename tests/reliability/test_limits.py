"""Overload and bounds: admission control, back-pressure, rate and length limits, no leaks."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis
import websockets

from shared.audio import float32_to_pcm16
from shared.keys import EN_POOL, Keys
from tests.conftest import librispeech, wait_http
from tests.e2e.test_native import receive_all
from tests.reliability.test_crash_recovery import start_stack
from whisper_streaming.evaluation import wer
from whisper_streaming.listen import CLOSE_STREAM, flatten
from whisper_streaming.replay import load_pcm, stream_pcm
from whisper_streaming.up import free_port

pytestmark = pytest.mark.e2e


def metrics_text(http: str) -> str:
    with urllib.request.urlopen(http + "/metrics") as r:
        return r.read().decode()


async def expect_error(ws: Any, code: str, close: int) -> None:
    while True:
        msg = flatten(json.loads(await asyncio.wait_for(ws.recv(), 30)))  # either protocol
        if msg.get("type") == "error":
            break
    assert msg["code"] == code and msg["message"]
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 30)
    assert ws.close_code == close


async def test_admission_control_refuses_new_sessions_and_keeps_existing_ones(
    spawn, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    procs, (url,) = start_stack(spawn, MAX_SESSIONS="2", MAX_JOB_BACKLOG="3")
    utt = next(u for u in librispeech() if u.utt_id == "2830-3980-0043")
    pcm = load_pcm(utt.path)
    a = await websockets.connect(f"{url}/v1/listen?interim_results=false")
    b = await websockets.connect(url)
    await a.send(pcm[:16000])
    await b.send(pcm[:16000])
    http = url.replace("ws://", "http://")
    deadline = time.monotonic() + 30
    while "whisper_sessions_active 2.0" not in await asyncio.to_thread(metrics_text, http):
        assert time.monotonic() < deadline, "the two sessions never became active"
        await asyncio.sleep(0.1)
    async with websockets.connect(url) as c:
        await expect_error(c, "too_many_sessions", 1013)
    # the two admitted sessions are served normally
    for ws, end in ((a, CLOSE_STREAM), (b, json.dumps({"type": "eof"}))):
        await ws.send(pcm[16000:])
        await ws.send(end)
    msgs_a: list[dict] = []
    msgs_b: list[dict] = []
    await asyncio.gather(receive_all(a, msgs_a), receive_all(b, msgs_b))
    for msgs in (msgs_a, msgs_b):
        text = " ".join(m["text"] for m in map(flatten, msgs) if m.get("type") == "final")
        assert wer([(utt.reference, text)]).wer <= 0.2

    # a saturated ASR pool: its worker is frozen while jobs pile up
    keys = Keys(key_prefix)
    procs["asr-0"].proc.send_signal(signal.SIGSTOP)
    try:
        for _ in range(3):
            await redis_client.xadd(keys.asr_jobs(EN_POOL), {b"d": b"backlog"})
        async with websockets.connect(url) as d:
            await expect_error(d, "overloaded", 1013)
        with pytest.raises(websockets.InvalidStatus) as refused:  # Deepgram's: before the upgrade
            await websockets.connect(f"{url}/v1/listen")
        assert refused.value.response.status_code == 503
        assert json.loads(refused.value.response.body)["err_code"] == "SERVICE_UNAVAILABLE"
    finally:
        procs["asr-0"].proc.send_signal(signal.SIGCONT)


async def test_backpressure_holds_audio_instead_of_dropping_it(
    spawn, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """The VAD worker is frozen while a client pushes audio as fast as it can: the gateway stops
    reading (the audio stream stays bounded); once the worker resumes, every word comes through."""
    keys = Keys(key_prefix)
    procs, (url,) = start_stack(spawn, AUDIO_BACKLOG_MAX="20", EOF_TIMEOUT_S="60")
    utts = [u for u in librispeech(held_out_only=True)][:3]
    gap = float32_to_pcm16(np.zeros(16000, dtype=np.float32))
    pcm = b"".join(load_pcm(u.path) + gap for u in utts)
    reference = " ".join(u.reference for u in utts)
    procs["vad-0"].proc.send_signal(signal.SIGSTOP)
    task = asyncio.create_task(stream_pcm(url, pcm, speed=0, chunk_ms=100))
    longest = 0
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            async for key in redis_client.scan_iter(match=keys.audio("*")):
                longest = max(longest, await redis_client.xlen(key))
            await asyncio.sleep(0.1)
        assert not task.done()  # the client is held back
    finally:
        procs["vad-0"].proc.send_signal(signal.SIGCONT)
    result = await asyncio.wait_for(task, 120)
    assert 20 <= longest <= 20 + 10 + 2  # the limit, checked every 10 entries
    assert result.close_code == 1000 and not result.errors
    assert wer([(reference, result.text)]).wer <= 0.25  # a lost utterance would cost ~0.3


async def test_rate_and_length_limits(spawn) -> None:
    _, (url,) = start_stack(spawn, MAX_FRAMES_PER_SECOND="50", MAX_SESSION_S="2")
    # a burst of frames (a client catching up after a stall) is held back, not refused: the
    # session goes on and its speech is transcribed
    utt = next(u for u in librispeech() if u.utt_id == "2830-3980-0043")
    # 20 ms frames as fast as they go: 50 a second of audio, sent many times faster
    result = await stream_pcm(url + "/", load_pcm(utt.path), speed=0, chunk_ms=20)
    assert not result.errors
    assert wer([(utt.reference, result.text)]).wer <= 0.25
    async with websockets.connect(url) as ws:
        for _ in range(30):
            await ws.send(b"\x00\x00" * 1600)  # 100 ms a frame, 3 s in all
        await expect_error(ws, "session_too_long", 1008)


async def test_no_leaks_after_500_sessions(
    spawn, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    procs, (url,) = start_stack(spawn, asr=2, SESSION_TTL_S="10")
    keys = Keys(key_prefix)

    async def key_names() -> set[bytes]:
        return {k async for k in redis_client.scan_iter(match=f"{key_prefix}*")}

    # the gateway is ready with one ASR worker: the baseline waits for every worker's keys (a
    # worker still loading its model registered its capabilities after the baseline: CI, 12-04)
    workers = [keys.capabilities("asr", f"asr-{i}") for i in range(2)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if await redis_client.exists(*workers) == len(workers):
            break
        await asyncio.sleep(0.2)
    baseline_keys = await key_names()
    baseline_mem = (await redis_client.info("memory"))["used_memory"]
    speech = load_pcm(next(u for u in librispeech() if u.utt_id == "2830-3980-0043").path)
    silence = float32_to_pcm16(np.zeros(8000, dtype=np.float32))
    sem = asyncio.Semaphore(25)
    without_ttl: list[bytes] = []

    async def one(i: int) -> None:
        async with sem:
            pcm = speech if i % 25 == 0 else silence
            path = "/v1/listen?interim_results=false" if i % 2 else "/"
            result = await stream_pcm(url + path, pcm, speed=0, send_config=not i % 2 == 1)
            assert result.close_code == 1000

    async def check_ttls() -> None:
        for _ in range(5):
            await asyncio.sleep(2)
            for k in await key_names() - baseline_keys:
                if await redis_client.ttl(k) == -1:
                    without_ttl.append(k)

    await asyncio.gather(check_ttls(), *(one(i) for i in range(500)))
    assert without_ttl == []
    deadline = time.monotonic() + 60
    while (await key_names()) != baseline_keys:
        if time.monotonic() > deadline:
            left = sorted(await key_names() - baseline_keys)[:5]
            details = [(k, await redis_client.ttl(k), await redis_client.type(k)) for k in left]
            raise AssertionError(f"keys left behind: {details}")
        await asyncio.sleep(0.5)
    assert await redis_client.xlen(keys.sessions) == 0
    assert await redis_client.xlen(keys.asr_jobs(EN_POOL)) == 0
    mem = (await redis_client.info("memory"))["used_memory"]
    assert mem - baseline_mem < 2 * 1024 * 1024, (baseline_mem, mem)


async def test_sockets_that_never_send_audio_are_closed_and_free_their_slot(spawn) -> None:
    """50 sockets without audio used to stay open and count against the limits."""
    port = free_port()
    gw = spawn("gateway", PORT=str(port), FIRST_AUDIO_TIMEOUT_S="2", MAX_SESSIONS="4")
    wait_http(f"http://127.0.0.1:{port}/healthz", 60, [gw])
    url = f"ws://127.0.0.1:{port}"
    idle = [await websockets.connect(url + "/v1/listen") for _ in range(2)]
    config_only = await websockets.connect(url + "/")
    await config_only.send(json.dumps({"type": "config", "data": {"language": "english"}}))
    talking = await websockets.connect(url + "/v1/listen")
    await talking.send(bytes(3200))  # audio first: the deadline no longer applies
    for ws in [*idle, config_only]:
        await expect_error(ws, "no_audio", 1008)
    await asyncio.sleep(1.0)
    assert talking.close_code is None  # still open past the deadline
    # the three slots are free again: three new sessions are admitted
    fresh = [await websockets.connect(url + "/v1/listen") for _ in range(3)]
    for ws in fresh:
        await ws.send(bytes(3200))
    await asyncio.sleep(0.5)
    assert all(ws.close_code is None for ws in fresh)
    for ws in [talking, *fresh]:
        await ws.close()
