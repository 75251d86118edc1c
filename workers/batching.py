"""Cross-session batching: several waiting jobs, from any sessions, decoded as one batch.

faster-whisper's ``BatchedInferencePipeline`` batches the chunks of *one* recording and gives
them all the same prompt. Jobs from different sessions each need their own prompt (the session's
previous text), so :class:`MultiPromptPipeline` overrides the one method that builds prompts; the
rest (feature extraction, CTranslate2 batch generation, timestamp splitting, word alignment) is
faster-whisper's own code. Like faster-whisper's batched mode it decodes at temperature 0 only (no
fallback), which is why batching is a setting (``ASR_BATCH_SIZE``) with its gain measured in
docs/benchmarks.md rather than always on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import BatchedInferencePipeline, TranscriptionOptions

from shared.audio import pcm16_to_float32
from shared.capabilities import TRANSCRIBE
from shared.schemas import AsrJob, Transcript, Word
from workers.asr import (
    PROMPT_MAX_CHARS,
    DecodeOptions,
    is_hallucination,
    kept_ratio,
    session_word,
    transcription_options,
)
from workers.context import is_narrowband


class MultiPromptPipeline(BatchedInferencePipeline):  # type: ignore[misc]
    """``generate_segment_batched`` with one prompt per batch item (``self.prompts``)."""

    prompts: list[list[int]]

    def generate_segment_batched(
        self, features: np.ndarray, tokenizer: Tokenizer, options: TranscriptionOptions
    ) -> tuple[Any, list[dict[str, Any]]]:
        encoder_output = self.model.encode(features)
        results = self.model.model.generate(
            encoder_output,
            [list(p) for p in self.prompts],
            beam_size=options.beam_size,
            patience=options.patience,
            length_penalty=options.length_penalty,
            max_length=self.model.max_length,
            suppress_blank=options.suppress_blank,
            suppress_tokens=options.suppress_tokens,
            return_scores=True,
            return_no_speech_prob=True,
            sampling_temperature=options.temperatures[0],
            repetition_penalty=options.repetition_penalty,
            no_repeat_ngram_size=options.no_repeat_ngram_size,
        )
        output = []
        for result in results:
            seq_len = len(result.sequences_ids[0])
            cum_logprob = result.scores[0] * (seq_len**options.length_penalty)
            output.append(
                {
                    "avg_logprob": cum_logprob / (seq_len + 1),
                    "no_speech_prob": result.no_speech_prob,
                    "tokens": result.sequences_ids[0],
                }
            )
        return encoder_output, output


class BatchTranscriber:
    """Transcribes jobs of one language together; see the module docstring."""

    def __init__(self, model: Any, options: DecodeOptions, worker: str = "") -> None:
        self._model = model
        self._pipeline = MultiPromptPipeline(model)
        self._opts = options
        self._worker = worker

    def can_batch(self, job: AsrJob) -> bool:
        """Transcription jobs with a known language (or any job for an English-only model) and
        without key terms: detection and translation take the shared-encoder path of
        :class:`Transcriber`, and key terms (``hotwords``) make each prompt different in length,
        so those jobs go one by one; so do narrowband jobs, whose encoder context differs
        (workers/context.py), and continuations, whose prefix and audio in front are their own
        (workers/continuation.py)."""
        if job.task != TRANSCRIBE or job.keyterms or is_narrowband(job) or job.context_words:
            return False
        return job.language is not None or not self._model.model.is_multilingual

    def transcribe(self, jobs: Sequence[AsrJob], prompts: Sequence[str | None]) -> list[Transcript]:
        """Results in the order of ``jobs``. CTranslate2 wants the start-of-transcript token at
        the same position in every item, so jobs with a prompt and jobs without are decoded as
        two batches, and the prompts of one batch are cut to the same number of tokens (keeping
        the most recent words)."""
        started = time.monotonic()
        language = jobs[0].language or "en"
        tokenizer = Tokenizer(
            self._model.hf_tokenizer,
            self._model.model.is_multilingual,
            task="transcribe",
            language=language,
        )
        previous = [
            tokenizer.encode(" " + p.strip()[-PROMPT_MAX_CHARS:]) if p and p.strip() else []
            for p in prompts
        ]
        results: dict[int, Transcript] = {}
        for with_prompt in (False, True):
            idx = [i for i, prev in enumerate(previous) if bool(prev) == with_prompt]
            if not idx:
                continue
            keep = min(len(previous[i]) for i in idx)
            outputs = self._decode(
                [jobs[i] for i in idx],
                [previous[i][-keep:] if keep else [] for i in idx],
                tokenizer,
            )
            elapsed = round(time.monotonic() - started, 4)
            for i, segs in zip(idx, outputs, strict=True):
                results[i] = self._result(jobs[i], segs, language, elapsed)
        return [results[i] for i in range(len(jobs))]

    def _decode(
        self, jobs: Sequence[AsrJob], previous: list[list[int]], tokenizer: Tokenizer
    ) -> list[list[dict[str, Any]]]:
        audios = [pcm16_to_float32(j.pcm) for j in jobs]
        features = np.stack(
            [pad_or_trim(self._model.feature_extractor(a)[..., :-1]) for a in audios]
        )
        meta = [{"offset": 0.0, "duration": len(a) / 16000} for a in audios]
        self._pipeline.prompts = [
            self._model.get_prompt(tokenizer, previous_tokens=prev, without_timestamps=False)
            for prev in previous
        ]
        self._pipeline.last_speech_timestamp = 0.0
        outputs: list[list[dict[str, Any]]] = self._pipeline.forward(
            features, tokenizer, meta, self._options(tokenizer)
        )
        return outputs

    def _options(self, tokenizer: Tokenizer) -> TranscriptionOptions:
        return transcription_options(
            self._opts, tokenizer, beam_size=self._opts.beam_size, word_timestamps=True,
            temperatures=(0.0,), max_initial_timestamp=0.0,
        )  # fmt: skip

    def _result(
        self, job: AsrJob, segments: list[dict[str, Any]], language: str, elapsed: float
    ) -> Transcript:
        texts: list[str] = []
        words: list[Word] = []
        kept = kept_ratio(seg["text"] for seg in segments)  # one window per item
        for seg in segments:
            view = SimpleNamespace(**seg)
            # the batch path has no no-speech skip of its own: apply Whisper's rule here
            silent = (
                seg["no_speech_prob"] > self._opts.no_speech_threshold
                and seg["avg_logprob"] < self._opts.log_prob_threshold
            )
            if silent or is_hallucination(view, self._opts, kept):
                continue
            texts.append(seg["text"])
            words.extend(
                session_word(w["word"], w["start"], w["end"], w["probability"], job.start)
                for w in seg.get("words") or []
            )
        return Transcript(
            session_id=job.session_id,
            segment=job.segment,
            start=job.start,
            end=job.end,
            text="".join(texts).strip(),
            words=words,
            language=language,
            language_probability=1.0,
            processing_time=elapsed,
            final=job.final,
            rev=job.rev,
            speech_final=job.reason != "max_length",
            from_finalize=job.reason == "finalize",
            worker=self._worker,
        )
