"""/v1/listen end to end with a plain WebSocket client, for our extensions of Deepgram's protocol:
the SessionStarted message, interim results with their stable prefix, VAD events, finals with
speech_final and from_finalize, Finalize, the Metadata summary, resumable sessions. Messages are
read through whisper_streaming.listen.flatten (tests/e2e/test_deepgram.py uses Deepgram's SDK)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import pytest
import websockets

from shared.audio import decode_file, float32_to_pcm16
from tests.conftest import Service, librispeech, wait_http
from whisper_streaming.evaluation import normalize, wer
from whisper_streaming.listen import CLOSE_STREAM, FINALIZE, KEEPALIVE, flatten
from whisper_streaming.replay import load_pcm
from whisper_streaming.up import free_port

pytestmark = pytest.mark.e2e


async def stream(
    ws: Any, pcm: bytes, speed: float = 1.0, chunk: int = 3200, stop_at: int | None = None
) -> None:
    """Send ``pcm`` (up to byte ``stop_at``) in ``chunk``-byte frames at ``speed`` × real time."""
    t0 = time.monotonic()
    end = len(pcm) if stop_at is None else stop_at
    for i in range(0, end, chunk):
        await ws.send(pcm[i : min(i + chunk, end)])
        if speed:
            await asyncio.sleep(max(0.0, t0 + (i + chunk) / 32000 / speed - time.monotonic()))


async def receive_all(ws: Any, into: list[dict[str, Any]]) -> None:
    try:
        async for raw in ws:
            into.append(flatten(json.loads(raw)))
    except websockets.ConnectionClosed:
        pass


def three_utterances() -> tuple[bytes, str, list[int]]:
    """Three LibriSpeech utterances with 1.2 s of silence between them; the byte offsets where
    each one starts."""
    ids = ["1089-134686-0001", "1089-134691-0001", "2830-3980-0043"]
    utts = {u.utt_id: u for u in librispeech()}
    gap = np.zeros(int(16000 * 1.2), dtype=np.float32)
    parts, offsets, pos = [], [], 0
    for uid in ids:
        audio = decode_file(utts[uid].path)
        offsets.append(pos * 2)
        parts += [audio, gap]
        pos += len(audio) + len(gap)
    return (
        float32_to_pcm16(np.concatenate(parts)),
        " ".join(utts[i].reference for i in ids),
        offsets,
    )


async def test_partials_then_final_per_segment_with_events_and_summary(
    service: Service, corpus
) -> None:
    pcm = load_pcm(corpus / "long" / "jfk.flac")
    url = f"{service.ws}/v1/listen?interim_results=true&vad_events=true&language=en&session_started=true"
    msgs: list[dict[str, Any]] = []
    async with websockets.connect(url) as ws:
        rx = asyncio.create_task(receive_all(ws, msgs))
        await stream(ws, pcm, speed=1.0)
        await ws.send(CLOSE_STREAM)
        await asyncio.wait_for(rx, 60)
        assert ws.close_code == 1000
    kinds = [m["type"] for m in msgs]
    assert kinds[0] == "session" and kinds[-1] == "closed"
    session = msgs[0]
    assert session["protocol_version"] == 2 and session["settings"]["interim_results"] is True
    assert session["settings"]["language"] == "en" and session["settings"]["endpointing"] == 500
    finals = [m for m in msgs if m["type"] == "final"]
    partials = [m for m in msgs if m["type"] == "partial"]
    assert [f["segment"] for f in finals] == sorted({f["segment"] for f in finals})
    assert partials, "no interim results at real-time pace"
    for f in finals:
        seg = f["segment"]
        final_at = msgs.index(f)
        assert all(msgs.index(p) < final_at for p in partials if p["segment"] == seg)
        assert f["speech_final"] is True and f["session_id"] == session["session_id"]
        started = [
            i for i, m in enumerate(msgs) if m["type"] == "speech_started" and m["segment"] == seg
        ]
        assert started and started[0] < final_at
    for p in partials:
        stable = normalize(p["stable_text"]).split()
        assert normalize(p["text"]).split()[: len(stable)] == stable
        assert p["start"] < p["end"]
    # the stable prefix of a segment only grows
    for seg in {p["segment"] for p in partials}:
        stables = [len(p["stable_text"].split()) for p in partials if p["segment"] == seg]
        assert stables == sorted(stables)
    assert msgs[-1]["segments"] == len(finals) and abs(msgs[-1]["audio_seconds"] - 11.0) < 0.1
    reference = (corpus / "long" / "jfk.txt").read_text()
    assert wer([(reference, " ".join(f["text"] for f in finals))]).wer <= 0.2


async def test_finals_are_the_same_with_and_without_interim_results(
    service: Service, corpus
) -> None:
    """Interim results never change the finals: the same utterances are cut (same segments and
    times) and transcribed as well. (The prompt each final gets depends on which earlier finals
    are done by then, so the words may differ by a prompt's effect, never by partials.)"""
    pcm = load_pcm(corpus / "long" / "jfk.flac")
    reference = (corpus / "long" / "jfk.txt").read_text()
    runs = []
    for interim in ("true", "false"):
        msgs: list[dict[str, Any]] = []
        async with websockets.connect(f"{service.ws}/v1/listen?interim_results={interim}") as ws:
            rx = asyncio.create_task(receive_all(ws, msgs))
            await stream(ws, pcm, speed=1.5)
            await ws.send(CLOSE_STREAM)
            await asyncio.wait_for(rx, 60)
        if interim == "false":
            assert not any(m["type"] == "partial" for m in msgs)
        else:
            assert any(m["type"] == "partial" for m in msgs)
        runs.append([m for m in msgs if m["type"] == "final"])
    with_partials, without = runs
    assert [(f["segment"], f["start"], f["end"]) for f in with_partials] == [
        (f["segment"], f["start"], f["end"]) for f in without
    ]
    wers = [wer([(reference, " ".join(f["text"] for f in run))]).wer for run in runs]
    assert abs(wers[0] - wers[1]) <= 0.05, wers


async def test_finalize_returns_the_open_utterance_now(service: Service) -> None:
    utt = next(u for u in librispeech() if u.utt_id == "1089-134691-0001")
    pcm = load_pcm(utt.path)
    msgs: list[dict[str, Any]] = []
    async with websockets.connect(f"{service.ws}/v1/listen?interim_results=false") as ws:
        rx = asyncio.create_task(receive_all(ws, msgs))
        cut = len(pcm) // 2 // 2 * 2
        await stream(ws, pcm, speed=0, stop_at=cut)  # mid-utterance: no silence yet
        await ws.send(FINALIZE)
        deadline = time.monotonic() + 30
        while not any(m["type"] == "final" for m in msgs):
            assert time.monotonic() < deadline, "finalize returned nothing"
            await asyncio.sleep(0.05)
        first = next(m for m in msgs if m["type"] == "final")
        assert first["speech_final"] is True and first["from_finalize"] is True
        assert first["end"] <= cut / 32000 + 0.01
        await ws.send(pcm[cut:])
        await ws.send(KEEPALIVE)
        await ws.send(CLOSE_STREAM)
        await asyncio.wait_for(rx, 60)
    finals = [m for m in msgs if m["type"] == "final"]
    assert len(finals) >= 2 and [f["segment"] for f in finals] == list(range(len(finals)))
    assert wer([(utt.reference, " ".join(f["text"] for f in finals))]).wer <= 0.3


async def test_resume_after_dropped_socket_delivers_every_final_exactly_once(
    service: Service,
) -> None:
    pcm, reference, offsets = three_utterances()
    drop_at = (offsets[1] + (offsets[2] - offsets[1]) // 2) // 2 * 2  # inside the second utterance
    first: list[dict[str, Any]] = []
    ws = await websockets.connect(
        f"{service.ws}/v1/listen?interim_results=true&session_started=true"
    )
    rx = asyncio.create_task(receive_all(ws, first))
    await stream(ws, pcm, speed=2.0, stop_at=drop_at)
    deadline = time.monotonic() + 30
    while not any(m["type"] == "final" for m in first):  # the first utterance is final by now
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    ws.transport.abort()  # the network goes away: no close frame
    await asyncio.wait_for(rx, 10)
    session_id = first[0]["session_id"]
    got = [m["segment"] for m in first if m["type"] == "final"]
    last = max(got)

    await asyncio.sleep(1.0)
    second: list[dict[str, Any]] = []
    url = f"{service.ws}/v1/listen?session_id={session_id}&last_segment={last}&session_started=true"
    async with websockets.connect(url) as ws2:
        rx2 = asyncio.create_task(receive_all(ws2, second))
        await stream(ws2, pcm[drop_at:], speed=2.0)
        await ws2.send(CLOSE_STREAM)
        await asyncio.wait_for(rx2, 60)
        assert ws2.close_code == 1000
    assert second[0]["type"] == "session" and second[0]["resumed"] is True
    assert second[0]["session_id"] == session_id
    finals = [m for m in first + second if m["type"] == "final"]
    segments = [f["segment"] for f in finals]
    assert segments == list(range(len(segments))), segments  # each exactly once, in order
    assert all(f["segment"] > last for f in second if f["type"] == "final")
    assert second[-1]["type"] == "closed" and second[-1]["segments"] == len(finals)
    assert wer([(reference, " ".join(f["text"] for f in finals))]).wer <= 0.2


async def test_resuming_a_finished_session_replays_its_finals(service: Service) -> None:
    utt = next(u for u in librispeech() if u.utt_id == "2830-3980-0043")
    msgs: list[dict[str, Any]] = []
    async with websockets.connect(f"{service.ws}/v1/listen?session_started=true") as ws:
        rx = asyncio.create_task(receive_all(ws, msgs))
        await stream(ws, load_pcm(utt.path), speed=0)
        await ws.send(CLOSE_STREAM)
        await asyncio.wait_for(rx, 60)
    sid = msgs[0]["session_id"]
    again: list[dict[str, Any]] = []
    resume = f"{service.ws}/v1/listen?session_id={sid}&last_segment=-1&session_started=true"
    async with websockets.connect(resume) as ws:
        await asyncio.wait_for(receive_all(ws, again), 30)
    assert [m["type"] for m in again] == [m["type"] for m in msgs if m["type"] != "partial"]
    assert [m.get("text") for m in again if m["type"] == "final"] == [
        m["text"] for m in msgs if m["type"] == "final"
    ]


async def test_native_rate_is_resampled(service: Service, corpus) -> None:
    audio44 = decode_file(corpus / "long" / "jfk.flac", sample_rate=44100)
    msgs: list[dict[str, Any]] = []
    async with websockets.connect(
        f"{service.ws}/v1/listen?sample_rate=44100&interim_results=false&session_started=true"
    ) as ws:
        rx = asyncio.create_task(receive_all(ws, msgs))
        await stream(ws, float32_to_pcm16(audio44), speed=0, chunk=8821)  # odd frame sizes too
        await ws.send(CLOSE_STREAM)
        await asyncio.wait_for(rx, 60)
    assert msgs[0]["settings"]["sample_rate"] == 44100
    finals = [m for m in msgs if m["type"] == "final"]
    assert (
        wer([((corpus / "long" / "jfk.txt").read_text(), " ".join(f["text"] for f in finals))]).wer
        <= 0.2
    )
    assert finals[-1]["end"] == pytest.approx(11.0, abs=0.1)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("encoding=opus", "not supported"),
        ("encoding=wav49", "not an encoding"),
        ("channels=2", "mono"),
        ("sample_rate=fast", "'sample_rate' must be an integer"),
        ("interim_results=maybe", "'interim_results' must be true or false"),
        ("session_id=../../etc", "'session_id' is not a session id"),
        ("language=klingon", "'language'"),
    ],
)
async def test_bad_parameters_refuse_the_upgrade(
    service: Service, query: str, message: str
) -> None:
    """As Deepgram: HTTP 400 before the upgrade, ``{"err_code", "err_msg", "request_id"}``."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"{service.ws}/v1/listen?{query}")
    response = refused.value.response
    assert response.status_code == 400
    body = json.loads(response.body)
    assert body["err_code"] == "Bad Request" and message in body["err_msg"] and body["request_id"]


async def test_unknown_session_and_clamped_endpointing(service: Service) -> None:
    url = f"{service.ws}/v1/listen?session_id=0123456789abcdef0123456789abcdef"
    async with websockets.connect(url) as ws:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert msg["type"] == "Error" and msg["code"] == "unknown_session" and msg["description"]
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1008
    # Deepgram's default endpointing (10 ms) is raised to ENDPOINTING_MIN_MS, not refused
    async with websockets.connect(
        f"{service.ws}/v1/listen?endpointing=10&session_started=true"
    ) as ws:
        session = flatten(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        assert session["type"] == "session" and session["settings"]["endpointing"] == 100


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("nope", "invalid_json"),
        ('{"type":"pause"}', "unsupported_message"),
        ('{"type":"Configure","keyterms":[1]}', "invalid_parameter"),
    ],
)
async def test_bad_control_frames(service: Service, frame: str, code: str) -> None:
    async with websockets.connect(f"{service.ws}/v1/listen?session_started=true") as ws:
        assert json.loads(await ws.recv())["type"] == "SessionStarted"
        await ws.send(frame)
        msg = flatten(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        assert msg["type"] == "error" and msg["code"] == code
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1008 and ws.close_reason == f"DATA-0000 {code}"


async def test_speculative_finals_are_the_ordinary_finals_sooner(
    spawn, redis_client, key_prefix: str
) -> None:
    """Speculative finals (workers/speculation.py) change when a final arrives, never what it
    says: the same stream through a VAD worker with and without them gives the same segments
    and the same words, and with them on, finals really went through the speculative path."""
    from shared.keys import Keys

    pcm, reference, _ = three_utterances()
    port = free_port()
    asr = spawn("asr-worker", ASR_CPU_THREADS="2")
    gw = spawn("gateway", PORT=str(port))
    runs: dict[str, list[dict[str, Any]]] = {}
    speculated: dict[str, int] = {}
    for flag in ("true", "false"):
        vad = spawn("vad-worker", SPECULATIVE_FINALS=flag)
        wait_http(f"http://127.0.0.1:{port}/readyz", 90, [asr, gw, vad])
        msgs: list[dict[str, Any]] = []
        url = f"ws://127.0.0.1:{port}/v1/listen?interim_results=false&language=en&session_started=true"
        async with websockets.connect(url) as ws:
            rx = asyncio.create_task(receive_all(ws, msgs))
            await stream(ws, pcm, speed=1.0)
            await ws.send(CLOSE_STREAM)
            await asyncio.wait_for(rx, 90)
        vad.stop()
        sid = msgs[0]["session_id"]
        done = await redis_client.hkeys(Keys(key_prefix).speculative(sid))
        speculated[flag] = sum(1 for k in done if k.endswith(b":d"))
        runs[flag] = [m for m in msgs if m["type"] == "final"]
    on, off = runs["true"], runs["false"]
    assert speculated["true"] >= 2 and speculated["false"] == 0, speculated
    assert [f["segment"] for f in on] == list(range(len(on)))  # each exactly once, in order
    assert [(f["segment"], f["start"], f["end"], f["text"]) for f in on] == [
        (f["segment"], f["start"], f["end"], f["text"]) for f in off
    ]
    assert wer([(reference, " ".join(f["text"] for f in on))]).wer <= 0.15
