"""Nothing lost: processes really killed (SIGKILL, SIGTERM) under a live session, on a real Redis."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
import websockets

from shared.keys import ASR_GROUP, EN_POOL, VAD_GROUP, Keys
from shared.redis_util import entry
from shared.schemas import AsrJob, Transcript, decode_as, encode
from tests.conftest import wait_http, wait_reclaimed
from tests.e2e.test_native import receive_all, stream, three_utterances
from whisper_streaming.evaluation import wer
from whisper_streaming.listen import CLOSE_STREAM
from whisper_streaming.up import free_port

pytestmark = pytest.mark.e2e

FAST = {"HEARTBEAT_INTERVAL_S": "0.5", "HEARTBEAT_TTL_S": "3", "ASR_CPU_THREADS": "1"}


def start_stack(spawn, vad: int = 1, asr: int = 1, gateways: int = 1, **env: str):
    procs: dict[str, Any] = {}
    for i in range(asr):
        procs[f"asr-{i}"] = spawn("asr-worker", CONSUMER_NAME=f"asr-{i}", **(FAST | env))
    for i in range(vad):
        procs[f"vad-{i}"] = spawn("vad-worker", CONSUMER_NAME=f"vad-{i}", **(FAST | env))
    ports = []
    for i in range(gateways):
        port = free_port()
        procs[f"gw-{i}"] = spawn("gateway", CONSUMER_NAME=f"gw-{i}", PORT=str(port), **(FAST | env))
        ports.append(port)
    for port in ports:
        wait_http(f"http://127.0.0.1:{port}/readyz", 90, list(procs.values()))
    return procs, [f"ws://127.0.0.1:{p}" for p in ports]


async def owner_of_session(r: aioredis.Redis, keys: Keys) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pending = await r.xpending_range(keys.sessions, VAD_GROUP, "-", "+", 10)
        if pending:
            return pending[0]["consumer"].decode()
        await asyncio.sleep(0.05)
    raise TimeoutError("no VAD worker took the session")


async def run_session(ws_url: str, pcm: bytes, on_progress=None, speed: float = 2.0) -> list[dict]:
    msgs: list[dict[str, Any]] = []
    async with websockets.connect(f"{ws_url}/v1/listen?interim_results=false") as ws:
        rx = asyncio.create_task(receive_all(ws, msgs))
        half = len(pcm) // 2 // 2 * 2
        await stream(ws, pcm, speed=speed, stop_at=half)
        if on_progress is not None:
            await on_progress()
        await stream(ws, pcm[half:], speed=speed)
        await ws.send(CLOSE_STREAM)
        await asyncio.wait_for(rx, 120)
    return msgs


def check_complete(msgs: list[dict], reference: str, max_wer: float = 0.2) -> None:
    finals = [m for m in msgs if m["type"] == "final"]
    segments = [f["segment"] for f in finals]
    assert segments == list(range(len(segments))), segments  # none missing, none twice
    assert msgs[-1]["type"] == "closed" and msgs[-1]["segments"] >= len(finals)
    assert wer([(reference, " ".join(f["text"] for f in finals))]).wer <= max_wer


async def test_vad_worker_killed_mid_session_is_taken_over(
    spawn, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    procs, (url,) = start_stack(spawn, vad=2, asr=2, VAD_CLAIM_IDLE_MS="2000")
    pcm, reference, _ = three_utterances()

    async def kill_owner() -> None:
        owner = await owner_of_session(redis_client, keys)
        procs[owner].kill()  # SIGKILL: no hand-back, no checkpoint flush

    msgs = await run_session(url, pcm, kill_owner)
    check_complete(msgs, reference)
    survivor = next(p for n, p in procs.items() if n.startswith("vad") and p.alive())
    assert "taken over" in survivor.log()


async def test_vad_worker_sigterm_hands_the_session_back(
    spawn, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    procs, (url,) = start_stack(spawn, vad=2, asr=1, VAD_CLAIM_IDLE_MS="60000")
    pcm, reference, _ = three_utterances()
    codes: list[int] = []

    async def stop_owner() -> None:
        owner = await owner_of_session(redis_client, keys)
        codes.append(await asyncio.to_thread(procs[owner].stop, 15))

    msgs = await run_session(url, pcm, stop_owner)
    assert codes == [0]
    # handed back at once, though the claim idle time is a minute
    check_complete(msgs, reference)


async def test_asr_worker_killed_mid_job_its_final_arrives_once(
    spawn, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    procs, (url,) = start_stack(spawn, vad=1, asr=2, ASR_CLAIM_IDLE_MS="2000")
    pcm, reference, _ = three_utterances()
    killed: list[str] = []
    hunter: list[asyncio.Task] = []

    async def kill_busy_asr() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                pending = await redis_client.xpending_range(
                    keys.asr_jobs(EN_POOL), ASR_GROUP, "-", "+", 5
                )
            except Exception:  # group not created yet
                pending = []
            if pending:
                name = pending[0]["consumer"].decode()
                procs[name].kill()
                killed.append(name)
                return
            await asyncio.sleep(0.005)
        raise TimeoutError("never caught an ASR worker with a job in hand")

    async def start_hunting() -> None:  # runs while the rest of the audio streams
        hunter.append(asyncio.create_task(kill_busy_asr()))

    msgs = await run_session(url, pcm, start_hunting, speed=1.5)
    await hunter[0]
    assert killed
    check_complete(msgs, reference)
    survivor = next(p for n, p in procs.items() if n.startswith("asr") and p.alive())
    # the job the victim held may be a speculative decode the session did not need: then the
    # session can end before the survivor's claim round, and the reclaim follows it
    await wait_reclaimed(survivor, redis_client, keys.asr_jobs(EN_POOL), killed[0])


async def test_job_failing_every_time_goes_to_dead_letter_and_ordering_goes_on(
    spawn, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    worker = spawn("asr-worker", ASR_CLAIM_IDLE_MS="1000", ASR_MAX_DELIVERIES="2", **FAST)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(keys.results("dl"))
    bad = AsrJob(session_id="dl", segment=0, start=0, end=1, pcm=b"\x01\x02\x03")  # odd bytes
    await redis_client.xadd(keys.asr_jobs(EN_POOL), entry(encode(bad)))
    got = None
    deadline = time.monotonic() + 60
    while got is None and time.monotonic() < deadline:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if msg:
            got = decode_as(msg["data"], Transcript)
    assert got is not None and got.segment == 0 and got.text == "" and got.error
    dead = await redis_client.xrange(keys.asr_dead(EN_POOL))
    assert len(dead) == 1 and b"ValueError" in dead[0][1][b"error"]
    assert (await redis_client.xpending(keys.asr_jobs(EN_POOL), ASR_GROUP))["pending"] == 0
    assert worker.alive()
    await pubsub.aclose()


async def test_asr_worker_sigterm_exits_zero_and_leaves_the_group(
    spawn, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    worker = spawn("asr-worker", **FAST)
    deadline = time.monotonic() + 60

    async def consumers() -> list[bytes]:
        try:
            return [
                c["name"]
                for c in await redis_client.xinfo_consumers(keys.asr_jobs(EN_POOL), ASR_GROUP)
            ]
        except aioredis.ResponseError:  # no group yet
            return []

    job = AsrJob(session_id="t", segment=0, start=0, end=0.5, pcm=b"\x00\x00" * 8000)
    await redis_client.xadd(keys.asr_jobs(EN_POOL), entry(encode(job)))
    while not await redis_client.exists(keys.transcript("t")):  # it has served the group
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert await consumers() == [b"asr-worker-0"]
    worker.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.proc.wait, 30) == 0
    assert await consumers() == []
    assert await redis_client.zcard(keys.heartbeats("asr")) == 0


async def test_gateway_killed_client_resumes_on_another_gateway(spawn) -> None:
    procs, (url_a, url_b) = start_stack(spawn, vad=1, asr=2, gateways=2)
    pcm, reference, offsets = three_utterances()
    first: list[dict[str, Any]] = []
    ws = await websockets.connect(f"{url_a}/v1/listen?interim_results=false&session_started=true")
    rx = asyncio.create_task(receive_all(ws, first))
    cut = offsets[2] // 2 * 2
    await stream(ws, pcm, speed=2.0, stop_at=cut)
    await asyncio.sleep(1.5)  # let the first finals arrive
    procs["gw-0"].kill()
    await asyncio.wait_for(rx, 10)
    sid = first[0]["session_id"]
    finals = [m["segment"] for m in first if m["type"] == "final"]
    last = max(finals, default=-1)
    second: list[dict[str, Any]] = []
    resume = f"{url_b}/v1/listen?session_id={sid}&last_segment={last}&session_started=true"
    async with websockets.connect(resume) as ws2:
        rx2 = asyncio.create_task(receive_all(ws2, second))
        for _ in range(300):  # SessionStarted first
            if second:
                break
            await asyncio.sleep(0.1)
        # the audio the session holds: the dead gateway wrote what it had coalesced up to its
        # last entry; the client sends on from there (nothing repeated, nothing lost)
        held = second[0]["audio_received"]
        assert 0 < held <= cut / 32000, (held, cut / 32000)
        resend = int(held * 16000) * 2
        await stream(ws2, pcm[resend:], speed=2.0)
        await ws2.send(CLOSE_STREAM)
        await asyncio.wait_for(rx2, 60)
    assert second[0]["resumed"] is True
    assert abs(second[-1]["audio_seconds"] - len(pcm) / 32000) < 0.01, second[-1]
    check_complete([m for m in first + second if m["type"] == "final"] + [second[-1]], reference)


async def test_gateway_sigterm_drains_its_sessions_before_closing(spawn) -> None:
    """A rolling update: SIGTERM used to close every socket with 1012 at once and a client of
    `/` lost its last utterance. Now the gateway stops accepting, ends each session as at an eof,
    sends its finals and only then closes with 1012."""
    procs, (url,) = start_stack(spawn, asr=2)
    pcm, reference, _ = three_utterances()
    msgs: list[dict[str, Any]] = []
    ws = await websockets.connect(url + "/")  # the predecessor's Locust client: no config, no eof
    rx = asyncio.create_task(receive_all(ws, msgs))
    await stream(ws, pcm, speed=0)
    await asyncio.sleep(0.3)  # the last frames have reached the gateway
    gateway = procs["gw-0"]
    gateway.proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(rx, 90)
    assert ws.close_code == 1012, msgs[-2:]
    text = " ".join(m["text"] for m in msgs if m.get("text"))
    assert wer([(reference, text)]).wer <= 0.2  # all three utterances, the last one too
    # it exits by itself (uvicorn re-raises the SIGTERM it handled once the shutdown is done)
    assert await asyncio.to_thread(gateway.proc.wait, 30) in (0, -signal.SIGTERM)
