"""A segment decoded as the continuation of the one before it (workers/continuation.py), with
the real model on real recordings: the previous segment's last seconds and their words go in
front, and only what follows them comes out."""

from __future__ import annotations

import numpy as np
import pytest

from shared import metrics
from shared.audio import SAMPLE_RATE, decode_file, float32_to_pcm16
from shared.schemas import AsrJob, Transcript
from shared.settings import Settings
from tests.conftest import librispeech
from whisper_streaming.evaluation import wer
from workers.asr import DecodeOptions, Transcriber, load_model
from workers.continuation import Previous, context_for_next, tail_samples

FIRST, SECOND = "1089-134691-0000", "2830-3980-0043"
PAUSE_S = 0.6


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    settings = Settings(asr_continuation=True)  # unset: off on CPU (its decode time)
    return Transcriber(load_model(settings), DecodeOptions.from_settings(settings))


def continued() -> float:
    return float(metrics.ASR_CONTINUATIONS.labels("continued")._value.get())


def two_segments(transcriber: Transcriber) -> tuple[Transcript, AsrJob, str]:
    """Segment 0 (the first utterance and 150 ms of pause, decoded alone) and the job of
    segment 1 (the rest of the pause and the second utterance), with its context, as the VAD
    worker writes it; and the second utterance's reference."""
    utts = {u.utt_id: u for u in librispeech()}
    a, b = decode_file(utts[FIRST].path), decode_file(utts[SECOND].path)
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)
    cut = len(a) + int(0.15 * SAMPLE_RATE)
    x = np.concatenate([a, pause, b])
    first = AsrJob(session_id="c", segment=0, start=0.0, end=round(cut / SAMPLE_RATE, 3),
                   pcm=float32_to_pcm16(x[:cut]), language="en")  # fmt: skip
    r0 = transcriber.transcribe(first)
    previous = Previous(index=0, end_s=first.end, tail=float32_to_pcm16(x[:cut][-tail_samples(3.0) :]),
                        words=tuple(r0.words))  # fmt: skip
    job = AsrJob(session_id="c", segment=1, start=first.end, end=round(len(x) / SAMPLE_RATE, 3),
                 pcm=float32_to_pcm16(x[cut:]), language="en")  # fmt: skip
    context = context_for_next(previous, 1, job.start, 3.0)
    assert context is not None and context.words, r0
    job.context_pcm, job.context_start, job.context_words = (
        context.pcm, context.start_s, context.words,
    )  # fmt: skip
    return r0, job, utts[SECOND].reference


def test_a_continuation_gives_only_the_words_after_its_prefix(transcriber: Transcriber) -> None:
    r0, job, reference = two_segments(transcriber)
    before = continued()
    result = transcriber.transcribe(job)
    assert continued() == before + 1, result  # decoded as a continuation, not alone
    assert result.text and all(job.start <= w.start <= w.end <= job.end for w in result.words)
    # the first segment's words, repeated, would be insertions here (≥ 5 of the 11 words)
    assert wer([(reference, result.text)]).wer <= 0.3, (r0.text, result.text)
    alone = transcriber.transcribe(
        AsrJob(session_id="c", segment=1, start=job.start, end=job.end, pcm=job.pcm, language="en")
    )
    assert abs(len(result.words) - len(alone.words)) <= 2, (result.text, alone.text)


def test_partials_and_key_terms_are_decoded_alone(transcriber: Transcriber) -> None:
    _r0, job, _reference = two_segments(transcriber)
    before = continued()
    job.final = False  # a partial: interim text, no words to align
    transcriber.transcribe(job)
    job.final, job.keyterms = True, ["Hilda"]  # faster-whisper drops hotwords with a prefix
    assert transcriber.transcribe(job).text
    assert continued() == before
