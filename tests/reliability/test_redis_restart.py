"""Redis restarts (with AOF) under a live session: everyone reconnects with backoff, readiness
says not-ready meanwhile, and the session's transcript is complete."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import websockets

from tests.e2e.test_native import receive_all, stream, three_utterances
from tests.reliability.test_crash_recovery import check_complete, start_stack
from whisper_streaming.listen import CLOSE_STREAM
from whisper_streaming.up import EmbeddedRedis, free_port

pytestmark = pytest.mark.e2e


def ready(http: str) -> bool:
    try:
        with urllib.request.urlopen(http + "/readyz", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.parametrize("outage_s", [1.0, 14.0])
async def test_session_survives_a_redis_restart(spawn, outage_s: float) -> None:
    """A restart, and an outage longer than redis-py's own ~9 s of reconnection attempts (which
    used to end every live session with close 1000 and no error): ridden through."""
    port = free_port()
    server = EmbeddedRedis(port=port, appendonly=True, extra_args=["--appendfsync", "always"])
    server.start()
    procs: dict[str, Any] = {}
    try:
        procs, (url,) = start_stack(spawn, asr=2, REDIS_URL=f"redis://127.0.0.1:{port}/0")
        http = url.replace("ws://", "http://")
        pcm, reference, offsets = three_utterances()
        msgs: list[dict[str, Any]] = []
        async with websockets.connect(f"{url}/v1/listen?interim_results=false") as ws:
            rx = asyncio.create_task(receive_all(ws, msgs))
            cut = offsets[1] // 2 * 2  # the first utterance has been sent
            await stream(ws, pcm, speed=1.5, stop_at=cut)

            # the client goes on talking through the outage (its frames back up while the
            # gateway waits for Redis)
            talking = asyncio.create_task(stream(ws, pcm[cut:], speed=1.5))
            server.stop(remove_dir=False)  # SIGTERM: a clean restart, the AOF stays on disk
            seen_not_ready = not ready(http)
            await asyncio.sleep(outage_s)
            seen_not_ready = seen_not_ready or not ready(http)
            restarted = EmbeddedRedis(
                port=port, appendonly=True, extra_args=["--appendfsync", "always"]
            )
            restarted.dir = server.dir  # same data directory: the AOF is replayed
            restarted.start()
            server = restarted

            await asyncio.wait_for(talking, 120)
            await ws.send(CLOSE_STREAM)
            await asyncio.wait_for(rx, 120)
        assert seen_not_ready
        deadline = time.monotonic() + 30
        while not ready(http):
            assert time.monotonic() < deadline, "never ready again"
            await asyncio.sleep(0.2)
        check_complete(msgs, reference)
        for name, p in procs.items():
            assert p.alive(), f"{name} died:\n{p.log()[-2000:]}"
    finally:
        for p in procs.values():
            p.stop()
        server.stop()


async def test_an_outage_longer_than_the_tolerance_ends_sessions_with_a_clear_error(spawn) -> None:
    port = free_port()
    server = EmbeddedRedis(port=port)
    server.start()
    procs: dict[str, Any] = {}
    try:
        procs, (url,) = start_stack(
            spawn, REDIS_URL=f"redis://127.0.0.1:{port}/0", REDIS_OUTAGE_TOLERANCE_S="1"
        )
        pcm, _, offsets = three_utterances()
        msgs: list[dict[str, Any]] = []
        async with websockets.connect(f"{url}/v1/listen") as ws:
            rx = asyncio.create_task(receive_all(ws, msgs))
            cut = offsets[1] // 2 * 2
            await stream(ws, pcm, speed=0, stop_at=cut)
            server.stop()  # gone for good
            sending = asyncio.create_task(stream(ws, pcm[cut:], speed=1.0))
            await asyncio.wait_for(rx, 90)  # the gateway closes the socket
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
        errors = [m for m in msgs if m.get("type") == "error"]
        assert errors and errors[-1]["code"] == "service_unavailable", msgs[-3:]
        assert "REDIS_OUTAGE_TOLERANCE_S" in errors[-1]["message"]
        assert ws.close_code == 1013
        assert procs["gw-0"].alive()
    finally:
        for p in procs.values():
            p.stop()
        server.stop()
