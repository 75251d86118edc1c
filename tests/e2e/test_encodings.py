"""The uplink's encodings through the real pipeline: a μ-law 8 kHz stream and Ogg and WebM Opus
streams (as MediaRecorder makes them) of the same corpus recording, made by FFmpeg's encoders
and fed to a session's uplink in pieces as a live client sends them (the workers of the test
service transcribe them), within the WER bound of our own clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.context import GatewayContext
from gateway.encodings import InputFormat
from gateway.file_session import FileSession
from shared.audio import decode_file
from tests.codecs import encode_stream
from tests.conftest import Service
from tests.integration.gateway_parts import gateway_context
from whisper_streaming.evaluation import wer

pytestmark = pytest.mark.e2e

WER_BOUND = 0.2
"""As for the same recording on the native endpoint (tests/e2e/test_native.py)."""


@pytest.fixture
async def ctx(service: Service) -> AsyncIterator[GatewayContext]:
    r = aioredis.Redis.from_url(service.redis_url)
    try:
        async with gateway_context(r, service.key_prefix) as c:
            yield c
    finally:
        await r.aclose()


@pytest.mark.parametrize(
    ("encoding", "fmt", "codec", "rate"),
    [
        ("mulaw", "mulaw", "pcm_mulaw", 8000),
        ("alaw", "alaw", "pcm_alaw", 8000),
        ("opus", "ogg", "libopus", 48000),
        ("opus", "webm", "libopus", 48000),
    ],
)
async def test_encoded_streams_transcribe_like_pcm(
    ctx: GatewayContext, corpus: Path, encoding: str, fmt: str, codec: str, rate: int
) -> None:
    data = encode_stream(decode_file(corpus / "long" / "jfk.flac", rate), fmt, codec, rate)
    session = FileSession(ctx, data, language="en")
    session._frame_bytes = 4000  # pieces of the byte stream, not whole pages or samples
    session.uplink.set_input_format(InputFormat(encoding, rate))
    finals = await session.transcribe()
    assert session.complete and session.errors == []
    reference = (corpus / "long" / "jfk.txt").read_text()
    assert wer([(reference, " ".join(t.text for t in finals))]).wer <= WER_BOUND


@pytest.mark.parametrize(
    ("query", "fmt", "codec", "rate"),
    [
        ("encoding=mulaw&sample_rate=8000", "mulaw", "pcm_mulaw", 8000),  # Twilio's media stream
        ("encoding=opus", "webm", "libopus", 48000),  # a browser's MediaRecorder
    ],
)
async def test_deepgram_endpoint_takes_telephony_and_browser_audio(
    service: Service, corpus: Path, query: str, fmt: str, codec: str, rate: int
) -> None:
    """The same encodings through `/v1/listen` (Deepgram's `encoding` and `sample_rate`)."""
    import asyncio
    import json

    import websockets

    from tests.e2e.test_native import receive_all
    from whisper_streaming.listen import CLOSE_STREAM

    data = encode_stream(decode_file(corpus / "long" / "jfk.flac", rate), fmt, codec, rate)
    msgs: list[dict] = []
    async with websockets.connect(f"{service.ws}/v1/listen?{query}&language=en") as ws:
        rx = asyncio.create_task(receive_all(ws, msgs))
        for i in range(0, len(data), 4000):
            await ws.send(data[i : i + 4000])
        await ws.send(CLOSE_STREAM)
        await asyncio.wait_for(rx, 120)
    assert not [m for m in msgs if m.get("type") == "error"], msgs[-2:]
    text = " ".join(m["text"] for m in msgs if m.get("type") == "final")
    reference = (corpus / "long" / "jfk.txt").read_text()
    assert wer([(reference, text)]).wer <= WER_BOUND, json.dumps(msgs[-1])
