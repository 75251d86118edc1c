"""The encoder context fitted to the utterance, with the real model on real recordings."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import numpy as np
import pytest
from faster_whisper import WhisperModel

from shared.audio import decode_file, float32_to_pcm16
from shared.schemas import AsrJob
from shared.settings import Settings
from tests.conftest import librispeech
from whisper_streaming.evaluation import wer
from workers.asr import DecodeOptions, Transcriber, load_model
from workers.context import AUTO_CONTEXT_PAD_S, fitted_frames


@pytest.fixture
def encoder_inputs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length (frames) of every input that reaches faster-whisper's own ``encode``."""
    seen: list[int] = []
    original = WhisperModel.encode

    def spy(self: Any, features: np.ndarray) -> Any:
        seen.append(int(features.shape[-1]))
        return original(self, features)

    monkeypatch.setattr(WhisperModel, "encode", spy)
    return seen


def jobs(n: int) -> list[tuple[AsrJob, str]]:
    return [
        (
            AsrJob(
                session_id="c", segment=i, start=0.0, end=1.0, language="en",
                pcm=float32_to_pcm16(decode_file(u.path)), enqueued_at=time.time(),
            ),
            u.reference,
        )
        for i, u in enumerate(librispeech(held_out_only=True)[:n])
    ]  # fmt: skip


def test_the_encoder_sees_the_utterance_and_its_pad_and_transcribes_as_well(
    encoder_inputs: list[int],
) -> None:
    model = load_model(Settings())
    assert model.context_pad_s == AUTO_CONTEXT_PAD_S  # tiny.en: English-only
    fitted = Transcriber(model, DecodeOptions.from_settings(Settings()))
    whole_settings = Settings(asr_context_pad_s=0)
    whole = Transcriber(load_model(whole_settings), DecodeOptions.from_settings(whole_settings))
    pad = model.context_pad_s
    pairs_fitted, pairs_whole = [], []
    for job, reference in jobs(8):
        frames = len(job.pcm) // 2 // 160
        encoder_inputs.clear()
        out = fitted.transcribe(job)
        assert encoder_inputs and encoder_inputs[0] == fitted_frames(frames, 3000, pad) < 3000
        assert out.words and out.words[-1].end <= job.start + frames / 100 + 0.5
        encoder_inputs.clear()
        full = whole.transcribe(job)
        assert encoder_inputs == [3000]
        pairs_fitted.append((reference, out.text))
        pairs_whole.append((reference, full.text))
    # the same accuracy as the whole window (docs/benchmarks.md measures it on all 72 files)
    assert wer(pairs_fitted).wer <= wer(pairs_whole).wer + 0.02


def test_a_narrowband_session_is_decoded_in_whole_windows(encoder_inputs: list[int]) -> None:
    fitted = Transcriber(load_model(Settings()), DecodeOptions.from_settings(Settings()))
    job, _ = jobs(1)[0]
    fitted.transcribe(msgspec.structs.replace(job, source_rate=8000))
    assert encoder_inputs == [3000]
    encoder_inputs.clear()
    fitted.transcribe(job)
    assert encoder_inputs and encoder_inputs[0] < 3000


def test_a_multilingual_model_keeps_whole_windows_unless_told(encoder_inputs: list[int]) -> None:
    """The bundled base model (other languages lost ~4.5 points in a fitted context:
    docs/benchmarks.md, *Languages*) encodes whole windows by default; an explicit
    ``ASR_CONTEXT_PAD_S`` is honoured for it."""
    job, _ = jobs(1)[0]
    base = load_model(Settings(asr_model="base"))
    assert base.context_pad_s == 0.0
    Transcriber(base, DecodeOptions.from_settings(Settings())).transcribe(job)
    assert encoder_inputs and set(encoder_inputs) == {3000}
    encoder_inputs.clear()
    told = load_model(Settings(asr_model="base", asr_context_pad_s=5))
    assert told.context_pad_s == 5.0
    Transcriber(told, DecodeOptions.from_settings(Settings())).transcribe(job)
    assert encoder_inputs and encoder_inputs[0] < 3000
