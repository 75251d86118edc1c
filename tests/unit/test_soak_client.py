"""The soak's client resumes like a real one: a scripted server (no pipeline) drops the first
socket mid-stream; the client comes back with ``session_id`` and ``last_segment``, sends on from
the ``audio_received`` the server reports, and its log counts what the server repeated and never
sent."""

from __future__ import annotations

import json
import time
from typing import Any

import websockets

from whisper_streaming.soak_client import FRAME, ResumingClient
from whisper_streaming.up import free_port

SID = "ab" * 16


def results(segment: int, final: bool = True) -> str:
    return json.dumps(
        {
            "type": "Results",
            "is_final": final,
            "start": float(segment),
            "duration": 1.0,
            "segment": segment,
            "session_id": SID,
            "channel": {"alternatives": [{"transcript": f"word{segment}"}]},
        }
    )


async def test_a_dropped_socket_is_resumed_and_repeats_and_gaps_are_counted() -> None:
    pcm = bytes(range(256)) * 50  # 12,800 bytes: four 100 ms frames
    paths: list[str] = []
    first: list[bytes] = []
    second: list[bytes] = []

    async def gateway(ws: Any) -> None:
        paths.append(ws.request.path)
        if len(paths) == 1:
            await ws.send(json.dumps({"type": "SessionStarted", "session_id": SID}))
            first.append(await ws.recv())
            await ws.send(results(0))
            first.append(await ws.recv())
            ws.transport.abort()  # the gateway dies: no close frame
            return
        # of the two frames the first socket took, only the first reached the stream
        held = {"audio_received": FRAME / 32000}
        await ws.send(
            json.dumps({"type": "SessionStarted", "session_id": SID, "resumed": True, **held})
        )
        await ws.send(results(0))  # a final the client had: a duplicate
        await ws.send(results(2, final=False))  # segment 2's partial, then never its final
        async for msg in ws:
            if isinstance(msg, bytes):
                second.append(msg)
            elif json.loads(msg)["type"] == "CloseStream":
                await ws.send(results(1))
                await ws.send(json.dumps({"type": "Metadata", "duration": 0.4, "segments": 3}))
                return

    port = free_port()
    started = time.monotonic()
    async with websockets.serve(gateway, "127.0.0.1", port):
        client = ResumingClient(
            [f"ws://127.0.0.1:{port}"], 0, pcm, lambda: time.monotonic() - started
        )
        await client.run()
    assert len(paths) == 2
    assert "session_started=true" in paths[0] and "session_id" not in paths[0]
    assert f"session_id={SID}&last_segment=0" in paths[1]
    # on from what the session held: the frame the dead gateway took but never wrote is sent
    # again, nothing the session had is repeated
    a, b = b"".join(first), b"".join(second)
    assert len(a) == 2 * FRAME and pcm.startswith(a)
    assert b == pcm[FRAME:]
    assert client.resumes == 1
    assert [seg for _t, seg in client.log.duplicated()] == [0]
    assert [seg for _t, seg in client.log.lost()] == [2]
    assert client.transcript() == "word0 word1"
    assert client.audio_lost_s() == 0.0
