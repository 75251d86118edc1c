"""Key-term bounds, the audio encodings of the live endpoints (G.711 against FFmpeg's decoder,
Ogg/WebM Opus decoded incrementally) and the OpenAI realtime events (pure parts)."""

from __future__ import annotations

import base64
import io
import json

import av
import numpy as np
import pytest

from gateway.encodings import (
    ALAW_TO_PCM16,
    MULAW_TO_PCM16,
    EncodingError,
    InputFormat,
    g711_decode,
    parse_input_format,
)
from gateway.realtime_protocol import (
    Append,
    Commit,
    RealtimeError,
    SessionUpdate,
    apply_update,
    default_config,
    error_event,
    parse_event,
)
from shared.audio import decode_file
from shared.keyterms import MAX_KEYTERMS, MAX_KEYTERMS_CHARS, KeytermError, check_keyterms, hotwords
from shared.schemas import AudioControl, SessionStart, decode, encode
from tests.codecs import encode_stream
from whisper_streaming.corpus import corpus_dir

CORPUS = corpus_dir()


def test_keyterms_are_bounded_in_count_and_length() -> None:
    assert check_keyterms([" Bartley ", "", "Beaumont"]) == ["Bartley", "Beaumont"]
    assert hotwords(["a", "b"]) == "a, b" and hotwords([]) is None
    with pytest.raises(KeytermError, match="limit of 100"):
        check_keyterms(["x"] * (MAX_KEYTERMS + 1))
    with pytest.raises(KeytermError, match="characters"):
        check_keyterms(["y" * (MAX_KEYTERMS_CHARS + 1)])
    with pytest.raises(KeytermError, match="strings"):
        check_keyterms([3])


def test_keyterms_travel_on_session_start_and_control_entries() -> None:
    start = decode(encode(SessionStart(session_id="s", keyterms=["Gwynplaine"])))
    assert isinstance(start, SessionStart) and start.keyterms == ["Gwynplaine"]
    ctl = decode(encode(AudioControl(session_id="s", seq=3, kind="keyterms", keyterms=["X"])))
    assert isinstance(ctl, AudioControl) and ctl.keyterms == ["X"]


def _ffmpeg_decode(data: bytes, fmt: str) -> np.ndarray:
    with av.open(io.BytesIO(data), format=fmt, options={"sample_rate": "8000"}) as c:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])


def test_g711_tables_are_ffmpegs_and_the_itu_values() -> None:
    every = bytes(range(256))
    assert np.array_equal(_ffmpeg_decode(every, "mulaw"), MULAW_TO_PCM16)
    assert np.array_equal(_ffmpeg_decode(every, "alaw"), ALAW_TO_PCM16)
    # G.711's known points: μ-law 0xFF and 0x7F are ±0, 0x00 is the negative peak
    assert (MULAW_TO_PCM16[0xFF], MULAW_TO_PCM16[0x7F], MULAW_TO_PCM16[0x00]) == (0, 0, -32124)
    assert (ALAW_TO_PCM16[0xD5], ALAW_TO_PCM16[0x55], ALAW_TO_PCM16[0xAA]) == (8, -8, 32256)
    assert g711_decode(b"\xff\x80", "mulaw") == np.array([0, 32124], "<i2").tobytes()


@pytest.mark.parametrize("container", ["ogg", "webm"])
def test_opus_streams_decode_incrementally_as_ffmpeg_decodes_the_file(container: str) -> None:
    audio = decode_file(CORPUS / "long" / "jfk.flac", 48000)
    data = encode_stream(audio, container, "libopus", 48000)
    decoder = InputFormat("opus").decoder()
    pieces = [decoder.push(data[i : i + 500]) for i in range(0, len(data), 500)]
    assert sum(1 for p in pieces if p) > 10  # audio comes out as the stream grows
    ours = np.frombuffer(b"".join(pieces), "<i2") / 32768
    reference = decode_file(io.BytesIO(data))
    n = min(len(ours), len(reference))
    assert abs(len(ours) - len(reference)) < 1600
    assert np.corrcoef(ours[:n], reference[:n])[0, 1] > 0.999


def test_bad_audio_and_unknown_encodings_are_errors() -> None:
    with pytest.raises(EncodingError):
        InputFormat("opus").decoder().push(b"RIFF\0\0\0\0WAVE")
    with pytest.raises(EncodingError):
        InputFormat("opus").decoder().push(b"OggS" + b"\0" * 60)
    with pytest.raises(EncodingError, match="not supported"):
        parse_input_format("flac", None)
    assert parse_input_format("mulaw", None) == InputFormat("mulaw", 8000)
    assert parse_input_format(None, 44100) == InputFormat("linear16", 44100)
    assert parse_input_format("opus", 16000).encoding == "opus"


def test_realtime_events_and_errors() -> None:
    audio = base64.b64encode(b"\1\2").decode()
    assert parse_event(json.dumps({"type": "input_audio_buffer.append", "audio": audio}), 10) == Append(b"\1\2")  # fmt: skip
    assert isinstance(parse_event('{"type": "input_audio_buffer.commit"}', 10), Commit)
    with pytest.raises(RealtimeError) as info:
        parse_event(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 40}), 10)
    assert info.value.code == "audio_too_large"
    with pytest.raises(RealtimeError) as info:
        parse_event(json.dumps({"type": "nope", "event_id": "evt_1"}), 10)
    event = error_event(info.value)
    assert event["type"] == "error" and event["error"]["event_id"] == "evt_1"
    assert event["error"]["type"] == "invalid_request_error" and event["error"]["param"] == "type"


def test_realtime_session_updates_ga_and_beta() -> None:
    base = default_config(500)
    assert base.input_format == InputFormat("linear16", 24000) and base.silence_ms == 500
    ga = {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcmu"}, "turn_detection": None,
        "transcription": {"model": "gpt-4o-transcribe", "language": "en", "prompt": "Bartley"}}}}  # fmt: skip
    config = apply_update(base, ga, beta=False, min_silence_ms=100)
    assert config.input_format == InputFormat("mulaw", 8000) and config.silence_ms is None
    assert (config.model, config.language, config.prompt) == ("gpt-4o-transcribe", "en", "Bartley")
    assert config.session("sess_1", False)["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    beta = {"input_audio_format": "pcm16", "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}  # fmt: skip
    config = apply_update(config, beta, beta=True, min_silence_ms=100)
    assert config.input_format == InputFormat("linear16", 24000) and config.silence_ms == 300
    assert config.session("sess_1", True)["input_audio_format"] == "pcm16"
    update = parse_event(json.dumps({"type": "transcription_session.update", "session": beta}), 9)
    assert update == SessionUpdate(beta, beta=True)
    for bad, param in [
        ({"type": "realtime"}, "session.type"),
        ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 5}}}}, "session.audio.input.format.rate"),
        ({"audio": {"input": {"turn_detection": {"silence_duration_ms": 50}}}}, "session.audio.input.turn_detection.silence_duration_ms"),
        ({"audio": {"input": {"transcription": {"language": "klingon"}}}}, "session.audio.input.transcription.language"),
    ]:  # fmt: skip
        with pytest.raises(RealtimeError) as info:
            apply_update(base, bad, beta=False, min_silence_ms=100)
        assert info.value.param == param
