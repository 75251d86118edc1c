"""Deepgram's official Python SDK (deepgram-sdk) against /v1/listen, end to end through the real
pipeline: the live client (interim results and finals, SpeechStarted, KeepAlive, Finalize,
CloseStream, Metadata), the pre-recorded client, /v1/auth/grant, and bad input answered in
Deepgram's shapes without costing another session anything."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from deepgram import AsyncDeepgramClient, DeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from deepgram.listen.v1.types import (
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)

from tests.conftest import Service, librispeech
from whisper_streaming.evaluation import wer
from whisper_streaming.replay import load_pcm

pytestmark = [
    pytest.mark.e2e,
    # the SDK (7.x) still imports websockets' deprecated legacy client and exception names
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

LIVE = {"model": "nova-3", "encoding": "linear16", "sample_rate": 16000, "language": "en"}


def environment(service: Service) -> DeepgramClientEnvironment:
    """Deepgram's SDK pointed at this service ("for private deployments")."""
    return DeepgramClientEnvironment(
        base=service.http, production=service.ws, agent=service.ws, agent_rest=service.http
    )


@pytest.fixture
def rest(service: Service) -> Iterator[DeepgramClient]:
    """The SDK's REST client, its connection pool closed after the test."""
    with httpx.Client(timeout=180) as http:
        yield DeepgramClient(api_key="any-key", environment=environment(service), httpx_client=http)


def live_client(service: Service) -> AsyncDeepgramClient:
    return AsyncDeepgramClient(api_key="any-key", environment=environment(service))


async def send_audio(socket: Any, pcm: bytes, speed: float, chunk: int = 3200) -> None:
    t0 = time.monotonic()
    for i in range(0, len(pcm), chunk):
        await socket.send_media(pcm[i : i + chunk])
        if speed:
            await asyncio.sleep(max(0.0, t0 + (i + chunk) / 32000 / speed - time.monotonic()))


async def receive_all(socket: Any, into: list[Any]) -> None:
    try:
        while True:
            into.append(await socket.recv())
    except websockets.ConnectionClosed:
        pass


def finals_text(msgs: list[Any]) -> str:
    return " ".join(
        m.channel.alternatives[0].transcript
        for m in msgs
        if isinstance(m, ListenV1Results) and m.is_final
    )


async def test_live_client_interim_results_finals_events_and_metadata(
    service: Service, corpus: Path
) -> None:
    pcm = load_pcm(corpus / "long" / "jfk.flac")
    msgs: list[Any] = []
    options = LIVE | {
        "interim_results": "true", "vad_events": "true", "utterance_end_ms": 1000,
        "punctuate": "true", "smart_format": "true", "keyterm": ["Kennedy", "Americans"],
    }  # fmt: skip
    async with live_client(service).listen.v1.connect(**options) as socket:
        rx = asyncio.create_task(receive_all(socket, msgs))
        await send_audio(socket, pcm[: len(pcm) // 2], speed=1.0)
        await socket.send_keep_alive()
        await send_audio(socket, pcm[len(pcm) // 2 :], speed=1.0)
        await socket.send_close_stream()
        await asyncio.wait_for(rx, 60)
    results = [m for m in msgs if isinstance(m, ListenV1Results)]
    interim = [m for m in results if not m.is_final]
    finals = [m for m in results if m.is_final]
    assert interim, "no interim results at real-time pace"
    assert finals and all(f.speech_final for f in finals)
    assert isinstance(msgs[-1], ListenV1Metadata), msgs[-1]
    assert msgs[-1].duration == pytest.approx(11.0, abs=0.1)
    assert any(isinstance(m, ListenV1SpeechStarted) for m in msgs)
    assert any(isinstance(m, ListenV1UtteranceEnd) for m in msgs)
    for i, m in enumerate(msgs):  # Deepgram's order: an utterance's final, then its end
        if isinstance(m, ListenV1UtteranceEnd):
            seg = m.segment  # type: ignore[attr-defined]
            its = [j for j, f in enumerate(msgs) if isinstance(f, ListenV1Results)
                   and f.is_final and f.segment == seg]  # type: ignore[attr-defined]  # fmt: skip
            assert all(j < i for j in its), (seg, its, i)
    starts = [f.start for f in finals]
    assert starts == sorted(starts)
    for f in finals:
        alt = f.channel.alternatives[0]
        assert f.channel_index == [0, 1] and f.duration > 0
        assert alt.words and all(w.start <= w.end for w in alt.words)
        assert all(w.punctuated_word and w.word == w.word.lower() for w in alt.words)
        assert 0 < alt.confidence <= 1
    for p in interim:  # our extension: the stable prefix of a partial is a prefix of it
        stable = p.stable_transcript  # type: ignore[attr-defined]
        assert p.channel.alternatives[0].transcript.startswith(stable)
    reference = (corpus / "long" / "jfk.txt").read_text()
    assert wer([(reference, finals_text(msgs))]).wer <= 0.2


async def test_live_client_finalize_returns_the_open_utterance(service: Service) -> None:
    utt = next(u for u in librispeech() if u.utt_id == "1089-134691-0001")
    pcm = load_pcm(utt.path)
    cut = len(pcm) // 2 // 2 * 2  # mid-utterance: no silence yet
    msgs: list[Any] = []
    async with live_client(service).listen.v1.connect(**LIVE) as socket:
        rx = asyncio.create_task(receive_all(socket, msgs))
        await send_audio(socket, pcm[:cut], speed=0)
        await socket.send_finalize()
        deadline = time.monotonic() + 30
        while not any(isinstance(m, ListenV1Results) for m in msgs):
            assert time.monotonic() < deadline, "Finalize returned nothing"
            await asyncio.sleep(0.05)
        first = next(m for m in msgs if isinstance(m, ListenV1Results))
        assert first.is_final and first.from_finalize
        assert first.start + first.duration <= cut / 32000 + 0.01
        await send_audio(socket, pcm[cut:], speed=0)
        await socket.send_close_stream()
        await asyncio.wait_for(rx, 60)
    finals = [m for m in msgs if isinstance(m, ListenV1Results) and m.is_final]
    assert len(finals) >= 2 and isinstance(msgs[-1], ListenV1Metadata)
    assert not any(f.from_finalize for f in finals[1:])  # CloseStream's last final is not
    assert wer([(utt.reference, finals_text(msgs))]).wer <= 0.3


def test_prerecorded_client_file_with_utterances_and_paragraphs(
    rest: DeepgramClient, corpus: Path
) -> None:
    client = rest
    audio = (corpus / "long" / "jfk.flac").read_bytes()  # 44.1 kHz stereo FLAC
    response = client.listen.v1.media.transcribe_file(
        request=audio, model="nova-3", smart_format=True, punctuate=True, utterances=True,
        detect_language=True,
    )  # fmt: skip
    assert response.metadata.duration == pytest.approx(11.0, abs=0.1)
    assert response.metadata.channels == 1 and response.metadata.request_id
    channel = response.results.channels[0]
    assert channel.detected_language == "en"
    alt = channel.alternatives[0]
    reference = (corpus / "long" / "jfk.txt").read_text()
    assert wer([(reference, alt.transcript)]).wer <= 0.2
    assert alt.words and alt.paragraphs and alt.paragraphs.paragraphs
    utterances = response.results.utterances
    assert utterances and " ".join(u.transcript for u in utterances) == alt.transcript


def test_prerecorded_raw_linear16_and_url_bodies(rest: DeepgramClient) -> None:
    utt = next(u for u in librispeech() if u.utt_id == "2830-3980-0043")
    client = rest
    response = client.listen.v1.media.transcribe_file(
        request=load_pcm(utt.path), encoding="linear16", language="en",
        request_options={"additional_query_parameters": {"sample_rate": 16000}},
    )  # fmt: skip
    transcript = response.results.channels[0].alternatives[0].transcript
    assert wer([(utt.reference, transcript)]).wer <= 0.3
    # no server-side fetches unless LISTEN_URL_HOSTS names the host
    with pytest.raises(ApiError) as refused:
        client.listen.v1.media.transcribe_url(url="http://127.0.0.1:1/audio.wav")
    assert refused.value.status_code == 400
    body = refused.value.body
    assert isinstance(body, dict) and body["err_code"] and "LISTEN_URL_HOSTS" in body["err_msg"]


def test_grant_issues_a_short_lived_token(service: Service, rest: DeepgramClient) -> None:
    grant = rest.auth.v1.tokens.grant(ttl_seconds=30)
    assert grant.access_token and grant.expires_in == 30
    bad = httpx.post(service.http + "/v1/auth/grant", json={"ttl_seconds": "soon"}, timeout=30)
    assert bad.status_code == 400 and bad.json()["err_code"] == "Bad Request"


async def test_bad_input_gets_deepgrams_error_and_close_and_costs_nobody_else(
    service: Service, corpus: Path
) -> None:
    """Bad messages, an oversized frame and a wrong parameter, each on its own socket while a
    good SDK session streams beside them: Deepgram's ``Error`` message (``SchemaError`` for what
    cannot be parsed) and close code 1008 (1009 for the frame), or, for a parameter, the HTTP
    400 Deepgram refuses the upgrade with; the good session is transcribed as well as ever."""
    pcm = load_pcm(corpus / "long" / "jfk.flac")
    msgs: list[Any] = []

    async def good() -> None:
        async with live_client(service).listen.v1.connect(**LIVE) as socket:
            rx = asyncio.create_task(receive_all(socket, msgs))
            await send_audio(socket, pcm, speed=2.0)
            await socket.send_close_stream()
            await asyncio.wait_for(rx, 60)

    async def bad(payload: str | bytes) -> tuple[dict[str, Any], int | None, str | None]:
        """The error; the audio before it is still transcribed (its finals, then Metadata)."""
        got: list[dict[str, Any]] = []
        async with websockets.connect(f"{service.ws}/v1/listen", max_size=None) as ws:
            await ws.send(pcm[:48000])
            await ws.send(payload)
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    got.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        assert [m["type"] for m in got if m["type"] != "Results"] == ["Error", "Metadata"], got
        return got[0], ws.close_code, ws.close_reason

    task = asyncio.create_task(good())
    cases: list[tuple[str | bytes, str, str, int]] = [
        ('{"type": "Pause"}', "SchemaError", "unsupported_message", 1008),
        ("nope", "SchemaError", "invalid_json", 1008),
        ('{"type": "Configure", "keyterms": 5}', "invalid_parameter", "invalid_parameter", 1008),
        (b"\0" * 1_000_000, "frame_too_large", "frame_too_large", 1009),
    ]
    for payload, variant, code, close in cases:
        msg, got_close, reason = await bad(payload)
        assert msg["type"] == "Error" and msg["variant"] == variant, msg
        assert msg["code"] == code and msg["description"]
        assert got_close == close and reason and reason.startswith("DATA-0000")
    with pytest.raises(ApiError) as refused:
        async with live_client(service).listen.v1.connect(**(LIVE | {"encoding": "speex"})):
            pass
    assert refused.value.status_code == 400
    with pytest.raises(websockets.InvalidStatus) as invalid:
        await websockets.connect(f"{service.ws}/v1/listen?encoding=wav49")
    response = invalid.value.response
    assert response.status_code == 400
    assert json.loads(response.body)["err_code"] == "Bad Request"
    assert "wav49" in response.headers["dg-error"]
    await task
    reference = (corpus / "long" / "jfk.txt").read_text()
    assert isinstance(msgs[-1], ListenV1Metadata)
    assert wer([(reference, finals_text(msgs))]).wer <= 0.2


def test_prerecorded_url_from_an_allowed_host_is_fetched_within_bounds(
    spawn, corpus: Path, tmp_path: Path
) -> None:
    """With ``LISTEN_URL_HOSTS`` naming a host, a ``{"url": …}`` body is fetched from it (and
    transcribed); another host is refused (403), and a file over ``TRANSCRIPTION_MAX_BYTES`` is
    refused (413) without being read whole."""
    import functools
    import http.server
    import shutil
    import threading

    from tests.reliability.test_crash_recovery import start_stack

    shutil.copy(corpus / "long" / "jfk.flac", tmp_path / "jfk.flac")
    (tmp_path / "big.bin").write_bytes(b"\0" * 3_000_000)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _, (url,) = start_stack(
            spawn, LISTEN_URL_HOSTS="127.0.0.1", TRANSCRIPTION_MAX_BYTES="2000000"
        )
        base = url.replace("ws://", "http://")
        files = f"http://127.0.0.1:{server.server_address[1]}"
        with httpx.Client(timeout=180) as http:
            client = DeepgramClient(
                api_key="k", httpx_client=http,
                environment=DeepgramClientEnvironment(
                    base=base, production=url, agent=url, agent_rest=base
                ),
            )  # fmt: skip
            response = client.listen.v1.media.transcribe_url(url=f"{files}/jfk.flac")
            transcript = response.results.channels[0].alternatives[0].transcript
            reference = (corpus / "long" / "jfk.txt").read_text()
            assert wer([(reference, transcript)]).wer <= 0.2
            for target, status in [
                (f"http://localhost:{server.server_address[1]}/jfk.flac", 403),
                (f"{files}/big.bin", 413),
            ]:
                with pytest.raises(ApiError) as refused:
                    client.listen.v1.media.transcribe_url(url=target)
                assert refused.value.status_code == status, refused.value.body
    finally:
        server.shutdown()
        server.server_close()
