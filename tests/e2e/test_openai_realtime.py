"""WS /v1/realtime?intent=transcription driven by the official openai SDK (GA and beta shapes):
server VAD events, append-only deltas and completed transcripts of a corpus recording within our
clients' WER bound, client commits, μ-law 8 kHz audio, and bad events answered with OpenAI's error
event while the session goes on."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI

from shared.audio import decode_file, float32_to_pcm16
from tests.codecs import encode_stream
from tests.conftest import Service
from whisper_streaming.evaluation import wer

pytestmark = pytest.mark.e2e

WER_BOUND = 0.2
"""What the native client's test of the same recording allows (tests/e2e/test_native.py)."""

CHUNK_S = 0.1


def client(service: Service) -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key="unused", base_url=f"{service.http}/v1", websocket_base_url=f"{service.ws}/v1"
    )


def pcm_at(path: Path, rate: int, tail_s: float = 1.5) -> bytes:
    """The recording as PCM16 at ``rate`` with ``tail_s`` of silence (so the last turn ends)."""
    audio = np.concatenate([decode_file(path, rate), np.zeros(int(rate * tail_s), np.float32)])
    return float32_to_pcm16(audio)


async def send_audio(conn: Any, data: bytes, bytes_per_s: int, speed: float = 2.0) -> None:
    step = int(bytes_per_s * CHUNK_S)
    for i in range(0, len(data), step):
        await conn.input_audio_buffer.append(audio=base64.b64encode(data[i : i + step]).decode())
        await asyncio.sleep(CHUNK_S / speed)


async def events_until_done(
    conn: Any, events: list[Any], sender: asyncio.Task[None], timeout: float = 90
) -> None:
    """Read events until the audio is sent and every item that started or was committed has
    completed."""

    async def read() -> None:
        items: set[str] = set()
        completed: set[str] = set()
        while not (sender.done() and items and items <= completed):
            try:
                event = await asyncio.wait_for(conn.recv(), 0.5)
            except TimeoutError:
                continue
            events.append(event)
            if event.type in ("input_audio_buffer.committed", "input_audio_buffer.speech_started"):
                items.add(event.item_id)
            elif event.type == "conversation.item.input_audio_transcription.completed":
                completed.add(event.item_id)

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        seen = [(e.type, getattr(e, "item_id", None)) for e in events if "delta" not in e.type]
        raise AssertionError(f"not every item completed: {seen}") from None
    await sender


def transcript(events: list[Any]) -> str:
    done = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    return " ".join(e.transcript for e in done if e.transcript)


async def test_sdk_ga_session_with_server_vad(service: Service, corpus: Path) -> None:
    path = corpus / "long" / "jfk.flac"
    pcm = pcm_at(path, 24000)
    events: list[Any] = []
    async with client(service).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "whisper-1", "language": "en"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                    }
                },
            }
        )
        updated = await conn.recv()
        assert updated.type == "session.updated", updated
        assert updated.session.audio.input.transcription.language == "en"
        # in real time: faster audio is cut as a file is (workers/pace.py), not at 500 ms pauses
        sender = asyncio.create_task(send_audio(conn, pcm, 48000, speed=1.0))
        await events_until_done(conn, events, sender)
    kinds = [e.type for e in events]
    assert "input_audio_buffer.speech_started" in kinds
    assert "input_audio_buffer.speech_stopped" in kinds
    reference = (corpus / "long" / "jfk.txt").read_text()
    assert wer([(reference, transcript(events))]).wer <= WER_BOUND
    # deltas are append-only and, per item, what the completed transcript starts with
    for done in [e for e in events if e.type.endswith("transcription.completed")]:
        deltas = "".join(
            e.delta for e in events if e.type.endswith(".delta") and e.item_id == done.item_id
        )
        assert done.transcript.startswith(deltas.strip()), (deltas, done.transcript)
    # each item: started before stopped before committed before completed
    first = {}
    for i, e in enumerate(events):
        first.setdefault((e.type, getattr(e, "item_id", None)), i)
    for done in [e for e in events if e.type.endswith("transcription.completed")]:
        committed = first[("input_audio_buffer.committed", done.item_id)]
        assert committed < first[(done.type, done.item_id)]
        stopped = first.get(("input_audio_buffer.speech_stopped", done.item_id))
        assert stopped is None or stopped < committed, (done.item_id, kinds)
    stops = [e.item_id for e in events if e.type == "input_audio_buffer.speech_stopped"]
    assert len(stops) == len(set(stops)), stops  # one per item


async def test_sdk_beta_shape_with_client_commits_and_mulaw(service: Service, corpus: Path) -> None:
    """The beta event names, ``g711_ulaw`` 8 kHz audio from FFmpeg's encoder, no turn
    detection: no VAD events, the commit closes the item."""
    path = corpus / "long" / "jfk.flac"
    ulaw = encode_stream(decode_file(path, 8000), "mulaw", "pcm_mulaw", 8000)
    events: list[Any] = []
    async with client(service).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.send(
            {
                "type": "transcription_session.update",
                "session": {
                    "input_audio_format": "g711_ulaw",
                    "input_audio_transcription": {"model": "whisper-1", "language": "en"},
                    "turn_detection": None,
                },
            }
        )
        updated = await conn.recv()
        assert updated.type == "transcription_session.updated"
        await send_audio(conn, ulaw, 8000, speed=4.0)
        await conn.input_audio_buffer.commit()
        await events_until_done(conn, events, asyncio.create_task(asyncio.sleep(0)))
    kinds = [e.type for e in events]
    assert "input_audio_buffer.speech_started" not in kinds
    assert "input_audio_buffer.committed" in kinds
    reference = (corpus / "long" / "jfk.txt").read_text()
    assert wer([(reference, transcript(events))]).wer <= WER_BOUND


async def test_bad_events_get_error_events_and_lose_nothing(service: Service, corpus: Path) -> None:
    """Unknown type, bad JSON, bad base64, an oversized append, a wrong format, a commit of
    nothing and a prompt over the key-term bounds: each an ``error`` event in OpenAI's shape; the session then transcribes as usual."""
    path = corpus / "long" / "jfk.flac"
    pcm = pcm_at(path, 24000)
    url = f"{service.ws}/v1/realtime?intent=transcription"
    bad = [
        json.dumps({"type": "response.create", "event_id": "e1"}),
        "not json",
        json.dumps({"type": "input_audio_buffer.append", "audio": "***", "event_id": "e3"}),
        json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 1_400_000}),
        json.dumps({"type": "session.update", "session": {"type": "transcription",
                    "audio": {"input": {"format": {"type": "audio/flac"}}}}}),
        json.dumps({"type": "input_audio_buffer.commit"}),
        json.dumps({"type": "session.update", "session": {"type": "transcription",
                    "audio": {"input": {"transcription": {"prompt": "Kennedy " * 100}}}}}),
    ]  # fmt: skip
    msgs: list[dict[str, Any]] = []
    async with websockets.connect(url, max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        for frame in bad:
            await ws.send(frame)
            msgs.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        for i in range(0, len(pcm), 4800):
            chunk = base64.b64encode(pcm[i : i + 4800]).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            await asyncio.sleep(0.05)
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        texts: list[str] = []
        while wer([((corpus / "long" / "jfk.txt").read_text(), " ".join(texts))]).wer > WER_BOUND:
            event = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if event["type"].endswith("transcription.completed"):
                texts.append(event["transcript"])
    assert [m["type"] for m in msgs] == ["error"] * len(bad)
    codes = [m["error"]["code"] for m in msgs]
    assert codes == ["invalid_value", "invalid_json", "invalid_value", "audio_too_large",
                     "invalid_value", "input_audio_buffer_commit_empty", "invalid_keyterms"]  # fmt: skip
    assert all(m["error"]["type"] == "invalid_request_error" for m in msgs)
    assert msgs[0]["error"]["event_id"] == "e1" and msgs[0]["error"]["param"] == "type"
    assert msgs[2]["error"]["param"] == "audio"
    assert msgs[4]["error"]["param"] == "session.audio.input.format.type"
    assert "500" in msgs[6]["error"]["message"] and msgs[6]["error"]["param"] == "prompt"


async def test_browser_subprotocol_credential_and_wrong_intent(service: Service) -> None:
    url = f"{service.ws}/v1/realtime?intent=transcription"
    protocols = ["realtime", "openai-insecure-api-key.anything", "openai-beta.realtime-v1"]
    async with websockets.connect(url, subprotocols=protocols) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "realtime"
        assert json.loads(await ws.recv())["type"] == "session.created"
    async with websockets.connect(f"{service.ws}/v1/realtime?intent=conversation") as ws:
        event = json.loads(await ws.recv())
        assert event["type"] == "error" and event["error"]["code"] == "unsupported_intent"
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1003
