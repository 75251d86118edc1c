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
from workers.context import AUTO_CONTEXT_PAD_S, MIN_TAIL_S, content_frames, fitted_frames


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


@pytest.fixture
def encoder_contents(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The audio frames (before padding) of every input that reaches faster-whisper's own
    ``encode``: a later window's is the tail it decodes."""
    seen: list[int] = []
    original = WhisperModel.encode

    def spy(self: Any, features: np.ndarray) -> Any:
        seen.append(content_frames(features))
        return original(self, features)

    monkeypatch.setattr(WhisperModel, "encode", spy)
    return seen


def test_a_short_tail_after_the_last_timestamp_is_not_decoded_again(
    encoder_contents: list[int],
) -> None:
    """Every LibriSpeech file of the corpus, decoded with faster-whisper's own seeking
    (``min_tail_s`` 0) and with the default: the default leaves out only last windows, each of
    audio after the last word it kept (under :data:`MIN_TAIL_S` after the window's last
    timestamp; faster-whisper, with word timestamps, seeks back to the last word's end, so its
    tail window can be longer: 0.66 s of silence after "…painful to myself." on one AMD EPYC),
    its text is the other windows' (the same decode), and the WER is no worse (the skipped tails
    gave "Thank you." and the like: docs/benchmarks.md)."""
    model = load_model(Settings())
    transcriber = Transcriber(model, DecodeOptions.from_settings(Settings()))
    skipped, pairs_on, pairs_off = 0, [], []
    for i, u in enumerate(librispeech()):
        x = decode_file(u.path)
        job = AsrJob(session_id="t", segment=i, start=0.0, end=1.0, language="en",
                     pcm=float32_to_pcm16(x))  # fmt: skip
        model.min_tail_s = 0.0
        encoder_contents.clear()
        off = transcriber.transcribe(job)
        passes_off = list(encoder_contents)
        model.min_tail_s = MIN_TAIL_S
        encoder_contents.clear()
        on = transcriber.transcribe(job)
        if len(encoder_contents) < len(passes_off):
            skipped += 1
            # the same windows, less the last ones: short tails each
            n = len(encoder_contents)
            assert encoder_contents == passes_off[:n], (u.utt_id, passes_off)
            after_words = len(x) / 16000 - (on.words[-1].end if on.words else 0.0)
            assert all(t <= round(after_words * 100) + 1 for t in passes_off[n:]), (u.utt_id, passes_off, after_words)  # fmt: skip
            assert off.text.startswith(on.text), (u.utt_id, off.text, on.text)
        else:
            assert encoder_contents == passes_off and on.text == off.text, u.utt_id
        pairs_on.append((u.reference, on.text))
        pairs_off.append((u.reference, off.text))
    assert skipped >= 1  # the corpus has such tails: else this test shows nothing
    assert wer(pairs_on).wer <= wer(pairs_off).wer


def test_a_job_longer_than_a_window_is_still_decoded_to_its_end(
    encoder_contents: list[int],
) -> None:
    """The tail rule applies to the window that reaches the end of the audio only: 35 s of
    speech (three held-out utterances back to back) is two windows, words past 30 s."""
    parts, total = [], 0
    for u in librispeech(held_out_only=True):
        x = decode_file(u.path)
        parts.append(x)
        total += len(x)
        if total >= 35 * 16000:
            break
    audio = np.concatenate(parts)[: 35 * 16000]
    job = AsrJob(session_id="t", segment=0, start=0.0, end=35.0, language="en",
                 pcm=float32_to_pcm16(audio))  # fmt: skip
    out = Transcriber(load_model(Settings()), DecodeOptions.from_settings(Settings())).transcribe(
        job
    )
    assert len(encoder_contents) >= 2
    assert out.words and out.words[-1].end > 31.0
