"""End to end: the predecessor's *low-latency* clients (../shared/PREDECESSOR.md, last section)
byte for byte against the whole service: no config frame, ``?lang=`` (codes, names, ``null``),
``Transcript`` read from every message; its page's 4096-frame ScriptProcessor buffers downsampled
to 16 kHz, its Locust test's 250 ms chunks and 661,500-byte silence frame. And the honest
refusal of what the bundled English-only model cannot serve (until issue 15's model pools)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets

from shared.audio import StreamResampler
from tests.conftest import Service, librispeech
from whisper_streaming.evaluation import wer
from whisper_streaming.replay import load_pcm

pytestmark = pytest.mark.e2e

UTTERANCE = "1089-134691-0000"
"""The utterance of the first version's client tests (tests/e2e/test_pipeline.py), with their
WER bound: this file tests delivery; accuracy is measured on the held-out set."""
WER_BOUND = 0.25

CONTEXT_RATE = 48_000
SCRIPT_PROCESSOR_FRAMES = 4096
LOCUST_CHUNK = 8_000
"""250 ms of 16 kHz PCM16."""
LOCUST_SILENCE = bytes(661_500)
"""``AudioSegment.silent(duration=30000)``: 30 s at pydub's default 11,025 Hz, 16-bit."""
PACE = 4.0
"""Times real time: the bytes are the clients', the waits between them shorter."""
FIRST_VERSION_FIELDS = {"text", "words", "language", "language_probability", "processing_time"}


def page_downsample(buffer: np.ndarray, rate: int = CONTEXT_RATE) -> bytes:
    """The page's ``downsampleBuffer`` + Int16 conversion: average each ``rate / 16000`` input
    frames into one output sample (``Math.round`` bounds), clip, scale by 0x7FFF."""
    ratio = rate / 16_000
    n = round(len(buffer) / ratio)
    out = np.empty(n, dtype=np.float64)
    offset = 0
    for i in range(n):
        nxt = round((i + 1) * ratio)
        out[i] = buffer[offset:nxt].mean() if nxt > offset else 0.0
        offset = nxt
    return (np.clip(out, -1.0, 1.0) * 0x7FFF).astype("<i2").tobytes()


def page_frames(pcm16k: bytes, silence_s: float) -> list[bytes]:
    """What the page sends for a recording played into its microphone: the audio at the
    AudioContext's 48 kHz in 4096-frame buffers, each downsampled to ~1,365 samples (2,730
    bytes); then the microphone goes on capturing ``silence_s`` of silence."""
    speech = np.frombuffer(pcm16k, dtype="<i2").astype(np.float32) / 32768.0
    at48 = np.frombuffer(
        StreamResampler(16_000, CONTEXT_RATE).push(
            (np.concatenate([speech, np.zeros(int(silence_s * 16_000), np.float32)]) * 32767)
            .astype("<i2")
            .tobytes()
        ),
        dtype="<i2",
    ).astype(np.float32)
    at48 /= 32768.0
    n = len(at48) // SCRIPT_PROCESSOR_FRAMES
    return [
        page_downsample(at48[i * SCRIPT_PROCESSOR_FRAMES : (i + 1) * SCRIPT_PROCESSOR_FRAMES])
        for i in range(n)
    ]


def check_final(msg: dict[str, Any]) -> None:
    """Both versions' fields, of the types their code reads."""
    assert msg["type"] == "final" and FIRST_VERSION_FIELDS <= msg.keys()
    assert isinstance(msg["Transcript"], str) and msg["Transcript"] == msg["text"]
    assert msg["Transcript"].strip() and msg["Transcript"] != "None"
    assert isinstance(msg["StartTime"], int) and isinstance(msg["EndTime"], int)
    assert 0 <= msg["StartTime"] <= msg["EndTime"]
    assert abs(msg["StartTime"] - msg["start"] * 1000) <= 1
    assert abs(msg["EndTime"] - msg["end"] * 1000) <= 1
    assert isinstance(msg["processing_time"], float)
    assert all({"word", "probability"} <= w.keys() for w in msg["words"])


async def run_page(url: str, pcm: bytes, reference: str) -> list[dict[str, Any]]:
    """The page: connect to ``/?lang=…``, send its frames at (a multiple of) their real pace
    while reading ``Transcript`` from every message; Stop (close) once the text is in."""
    frames = page_frames(pcm, silence_s=12.0)
    period = SCRIPT_PROCESSOR_FRAMES / CONTEXT_RATE / PACE
    lines: list[dict[str, Any]] = []
    async with websockets.connect(url, max_size=None) as ws:

        async def send() -> None:
            for frame in frames:
                await ws.send(frame)
                await asyncio.sleep(period)

        sender = asyncio.create_task(send())
        try:
            while True:
                message = await asyncio.wait_for(ws.recv(), 60)
                if message == "None":
                    continue  # the page skips these (we never send them: checked below)
                msg = json.loads(message)
                lines.append(msg)
                text = " ".join(m["Transcript"] for m in lines)
                if wer([(reference, text)]).wer <= WER_BOUND:
                    break
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    assert {len(f) for f in frames} == {2730}  # round(4096 / 3) samples
    return lines


def reference_utterance() -> tuple[bytes, str]:
    utt = next(u for u in librispeech() if u.utt_id == UTTERANCE)
    return load_pcm(utt.path), utt.reference


@pytest.mark.parametrize("path", ["/?lang=en", "/?lang=english", "/ws?lang=en&dest_lang=en"])
async def test_low_latency_page(service: Service, path: str) -> None:
    pcm, reference = reference_utterance()
    lines = await run_page(service.ws + path, pcm, reference)
    for msg in lines:
        check_final(msg)
        assert msg["language"] == "en"
    assert wer([(reference, " ".join(m["Transcript"] for m in lines))]).wer <= WER_BOUND


async def test_low_latency_page_multilingual_is_english_with_english_only_workers(
    service: Service,
) -> None:
    """``?lang=null`` (the page's "multilingual") asks for detection; the bundled English-only
    model cannot detect, so it is served as English (docs/clients.md says why: the first
    version's clients ask for detection too, and must keep working)."""
    pcm, reference = reference_utterance()
    lines = await run_page(service.ws + "/?lang=null", pcm, reference)
    for msg in lines:
        check_final(msg)
        assert msg["language"] == "en"
    assert wer([(reference, " ".join(m["Transcript"] for m in lines))]).wer <= WER_BOUND


async def test_low_latency_locust(service: Service) -> None:
    """``ws://host:8000?lang=en``, no config, 250 ms chunks at real-time pace, then 30 s of
    11,025 Hz silence in one 661,500-byte frame: the connection stays open and every message
    has ``Transcript`` (the test logs ``transcription['Transcript']``)."""
    pcm, reference = reference_utterance()
    texts: list[str] = []
    async with websockets.connect(service.ws + "?lang=en", max_size=None) as ws:
        started = time.monotonic()
        for i in range(0, len(pcm), LOCUST_CHUNK):
            await ws.send(pcm[i : i + LOCUST_CHUNK])
            await asyncio.sleep(0.25 / PACE)
        await ws.send(LOCUST_SILENCE)
        while wer([(reference, " ".join(texts))]).wer > WER_BOUND:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 60))
            check_final(msg)
            texts.append(msg["Transcript"])
            print(f"{time.monotonic() - started:.2f}s {msg['Transcript']}")
        # still open after the big frame: an eof (ours) ends it normally
        await ws.send(json.dumps({"type": "eof"}))
        rest = [json.loads(m) async for m in ws]
        assert ws.close_code == 1000
    for msg in rest:
        check_final(msg)
    assert wer([(reference, " ".join(texts))]).wer <= WER_BOUND


async def refused(url: str, pcm: bytes) -> tuple[dict[str, Any], list[Any], int | None]:
    """Send audio as the page does until the server answers; the error frame, anything else
    received, and the close code."""
    others: list[Any] = []
    async with websockets.connect(url, max_size=None) as ws:
        for frame in page_frames(pcm, 0.0)[:20]:
            try:
                await ws.send(frame)
            except websockets.ConnectionClosed:
                break
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        try:
            async for message in ws:
                others.append(message)
        except websockets.ConnectionClosed:
            pass
    return error, others, ws.close_code


@pytest.mark.parametrize(
    ("query", "file", "says"),
    [
        ("lang=de", "de_picovoice.wav", "'de'"),
        ("lang=german", "de_picovoice.wav", "'de'"),
        ("lang=zh", "zh_aishell_BAC009S0724W0121.wav", "'zh'"),  # the page's default option
        ("lang=de&dest_lang=en", "de_picovoice.wav", "translation"),
    ],
)
@pytest.mark.parametrize("path", ["/", "/ws"])
async def test_languages_the_workers_cannot_serve_are_refused(
    service: Service, corpus: Path, path: str, query: str, file: str, says: str
) -> None:
    """With only an English pool live (the shared service runs tiny.en workers) and no other pool
    configured (``ASR_POOLS``): an ``unsupported_language`` error frame in the legacy shape naming
    the languages served, close 1003, and no English inventions (tests/e2e/test_languages.py has
    the same sessions served by base)."""
    pcm = load_pcm(corpus / "other-languages" / file)
    error, others, code = await refused(f"{service.ws}{path}?{query}", pcm)
    assert error == {"type": "error", "code": "unsupported_language", "message": error["message"]}
    assert says in error["message"] and "en" in error["message"]
    assert others == [] and code == 1003


async def test_unknown_language_in_the_query_is_an_invalid_parameter(service: Service) -> None:
    async with websockets.connect(service.ws + "/?lang=klingon", max_size=None) as ws:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert (
        msg["type"] == "error"
        and msg["code"] == "invalid_parameter"
        and "klingon" in msg["message"]
    )
    assert ws.close_code == 1007


async def test_a_config_frames_language_wins_over_the_query(service: Service) -> None:
    pcm, reference = reference_utterance()
    async with websockets.connect(service.ws + "/?lang=de", max_size=None) as ws:
        await ws.send(json.dumps({"type": "config", "data": {"language": "english"}}))
        await ws.send(pcm)
        await ws.send(json.dumps({"type": "eof"}))
        finals = [json.loads(m) async for m in ws]
        assert ws.close_code == 1000
    for msg in finals:
        check_final(msg)
    assert wer([(reference, " ".join(f["Transcript"] for f in finals))]).wer <= WER_BOUND


async def test_native_and_rest_refuse_what_the_workers_cannot_serve(
    service: Service, corpus: Path
) -> None:
    """The same check guards ``/v1/listen`` (at its first audio) and the REST endpoint (400)."""
    import httpx

    path = corpus / "other-languages" / "de_picovoice.wav"
    pcm = load_pcm(path)
    async with websockets.connect(f"{service.ws}/v1/listen?language=de", max_size=None) as ws:
        await ws.send(pcm[:32000])
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert error["type"] == "Error" and error["code"] == "unsupported_language"
    assert "'de'" in error["description"]
    assert ws.close_code == 1008 and ws.close_reason == "DATA-0000 unsupported_language"

    resp = await asyncio.to_thread(
        httpx.post,
        service.http + "/v1/audio/transcriptions",
        files={"file": (path.name, path.read_bytes())},
        data={"language": "de"},
        timeout=60,
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "unsupported_language"
