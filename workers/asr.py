"""The transcription core of the ASR worker: model loading and job -> Transcript.

:class:`Transcriber` takes any object with faster-whisper's ``transcribe`` signature, so tests can
hand it a fake and production the real ``WhisperModel``. The worker shell (asr_worker.py) only
reads jobs, calls :meth:`Transcriber.transcribe` in a thread and publishes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from shared.audio import pcm16_to_float32
from shared.keyterms import hotwords
from shared.schemas import AsrJob, Transcript, Word
from shared.settings import Settings
from workers.models import resolve_model

log = logging.getLogger(__name__)

PROMPT_MAX_CHARS = 200
"""Only the tail of the previous text is used as prompt (long prompts slow decoding and drift)."""


class WhisperLike(Protocol):
    def transcribe(self, audio: Any, **kwargs: Any) -> tuple[Any, Any]: ...


def device_and_compute(device: str, compute_type: str) -> tuple[str, str]:
    if device == "auto":
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


AUTO_BEAM = {"cuda": 5, "cpu": 1}
"""``ASR_BEAM_SIZE=0``: on a GPU the beam costs little; on a CPU the decode of a long utterance is
what makes its final late, and greedy decoding costs ~0.5 WER points (docs/benchmarks.md)."""


AUTO_BATCH = {"cuda": 8, "cpu": 1}
"""``ASR_BATCH_SIZE=0``: batching pays on a GPU, not on a CPU (docs/benchmarks.md)."""


def resolve_auto(settings: Settings) -> Settings:
    """The settings with every ``auto`` of the ASR worker made concrete (device, compute type,
    beam, batch size): resolved once at start, so everything after reads the same values."""
    device, compute = device_and_compute(settings.asr_device, settings.asr_compute_type)
    return settings.model_copy(
        update={
            "asr_device": device,
            "asr_compute_type": compute,
            "asr_beam_size": settings.asr_beam_size or AUTO_BEAM[device],
            "asr_batch_size": settings.asr_batch_size or AUTO_BATCH[device],
        }
    )


def load_model(settings: Settings) -> WhisperLike:
    from faster_whisper import WhisperModel

    device, compute = device_and_compute(settings.asr_device, settings.asr_compute_type)
    path = resolve_model(settings.asr_model, settings.model_cache_dir)
    started = time.monotonic()
    model = WhisperModel(
        path, device=device, compute_type=compute, cpu_threads=settings.asr_cpu_threads
    )
    log.info("loaded model %s on %s/%s in %.2fs", path, device, compute, time.monotonic() - started)
    return model


FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""faster-whisper's (and Whisper's) default: decode again, sampling, while the result looks bad."""


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int = 5
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4
    temperature_fallback: bool = False

    @classmethod
    def from_settings(cls, s: Settings) -> DecodeOptions:
        return cls(
            beam_size=resolve_auto(s).asr_beam_size,
            no_speech_threshold=s.asr_no_speech_threshold,
            log_prob_threshold=s.asr_log_prob_threshold,
            compression_ratio_threshold=s.asr_compression_ratio_threshold,
            temperature_fallback=s.asr_temperature_fallback,
        )

    @property
    def temperatures(self) -> tuple[float, ...]:
        return FALLBACK_TEMPERATURES if self.temperature_fallback else (0.0,)

    def whisper_kwargs(self) -> dict[str, Any]:
        """What every decode of a job passes to faster-whisper's ``transcribe`` (the ASR worker
        and the offline reference of ``make bench`` alike)."""
        return {
            "vad_filter": False,
            "condition_on_previous_text": False,
            "temperature": list(self.temperatures),
            "no_speech_threshold": self.no_speech_threshold,
            "log_prob_threshold": self.log_prob_threshold,
            "compression_ratio_threshold": self.compression_ratio_threshold,
        }


MAX_WORDS_PER_SECOND = 7.0
"""Fast speech runs at 4 to 5 words a second; a segment far above that is invented text."""


def is_hallucination(seg: Any, opts: DecodeOptions) -> bool:
    """Whisper's classic failures on silence, noise and trailing audio: confident-looking text
    ("Thank you.") where the model itself says there is probably no speech, degenerate repetition,
    or a run of words squeezed into a fraction of a second (seen with a prompt on tiny.en)."""
    if seg.compression_ratio > opts.compression_ratio_threshold:
        return True
    if seg.no_speech_prob > opts.no_speech_threshold and seg.avg_logprob < -0.5:
        return True
    duration = max(0.0, float(seg.end) - float(seg.start))
    n_words = len(seg.text.split())
    return n_words > MAX_WORDS_PER_SECOND * duration + 2


EARLY_STOP_GAP_S = 1.2
"""A final whose last word ends this long before its audio does (the VAD leaves at most
``VAD_SPEECH_PAD_MS`` of silence at the end) probably lost its tail."""

MAX_WORD_S = 2.0
"""No real word lasts this long: when one does, the aligner has stretched it over speech the
decoder skipped (what tiny.en does when a prompt makes it stop early)."""


def stopped_early(result: Transcript, job: AsrJob) -> bool:
    duration = job.end - job.start
    if duration < 2 * EARLY_STOP_GAP_S:
        return False
    if not result.words:
        return True
    if any(w.end - w.start > MAX_WORD_S for w in result.words):
        return True
    return job.end - result.words[-1].end > EARLY_STOP_GAP_S


class Transcriber:
    """Turns :class:`AsrJob` into :class:`Transcript` with an injected Whisper model."""

    def __init__(self, model: WhisperLike, options: DecodeOptions, worker: str = "") -> None:
        self._model = model
        self._opts = options
        self._worker = worker

    def transcribe(
        self, job: AsrJob, prompt: str | None = None, beam_size: int | None = None
    ) -> Transcript:
        """Transcribe with the session's previous text as prompt (and its key terms as
        ``hotwords``); if they made the model stop early (tiny models do), transcribe again
        without them."""
        return self.recover(job, prompt, self._transcribe(job, prompt, beam_size), beam_size)

    def recover(
        self, job: AsrJob, prompt: str | None, result: Transcript, beam_size: int | None = None
    ) -> Transcript:
        """``result`` itself, or a transcription without the prompt and key terms if they made
        the model stop early (used for batched results too)."""
        if (prompt or job.keyterms) and job.final and stopped_early(result, job):
            log.info("session=%s segment=%d: stopped early with a prompt; again without",
                     job.session_id, job.segment)  # fmt: skip
            retry = self._transcribe(job, None, beam_size, with_keyterms=False)
            if len(retry.words) > len(result.words):
                retry.processing_time = round(retry.processing_time + result.processing_time, 4)
                return retry
        return result

    def _transcribe(
        self, job: AsrJob, prompt: str | None, beam_size: int | None, with_keyterms: bool = True
    ) -> Transcript:
        started = time.monotonic()
        audio = pcm16_to_float32(job.pcm)
        segments, info = self._model.transcribe(
            audio,
            language=job.language,
            beam_size=beam_size or self._opts.beam_size,
            # interim text needs no word times (their alignment pass is ~30 % of a 10 s decode)
            word_timestamps=job.final,
            initial_prompt=(prompt or "")[-PROMPT_MAX_CHARS:] or None,
            hotwords=hotwords(job.keyterms) if with_keyterms else None,
            **self._opts.whisper_kwargs(),
        )
        texts: list[str] = []
        words: list[Word] = []
        for seg in segments:  # the generator decodes lazily: iterate it here, in this thread
            if is_hallucination(seg, self._opts):
                log.debug("dropped probable hallucination %r", seg.text)
                continue
            texts.append(seg.text)
            words.extend(
                Word(
                    word=w.word,
                    start=round(job.start + float(w.start), 3),
                    end=round(job.start + float(w.end), 3),
                    probability=round(float(w.probability), 4),
                )
                for w in seg.words or []
            )
        return Transcript(
            session_id=job.session_id,
            segment=job.segment,
            start=job.start,
            end=job.end,
            text="".join(texts).strip(),
            words=words,
            language=info.language,
            language_probability=round(float(info.language_probability), 4),
            processing_time=round(time.monotonic() - started, 4),
            final=job.final,
            rev=job.rev,
            speech_final=job.reason != "max_length",
            worker=self._worker,
        )
