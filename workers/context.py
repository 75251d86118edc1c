"""The encoder's context fitted to the utterance instead of a whole 30 s window.

faster-whisper pads every window's log-mel features with zeros to 3000 frames (30 s) before the
encoder, as Whisper was trained. An utterance of a live session is a few seconds long, so most of
each encoder pass is spent on padding, and the encoder is most of a decode: tiny.en int8 on one
CPU thread encodes a whole window in ~0.33 s and 15 s in ~0.06 s (self-attention is quadratic in
the length). CTranslate2's Whisper encoder takes any length up to the window, so the encoder can
be given the utterance and ``pad_s`` seconds of the padding, rounded up to whole seconds (fewer
distinct shapes for the allocator and, on a GPU, for kernel caches), never more than the window.

With too little padding Whisper stops short of the end of the audio and a second pass decodes
the rest (0.5 s: WER 8.19 % → 12.52 % on the corpus' 72 LibriSpeech files); from ~2 s on, the WER
of wideband speech is that of the whole window. The default is the utterance and 5 s of padding
(``ASR_CONTEXT_PAD_S``), never less than :data:`MIN_CONTEXT_FRAMES` (10 s). Narrowband audio
(a session whose client sent less than 16 kHz: telephony's 8 kHz G.711) keeps whole windows
(:func:`context_for`): its short utterances lost words in every fitted context tried, up to 20 s
(``python -m bench.context`` and docs/benchmarks.md, *Encoder context*). A multilingual model
keeps whole windows unless ``ASR_CONTEXT_PAD_S`` says otherwise (:func:`context_pad`): on the
bundled base model the corpus' other languages lost 4.5 points of mean error and 2.3 of chrF in
the fitted context (docs/benchmarks.md, *Languages*), where tiny.en English lost none.

Everything that decodes through the model's ``encode`` gets it: faster-whisper's ``transcribe``
and ``generate_segments`` (a later window of a long job too), the shared-encoder path of
detection and translation, and the cross-session batches (fitted to the longest item of the
batch).

The same model class ends a decode at the end of its audio when only a short tail is left
(:func:`tail_done`). An utterance of a live session is one window; when the decoder closes its
last segment with a timestamp pair (``<|10.12|><|10.12|>``: "a new segment starts here") and
stops, faster-whisper (like Whisper) seeks there, or with word timestamps back to the last
word's end, and decodes the rest as another window: an encoder pass and a decode of the last
fraction of a second, alone. The tails under 0.4 s of the corpus' LibriSpeech files gave ``.``,
``Thank you.`` and ``in``, none of it spoken; the real ones (a word the first window skipped:
1.07 s; an early stop: 4.9 s) were longer. A tail under :data:`MIN_TAIL_S` is not decoded
again: 7 of the 72 files had a later window at the default pad, 2 with the rule, and the WER
went from 8.33 to 8.19 % (that of whole windows); ~40 ms less for the 10.4 s held-out utterance
on one CPU thread, an encoder pass less on a GPU (``python -m bench.context --min-tails 0,0.5``,
docs/benchmarks.md).

:func:`fitted_frames` and :func:`tail_done` are the rules (pure); :func:`fitted_model_class`
wraps faster-whisper's ``WhisperModel`` with them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np

AUTO_CONTEXT_PAD_S = 5.0
"""The pad of an English-only model when ``ASR_CONTEXT_PAD_S`` is unset."""


def context_pad(setting: float | None, multilingual: bool) -> float:
    """The encoder pad a worker uses: ``ASR_CONTEXT_PAD_S`` where set (0: whole windows), else
    :data:`AUTO_CONTEXT_PAD_S` for an English-only model and whole windows for a multilingual one
    (module docstring)."""
    if setting is not None:
        return setting
    return 0.0 if multilingual else AUTO_CONTEXT_PAD_S


FRAMES_PER_S = 100
"""Whisper's log-mel frames per second (hop of 160 samples at 16 kHz)."""
QUANTUM_FRAMES = FRAMES_PER_S
"""The fitted length is rounded up to a multiple of this (1 s)."""


def content_frames(features: np.ndarray) -> int:
    """Frames of ``features`` (``(n_mels, frames)`` or ``(batch, n_mels, frames)``) before the
    trailing zero padding of ``pad_or_trim`` (the longest item of a batch). A frame of real
    normalised log-mel features is never zero in every band."""
    frames = features if features.ndim == 3 else features[None]
    used = np.flatnonzero(np.any(frames != 0, axis=(0, 1)))
    return int(used[-1]) + 1 if len(used) else 0


MIN_CONTEXT_FRAMES = 10 * FRAMES_PER_S
"""No fitted context is shorter than 10 s: on the corpus' utterances cut as the service cuts
them (median 2.6 s), 5 s of padding alone cost wideband speech ~0.5 WER points and a 10 s floor
nothing, at the same speed (docs/benchmarks.md, *Encoder context*)."""


def fitted_frames(
    content: int, total: int, pad_s: float, min_frames: int = MIN_CONTEXT_FRAMES
) -> int:
    """How many of ``total`` frames the encoder gets for ``content`` frames of audio: the audio
    and ``pad_s`` seconds more, at least ``min_frames``, rounded up to :data:`QUANTUM_FRAMES`;
    ``pad_s`` 0: all of them (the whole window)."""
    if pad_s <= 0:
        return total
    wanted = max(content + round(pad_s * FRAMES_PER_S), min_frames)
    return min(total, -(-wanted // QUANTUM_FRAMES) * QUANTUM_FRAMES)


def fit(features: np.ndarray, pad_s: float) -> np.ndarray:
    """``features`` cut to their fitted length (a view)."""
    return features[..., : fitted_frames(content_frames(features), features.shape[-1], pad_s)]


MIN_TAIL_S = 0.5
"""A window's decode that leaves less than this of its audio after its last timestamp (and
ends on a timestamp) is the last one (:func:`tail_done`)."""


def tail_done(
    tokens: list[int],
    timestamp_begin: int,
    segment_size: int,
    next_seek: int,
    seek: int,
    window_frames: int,
    min_tail_s: float = MIN_TAIL_S,
) -> bool:
    """Whether the decode of the window of ``segment_size`` frames from ``seek`` ends the
    utterance although faster-whisper would seek to ``next_seek`` and decode again: the window
    reached the end of the audio (it is shorter than a whole window of ``window_frames``), its
    tokens end on a timestamp (no unfinished text was dropped) and less than ``min_tail_s`` is
    left after it (none, when the timestamp is past the end: faster-whisper would still seek
    back to the last word's end with word timestamps on)."""
    reaches_end = segment_size < window_frames
    ends_on_timestamp = bool(tokens) and tokens[-1] >= timestamp_begin
    tail = seek + segment_size - next_seek
    short = tail < round(min_tail_s * FRAMES_PER_S)
    return min_tail_s > 0 and reaches_end and ends_on_timestamp and short


WIDEBAND_RATE = 16_000
"""Audio that reached the gateway at a lower rate (telephony: 8 kHz G.711) is narrowband."""


def is_narrowband(job: Any) -> bool:
    """Whether a job's audio came at less than 16 kHz: its encoder sees whole windows."""
    return int(job.source_rate) < WIDEBAND_RATE


@contextmanager
def context_for(model: Any, job: Any) -> Iterator[None]:
    """The model's encoder context for one job's decode: the whole window for narrowband audio
    (short telephony utterances lost words in fitted contexts: docs/benchmarks.md, *Encoder
    context*), else the model's fitted one. The worker decodes one job at a time."""
    if not is_narrowband(job) or not hasattr(model, "context_pad_s"):
        yield
        return
    saved = model.context_pad_s
    model.context_pad_s = 0.0
    try:
        yield
    finally:
        model.context_pad_s = saved


@cache
def fitted_model_class() -> Any:
    """faster-whisper's ``WhisperModel`` whose ``encode`` fits its input (:func:`fit`) to
    ``context_pad_s`` (an attribute; 0: the whole window) and whose decode does not go on to a
    short tail (:func:`tail_done`; ``min_tail_s``, 0: faster-whisper's own seeking)."""
    from faster_whisper import WhisperModel

    class FittedWhisperModel(WhisperModel):  # type: ignore[misc]
        context_pad_s: float = 0.0
        min_tail_s: float = MIN_TAIL_S

        def encode(self, features: np.ndarray) -> Any:
            return super().encode(fit(features, self.context_pad_s))

        def _split_segments_by_timestamps(
            self, tokenizer: Any, tokens: list[int], time_offset: float, segment_size: int,
            segment_duration: float, seek: int,
        ) -> Any:  # fmt: skip
            segments, next_seek, single_ending = super()._split_segments_by_timestamps(
                tokenizer, tokens, time_offset, segment_size, segment_duration, seek
            )
            done = not single_ending and tail_done(
                tokens, tokenizer.timestamp_begin, segment_size, next_seek, seek,
                self.feature_extractor.nb_max_frames, self.min_tail_s,
            )  # fmt: skip
            if done:  # as a single timestamp ending: seek to the end, no word-end re-seek
                return segments, seek + segment_size, True
            return segments, next_seek, single_ending

    return FittedWhisperModel
