"""Backend selection and the ``diarize`` / ``speaker`` plumbing (no torch, no Redis)."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

from gateway.context import final_message
from gateway.native_protocol import parse_options
from shared.schemas import AsrJob, SessionStart, Transcript, Word, decode, encode
from shared.settings import Settings
from tests.conftest import REPO
from workers.vad_backends import detection_params, make_vad


def test_default_backend_is_silero_and_never_imports_torch() -> None:
    s = Settings()
    assert s.vad_backend == "silero"
    vad = make_vad(s)
    assert type(vad).__name__ == "SileroVad"
    det = detection_params(s)
    assert det.threshold == s.vad_threshold and det.neg_threshold is None
    code = "import sys, workers.vad_worker, workers.asr_worker; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "False", out.stderr


def test_pyannote_detection_parameters() -> None:
    s = Settings(
        vad_backend="pyannote",
        pyannote_onset=0.6,
        pyannote_offset=0.4,
        pyannote_min_duration_on_ms=100,
    )
    det = detection_params(s)
    assert (det.threshold, det.neg_threshold, det.min_speech_ms) == (0.6, 0.4, 100)
    assert det.min_silence_ms == s.vad_min_silence_ms  # 0 = VAD_MIN_SILENCE_MS
    with pytest.raises(ValueError):
        Settings(vad_backend="webrtc")


def test_diarize_option_parses() -> None:
    assert parse_options({}).diarize is False
    opts = parse_options({"diarize": "true"})
    assert opts.diarize is True
    assert opts.public(500)["diarize"] is True


def test_speaker_only_in_finals_that_have_one() -> None:
    words = [Word(word=" hi", start=0.0, end=0.3, probability=0.9)]
    plain = final_message(
        Transcript(session_id="s", segment=0, start=0, end=1, text="hi", words=words)
    )
    assert "speaker" not in plain and "speaker" not in plain["words"][0]
    words = [Word(word=" hi", start=0.0, end=0.3, probability=0.9, speaker="S1")]
    labelled = Transcript(
        session_id="s", segment=0, start=0, end=1, text="hi", words=words, speaker="S1"
    )
    msg = final_message(labelled)
    assert msg["speaker"] == "S1" and msg["words"][0]["speaker"] == "S1"


def test_schema_stays_backward_compatible() -> None:
    """Messages from a build without these fields still decode, with the defaults."""

    class OldJob(msgspec.Struct, tag_field="type", tag="asr_job", kw_only=True):
        v: int = 1
        session_id: str
        segment: int
        start: float
        end: float
        pcm: bytes

    old = msgspec.msgpack.encode(OldJob(session_id="s", segment=0, start=0, end=1, pcm=b""))
    job = decode(old)
    assert isinstance(job, AsrJob) and job.diarize is False
    start = decode(encode(SessionStart(session_id="s", diarize=True)))
    assert isinstance(start, SessionStart) and start.diarize is True
