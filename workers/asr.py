"""The transcription core of the ASR worker: model loading and job -> Transcript.

:class:`Transcriber` takes any object with faster-whisper's ``transcribe`` signature, so tests can
hand it a fake and production the real ``WhisperModel``. The worker shell (asr_worker.py) only
reads jobs, calls :meth:`Transcriber.transcribe` in a thread and publishes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from shared import metrics
from shared.audio import SAMPLE_RATE, pcm16_to_float32
from shared.capabilities import TRANSCRIBE, TRANSLATE
from shared.keyterms import hotwords as hotwords_of
from shared.schemas import AsrJob, Transcript, Translation, Word
from shared.settings import Settings
from workers import continuation
from workers.context import context_for, context_pad, fitted_model_class
from workers.detection import DEFAULT_SWITCH_PROBABILITY, choose_language
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
            "asr_continuation": (
                device == "cuda" if settings.asr_continuation is None else settings.asr_continuation
            ),
        }
    )


def load_model(settings: Settings) -> WhisperLike:
    """The worker's model: faster-whisper's ``WhisperModel`` with its encoder context fitted to
    each utterance (``ASR_CONTEXT_PAD_S``, workers/context.py)."""
    device, compute = device_and_compute(settings.asr_device, settings.asr_compute_type)
    path = resolve_model(settings.asr_model, settings.model_cache_dir)
    started = time.monotonic()
    model = fitted_model_class()(
        path, device=device, compute_type=compute, cpu_threads=settings.asr_cpu_threads
    )
    pad = context_pad(settings.asr_context_pad_s, is_multilingual(model))
    model.context_pad_s = pad
    log.info("loaded model %s on %s/%s in %.2fs (encoder context: %s)", path, device, compute,
             time.monotonic() - started, f"utterance + {pad:g} s" if pad else "30 s")  # fmt: skip
    return model


def session_word(
    word: str, start: float, end: float, probability: float, origin_s: float, skip_s: float = 0.0
) -> Word:
    """A decoded word (times in seconds of the decoded audio) in session time: the audio began
    at ``origin_s`` of the session after ``skip_s`` seconds of context in front (a continuation
    decode's previous audio; a word inside it is clamped to ``origin_s``)."""
    return Word(
        word=word,
        start=round(origin_s + max(float(start) - skip_s, 0.0), 3),
        end=round(origin_s + max(float(end) - skip_s, 0.0), 3),
        probability=round(float(probability), 4),
    )


FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""faster-whisper's (and Whisper's) default: decode again, sampling, while the result looks bad."""


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int = 5
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4
    temperature_fallback: bool = False
    continuation: bool = False
    """Decode a segment that continues its turn behind the previous one (``ASR_CONTINUATION``)."""

    @classmethod
    def from_settings(cls, s: Settings) -> DecodeOptions:
        auto = resolve_auto(s)
        return cls(
            beam_size=auto.asr_beam_size,
            no_speech_threshold=s.asr_no_speech_threshold,
            log_prob_threshold=s.asr_log_prob_threshold,
            compression_ratio_threshold=s.asr_compression_ratio_threshold,
            temperature_fallback=s.asr_temperature_fallback,
            continuation=bool(auto.asr_continuation),
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


def transcription_options(
    opts: DecodeOptions,
    tokenizer: Any,
    *,
    beam_size: int,
    word_timestamps: bool,
    initial_prompt: str | None = None,
    hotwords: str | None = None,
    temperatures: tuple[float, ...] | None = None,
    max_initial_timestamp: float = 1.0,
) -> Any:
    """faster-whisper's ``TranscriptionOptions`` for our decoding settings, with the defaults
    its ``transcribe`` uses for everything we do not set (for the decode paths that call its
    ``generate_segments`` or batched pipeline directly: one encoder output, several decodes)."""
    from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

    return TranscriptionOptions(
        beam_size=beam_size, best_of=5, patience=1, length_penalty=1, repetition_penalty=1,
        no_repeat_ngram_size=0, log_prob_threshold=opts.log_prob_threshold,
        no_speech_threshold=opts.no_speech_threshold,
        compression_ratio_threshold=opts.compression_ratio_threshold,
        temperatures=list(opts.temperatures if temperatures is None else temperatures),
        initial_prompt=initial_prompt, prefix=None, suppress_blank=True,
        suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        prepend_punctuations="\"'“¿([{-", append_punctuations="\"'.。,，!！?？:：”)]}、",
        max_new_tokens=None, hotwords=hotwords, word_timestamps=word_timestamps,
        hallucination_silence_threshold=None, condition_on_previous_text=False,
        clip_timestamps="0", prompt_reset_on_temperature=0.5, multilingual=False,
        without_timestamps=False, max_initial_timestamp=max_initial_timestamp,
    )  # fmt: skip


MAX_WORDS_PER_SECOND = 7.0
"""Fast speech runs at 4 to 5 words a second; a segment far above that is invented text."""


def kept_ratio(texts: Iterable[str]) -> float:
    """The gzip compression ratio of the text faster-whisper kept of one window's decode (its
    segments' ``texts``). The segments' own ``compression_ratio`` is that of the window's whole
    decode, including what the decoder said past the end of the audio, into the encoder's
    padding, which it then drops: tiny.en, after a continuation's prefix, can say the last
    sentence again and again out there (``Experience proves this.`` ×11 at 7–27 s of a 4 s
    audio), and the window's ratio (5.3) would throw away the words it heard."""
    from faster_whisper.transcribe import get_compression_ratio

    return float(get_compression_ratio("".join(texts).strip() or " "))


def kept_ratios(segments: list[Any]) -> dict[int, float]:
    """:func:`kept_ratio` per window (a segment's ``seek``) of decoded ``segments``."""
    texts: dict[int, list[str]] = {}
    for seg in segments:
        texts.setdefault(int(seg.seek), []).append(seg.text)
    return {k: kept_ratio(v) for k, v in texts.items()}


def is_hallucination(seg: Any, opts: DecodeOptions, kept_ratio: float | None = None) -> bool:
    """Whisper's classic failures on silence, noise and trailing audio: confident-looking text
    ("Thank you.") where the model itself says there is probably no speech, degenerate repetition
    (of the text kept, ``kept_ratio``, where given: :func:`kept_ratio`), or a run of words
    squeezed into a fraction of a second (seen with a prompt on tiny.en)."""
    ratio = seg.compression_ratio if kept_ratio is None else min(seg.compression_ratio, kept_ratio)
    if ratio > opts.compression_ratio_threshold:
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


WINDOW_SAMPLES = 30 * SAMPLE_RATE
"""Whisper's window: an utterance up to this long is one encoder pass."""


def encode_window(model: Any, audio: Any) -> tuple[Any, Any]:
    """The features of ``audio`` and the encoder output of its first 30 s window (one pass)."""
    from faster_whisper.audio import pad_or_trim

    features = model.feature_extractor(audio)
    frames = min(model.feature_extractor.nb_max_frames, features.shape[-1] - 1)
    return features, model.encode(pad_or_trim(features[:, :frames]))


def language_probabilities(model: Any, encoder_output: Any) -> list[tuple[str, float]]:
    """Every language's probability for one encoder output, most probable first."""
    ranked = model.model.detect_language(encoder_output)[0]
    return [(token[2:-2], float(p)) for token, p in ranked]


def is_multilingual(model: object) -> bool:
    return bool(getattr(getattr(model, "model", None), "is_multilingual", False))


class Transcriber:
    """Turns :class:`AsrJob` into :class:`Transcript` with an injected Whisper model.

    A job of a multilingual model that detects its language or is to be translated is decoded
    from **one** encoder pass (:meth:`_decode_shared`): the encoder output gives the language
    probabilities (:func:`~workers.detection.choose_language` picks, with the session's
    language), then the transcription, then the English translation (a second decode of the
    same encoder output). faster-whisper's ``transcribe`` would encode twice for detection
    alone (``detect_language``, then ``generate_segments``), and again for a translation."""

    def __init__(
        self,
        model: WhisperLike,
        options: DecodeOptions,
        worker: str = "",
        switch_probability: float = DEFAULT_SWITCH_PROBABILITY,
    ) -> None:
        self._model = model
        self._opts = options
        self._worker = worker
        self._switch = switch_probability
        self._multilingual = is_multilingual(model)

    def transcribe(
        self,
        job: AsrJob,
        prompt: str | None = None,
        beam_size: int | None = None,
        session_language: str | None = None,
    ) -> Transcript:
        """Transcribe with the session's previous text as prompt (and its key terms as
        ``hotwords``); if they made the model stop early (tiny models do), transcribe again
        without them. ``session_language``: the
        language of the session's latest final (detection keeps it unless another is
        confidently detected)."""
        with context_for(self._model, job):
            first = self._transcribe(job, prompt, beam_size, session_language)
            return self.recover(job, prompt, first, beam_size, session_language)

    def recover(
        self,
        job: AsrJob,
        prompt: str | None,
        result: Transcript,
        beam_size: int | None = None,
        session_language: str | None = None,
    ) -> Transcript:
        """``result`` itself, or a transcription without the prompt and key terms if they made
        the model stop early (used for batched results too)."""
        if (prompt or job.keyterms) and job.final and stopped_early(result, job):
            log.info("session=%s segment=%d: stopped early with a prompt; again without",
                     job.session_id, job.segment)  # fmt: skip
            retry = self._transcribe(job, None, beam_size, session_language, with_keyterms=False)
            if len(retry.words) > len(result.words):
                retry.processing_time = round(retry.processing_time + result.processing_time, 4)
                return retry
        return result

    def _transcribe(
        self,
        job: AsrJob,
        prompt: str | None,
        beam_size: int | None,
        session_language: str | None = None,
        with_keyterms: bool = True,
    ) -> Transcript:
        started = time.monotonic()
        audio = pcm16_to_float32(job.pcm)
        beam = beam_size or self._opts.beam_size
        prompt = (prompt or "")[-PROMPT_MAX_CHARS:] or None
        terms = hotwords_of(job.keyterms) if with_keyterms else None
        shared = (job.language is None or job.task == TRANSLATE) and len(audio) <= WINDOW_SAMPLES
        if self._multilingual and shared:
            result = self._decode_shared(job, audio, prompt, beam, session_language, terms)
        elif (continued := self._continue(job, audio, prompt, beam)) is not None:
            result = continued
        else:
            segments, info = self._model.transcribe(
                audio,
                language=job.language,
                beam_size=beam,
                # interim text needs no word times (their alignment pass is ~30 % of a 10 s decode)
                word_timestamps=job.final,
                initial_prompt=prompt,
                hotwords=terms,
                **self._opts.whisper_kwargs(),
            )
            text, words = self._collect(job, segments)
            result = self._result(job, text, words, info.language, info.language_probability)
        result.processing_time = round(time.monotonic() - started, 4)
        return result

    def _continue(
        self, job: AsrJob, audio: Any, prompt: str | None, beam: int
    ) -> Transcript | None:
        """A final that continues its turn, decoded after the previous segment's audio with
        that audio's words as the forced prefix (workers/continuation.py); ``None``: decode it
        alone (no context, key terms given — faster-whisper drops ``hotwords`` with a prefix —,
        or a decode that did not begin with the prefix or stopped short of the end)."""
        if not self._opts.continuation or not job.final or not job.context_words:
            return None
        if not job.context_pcm or job.keyterms:
            return None
        context = pcm16_to_float32(job.context_pcm)
        offset = len(context) / SAMPLE_RATE
        x = np.concatenate([context, audio])
        segments, info = self._model.transcribe(
            x,
            language=job.language,
            beam_size=beam,
            word_timestamps=True,
            initial_prompt=prompt,
            prefix=continuation.prefix_text(job.context_words),
            **self._opts.whisper_kwargs(),
        )
        decoded = list(segments)
        got = [w for seg in decoded for w in (seg.words or [])]
        rest = continuation.after_prefix(got, job.context_words)
        seconds = len(x) / SAMPLE_RATE
        kept = kept_ratios(decoded)
        if (
            rest is None
            or any(is_hallucination(seg, self._opts, kept[seg.seek]) for seg in decoded)
            or continuation.repeats(rest)
            or not continuation.finished(rest, seconds, EARLY_STOP_GAP_S, MAX_WORD_S)
        ):
            metrics.ASR_CONTINUATIONS.labels("alone").inc()
            log.info("session=%s segment=%d: not continued; decoded alone",
                     job.session_id, job.segment)  # fmt: skip
            return None
        metrics.ASR_CONTINUATIONS.labels("continued").inc()
        log.info("session=%s segment=%d: continued after %d words of segment %d",
                 job.session_id, job.segment, len(job.context_words), job.segment - 1)  # fmt: skip
        words = [
            session_word(w.word, w.start, w.end, w.probability, job.start, offset) for w in rest
        ]
        text = "".join(w.word for w in rest).strip()
        return self._result(job, text, words, info.language, info.language_probability)

    def _decode_shared(
        self,
        job: AsrJob,
        audio: Any,
        prompt: str | None,
        beam: int,
        session_language: str | None,
        terms: str | None = None,
    ) -> Transcript:
        """Detection, transcription and (for ``translate`` finals) translation from one encoder
        output of the utterance (at most one 30 s window)."""
        features, encoder_output = encode_window(self._model, audio)
        if job.language is None:
            probabilities = language_probabilities(self._model, encoder_output)
            language, probability = choose_language(probabilities, session_language, self._switch)
        else:
            language, probability = job.language, 1.0
        segments = self._generate(features, encoder_output, language, TRANSCRIBE, prompt, beam, job.final, terms)  # fmt: skip
        text, words = self._collect(job, segments)
        result = self._result(job, text, words, language, probability)
        if job.task == TRANSLATE and job.final:
            if language == "en" or not text:
                result.translation = Translation(language="en", text=text)
            else:
                english = self._generate(features, encoder_output, language, TRANSLATE, None, beam, False)  # fmt: skip
                result.translation = Translation(language="en", text=self._collect(job, english)[0])
        return result

    def _generate(
        self,
        features: Any,
        encoder_output: Any,
        language: str,
        task: str,
        prompt: str | None,
        beam: int,
        word_timestamps: bool,
        terms: str | None = None,
    ) -> Any:
        """faster-whisper's own decoding loop over a given encoder output (its
        ``generate_segments``: fallback, timestamps, word alignment)."""
        from faster_whisper.tokenizer import Tokenizer

        model: Any = self._model
        tokenizer = Tokenizer(model.hf_tokenizer, True, task=task, language=language)
        options = transcription_options(
            self._opts, tokenizer, beam_size=beam, word_timestamps=word_timestamps,
            initial_prompt=prompt, hotwords=terms,
        )  # fmt: skip
        return model.generate_segments(features, tokenizer, options, False, encoder_output)

    def _collect(self, job: AsrJob, segments: Any) -> tuple[str, list[Word]]:
        """The text and words of decoded segments, less probable hallucinations."""
        texts: list[str] = []
        words: list[Word] = []
        decoded = list(segments)  # the generator decodes lazily: iterate it here, in this thread
        kept = kept_ratios(decoded)
        for seg in decoded:
            if is_hallucination(seg, self._opts, kept[seg.seek]):
                log.debug("dropped probable hallucination %r", seg.text)
                continue
            texts.append(seg.text)
            words.extend(
                session_word(w.word, w.start, w.end, w.probability, job.start)
                for w in seg.words or []
            )
        return "".join(texts).strip(), words

    def _result(
        self, job: AsrJob, text: str, words: list[Word], language: str, probability: float
    ) -> Transcript:
        return Transcript(
            session_id=job.session_id,
            segment=job.segment,
            start=job.start,
            end=job.end,
            text=text,
            words=words,
            language=language,
            language_probability=round(float(probability), 4),
            final=job.final,
            rev=job.rev,
            speech_final=job.reason != "max_length",
            from_finalize=job.reason == "finalize",
            worker=self._worker,
            task=job.task,
        )
