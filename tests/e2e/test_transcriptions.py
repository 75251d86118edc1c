"""POST /v1/audio/transcriptions end to end: files of any format go through the pipeline as a
session (VAD worker cuts them, both ASR workers transcribe), in every response format, with
OpenAI-shaped errors for what cannot be transcribed."""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from shared.keys import Keys
from shared.redis_util import entry_data
from shared.schemas import Transcript, decode_as
from tests.conftest import Service, librispeech, wait_http
from whisper_streaming.evaluation import wer
from whisper_streaming.up import free_port

pytestmark = pytest.mark.e2e

URL = "/v1/audio/transcriptions"


def post(base: str, path: Path | None = None, *, data: bytes | None = None, name: str = "a.wav",
         **fields: str | list[str]) -> httpx.Response:  # fmt: skip
    content = path.read_bytes() if path is not None else data
    files = {"file": (path.name if path else name, content)} if content is not None else None
    return httpx.post(base + URL, files=files, data=fields, timeout=180)


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def test_json_from_a_44k_stereo_flac(service: Service, corpus: Path) -> None:
    resp = post(service.http, corpus / "long" / "jfk.flac", model="whisper-1", language="en")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"text"}
    assert wer([((corpus / "long" / "jfk.txt").read_text(), body["text"])]).wer <= 0.2


def test_long_mp3_is_cut_by_the_vad_and_shared_by_the_asr_pool(
    service: Service, corpus: Path
) -> None:
    mp3 = corpus / "long" / "sonnet002_librivox.mp3"
    resp = post(
        service.http, mp3, response_format="verbose_json",
        **{"timestamp_granularities[]": ["word", "segment"]},
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["task"] == "transcribe" and body["language"] == "english"
    assert abs(body["duration"] - 52.9) < 0.2
    segments, words = body["segments"], body["words"]
    assert len(segments) >= 4, segments
    assert [s["id"] for s in segments] == list(range(len(segments)))
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts) and all(s["start"] < s["end"] for s in segments)
    assert words and all(w["start"] <= w["end"] for w in words)
    assert body["text"] == " ".join(s["text"].strip() for s in segments)
    reference = (corpus / "long" / "sonnet002_librivox.txt").read_text().split("\n", 1)[1]
    assert wer([(reference, body["text"])]).wer <= 0.35, body["text"]
    # the same session on the durable transcript stream: every segment, from both ASR workers
    r = redis.Redis.from_url(service.redis_url)
    try:
        sid = resp.headers["x-session-id"]
        entries = r.xrange(Keys(service.key_prefix).transcript(sid))
    finally:
        r.close()
    finals = [decode_as(entry_data(fields), Transcript) for _id, fields in entries]
    # an upload arrives faster than real time: cut like a file, into segments of up to 29 s
    # (the response's segments are captions: finals split at their words, formats.cues)
    # (two workers: the stream holds them in the order they finished)
    assert sorted(t.segment for t in finals) == list(range(len(finals))) and len(finals) >= 2
    assert all(t.end - t.start <= 29.5 for t in finals) and len(segments) > len(finals)
    assert {t.worker for t in finals} == {"asr-0", "asr-1"}


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
def test_text_srt_vtt(service: Service, fmt: str) -> None:
    utt = next(u for u in librispeech() if u.utt_id == "1089-134691-0000")
    resp = post(service.http, utt.path, response_format=fmt, language="english")
    assert resp.status_code == 200, resp.text
    body = resp.text
    if fmt == "text":
        assert resp.headers["content-type"].startswith("text/plain")
        assert wer([(utt.reference, body)]).wer <= 0.2
    elif fmt == "srt":
        assert body.startswith("1\n00:00:00,") and " --> " in body
    else:
        assert resp.headers["content-type"].startswith("text/vtt")
        assert body.startswith("WEBVTT\n\n00:00:") and " --> " in body


def test_prompt_is_accepted(service: Service) -> None:
    utt = next(u for u in librispeech() if u.utt_id == "2830-3980-0043")
    resp = post(service.http, utt.path, prompt="Experience proves this.", response_format="text")
    assert resp.status_code == 200 and wer([(utt.reference, resp.text)]).wer <= 0.2


def test_silence_and_empty_audio_give_empty_text(service: Service) -> None:
    silence = wav_bytes(np.zeros(16000 * 2, np.int16))
    assert post(service.http, data=silence).json() == {"text": ""}
    assert post(service.http, data=wav_bytes(np.zeros(0, np.int16))).json() == {"text": ""}


@pytest.mark.parametrize(
    ("fields", "content", "status", "code"),
    [
        ({}, None, 400, "missing_file"),
        ({"response_format": "xml"}, b"x", 400, "invalid_value"),
        ({"language": "klingon"}, b"x", 400, "invalid_value"),
        ({"timestamp_granularities[]": "char"}, b"x", 400, "invalid_value"),
        ({}, b"RIFF\x00\x00\x00\x00WAVEnot really" + bytes(range(256)) * 8, 415, "unsupported_file"),
        ({}, b"\x89PNG\r\n\x1a\n" + bytes(2000), 415, "unsupported_format"),
        # demuxers that open further URLs or files never run: an SDP description (binds a UDP
        # port), an ffconcat list (opens paths), an HLS playlist
        ({}, b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 5004 RTP/AVP 0\n", 415, "unsupported_format"),
        ({}, b"ffconcat version 1.0\nfile 'pyproject.toml'\n", 415, "unsupported_format"),
        ({}, b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:9/a.ts\n", 415, "unsupported_format"),
    ],
)  # fmt: skip
def test_bad_requests_get_json_errors(
    service: Service, fields: dict[str, str], content: bytes | None, status: int, code: str
) -> None:
    resp = post(service.http, data=content, **fields)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code and error["message"] and error["type"] == "invalid_request_error"


def test_translation_with_only_english_workers_is_refused(service: Service, corpus: Path) -> None:
    """``/v1/audio/translations`` with the bundled tiny.en only: 400 ``unsupported_language``
    naming what is served, never an English transcription passed off as a translation; a bad
    ``temperature`` is ``invalid_value`` as in OpenAI's API."""
    path = corpus / "other-languages" / "de_picovoice.wav"
    files = {"file": (path.name, path.read_bytes())}
    resp = httpx.post(service.http + "/v1/audio/translations", files=files, timeout=120)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "unsupported_language" and error["message"].endswith("serve: en")
    bad = httpx.post(service.http + "/v1/audio/translations", files=files,
                     data={"temperature": "hot"}, timeout=120)  # fmt: skip
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "temperature"


@pytest.fixture
def small_gateway(spawn) -> Iterator[str]:
    """A gateway of its own with a 100 kB upload limit (no workers: refused before they matter)."""
    port = free_port()
    gw = spawn("gateway", PORT=str(port), TRANSCRIPTION_MAX_BYTES="100000")
    wait_http(f"http://127.0.0.1:{port}/healthz", 60, [gw])
    yield f"http://127.0.0.1:{port}"


def test_too_large_is_413_with_or_without_content_length(small_gateway: str) -> None:
    big = wav_bytes(np.zeros(16000 * 4, np.int16))  # 128 kB
    resp = post(small_gateway, data=big)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "file_too_large"

    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()

    def chunked() -> Iterator[bytes]:  # no Content-Length: the counted body must stop it
        yield head
        for i in range(0, len(big), 16384):
            yield big[i : i + 16384]
        yield f"\r\n--{boundary}--\r\n".encode()

    resp = httpx.post(
        small_gateway + URL,
        content=chunked(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=30,
    )
    assert resp.status_code == 413, resp.text
    assert json.loads(resp.text)["error"]["code"] == "file_too_large"


def test_an_upload_declaring_more_audio_than_the_limit_is_refused_before_decoding(
    service: Service, spawn
) -> None:
    """A 170 kB FLAC that declares 15 minutes, to a gateway whose cap is 60 s (live workers of
    the shared service, so the refusal is the cap's, not a 503)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=16000)
        stream.layout = "mono"
        for _ in range(90):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 160000), np.int16), format="s16", layout="mono")  # fmt: skip
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    port = free_port()
    gw = spawn("gateway", PORT=str(port), KEY_PREFIX=service.key_prefix, TRANSCRIPTION_MAX_SECONDS="60")  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/readyz", 60, [gw])
    resp = post(f"http://127.0.0.1:{port}", data=buf.getvalue(), name="long.flac")
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["code"] == "audio_too_long"
    assert "60 s" in resp.json()["error"]["message"]


def test_no_workers_is_503(small_gateway: str) -> None:
    resp = post(small_gateway, data=wav_bytes(np.zeros(1600, np.int16)))
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "no_workers"
