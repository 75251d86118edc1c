"""A frame-level VAD model (pyannote's segmentation) run in streaming fashion: the pure core.

pyannote's segmentation models look at a chunk of audio and return one score vector per frame
(~17 ms); they have no state to carry between calls. To give them the same per-session interface
as Silero (``stream(windows) -> probabilities``, see ``workers/segmenter.py``), a
:class:`SlidingWindowStream` keeps a **bounded** left context of the session's audio (the last
``context_s`` seconds, never the whole session), runs the injected model over context + new audio,
keeps the frames that cover the new audio and averages them into one probability per 512-sample
window. The model therefore sees at least ``context_s`` seconds of history for every window (the
LSTM warms up on it), at a cost proportional to ``context_s`` + new audio per call.

No torch here: the model is any callable mapping float32 samples to per-frame speech
probabilities (``workers/pyannote_vad.py`` provides the real one), so the logic is tested with
fakes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

FrameModel = Callable[[np.ndarray], np.ndarray]
"""float32 mono samples (n,) -> per-frame speech probabilities (f,), frames evenly spread."""

STATE_MAGIC = b"SWV1"


def speech_probability(outputs: np.ndarray, kind: str) -> np.ndarray:
    """Per-frame speech probability from a segmentation model's outputs (frames, classes).

    ``powerset`` (pyannote/segmentation-3.0): log-probabilities of speaker sets, class 0 the empty
    set, so speech = 1 - P(nobody). ``multilabel`` (pyannote/segmentation 2.x): one sigmoid per
    speaker, speech = the most active speaker. ``binary``: a single speech probability."""
    out = np.asarray(outputs, dtype=np.float32)
    if out.ndim == 1:
        out = out[:, None]
    if kind == "powerset":
        probs = 1.0 - np.exp(out[:, 0])
    elif kind == "multilabel":
        probs = out.max(axis=1)
    elif kind == "binary":
        probs = out[:, 0]
    else:
        raise ValueError(f"unknown output kind {kind!r}")
    return np.clip(probs, 0.0, 1.0).astype(np.float32)


def frames_to_windows(
    frame_probs: np.ndarray, num_samples: int, first: int, n_windows: int, window: int = 512
) -> np.ndarray:
    """Aggregate frame probabilities into ``n_windows`` window probabilities.

    ``frame_probs`` covers ``num_samples`` input samples with frames spread evenly (frame ``i``
    centred at ``(i + 0.5) * num_samples / len(frame_probs)``); the windows start at sample
    ``first`` of that input and are ``window`` long. A window's probability is the mean of the
    frames centred inside it, or, where no frame centre falls inside (frames coarser than
    windows), the frame curve interpolated at the window's centre."""
    frames = np.asarray(frame_probs, dtype=np.float64).reshape(-1)
    if n_windows <= 0:
        return np.zeros(0, dtype=np.float32)
    if frames.size == 0:
        raise ValueError("the model returned no frames")
    step = num_samples / frames.size
    centres = (np.arange(frames.size) + 0.5) * step
    idx = np.floor((centres - first) / window).astype(np.int64)
    inside = (idx >= 0) & (idx < n_windows)
    sums = np.bincount(idx[inside], weights=frames[inside], minlength=n_windows)
    counts = np.bincount(idx[inside], minlength=n_windows)
    win_centres = first + (np.arange(n_windows) + 0.5) * window
    fallback = np.interp(win_centres, centres, frames)
    out = np.where(counts > 0, sums / np.maximum(counts, 1), fallback)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


class SlidingWindowStream:
    """Per-session state: call it with windows (n, window) to get n speech probabilities."""

    def __init__(
        self,
        model: FrameModel,
        context_samples: int,
        max_chunk_samples: int,
        window: int = 512,
        silent_start: bool = False,
    ) -> None:
        """``silent_start``: the session starts as if preceded by ``context_samples`` of silence
        (models that need some input before their first frame)."""
        if max_chunk_samples < window:
            raise ValueError("max_chunk_samples must hold at least one window")
        self._model = model
        self._window = window
        self._context_len = max(0, context_samples)
        self._max_new = max(window, (max_chunk_samples // window) * window)
        self._context = np.zeros(self._context_len if silent_start else 0, dtype=np.float32)

    @property
    def context_samples(self) -> int:
        return len(self._context)

    def state(self) -> bytes:
        """The audio context (PCM16, to halve the checkpoint), to continue elsewhere."""
        pcm = np.clip(np.round(self._context * 32768.0), -32768, 32767).astype("<i2")
        return STATE_MAGIC + struct.pack("<I", pcm.size) + pcm.tobytes()

    def set_state(self, data: bytes) -> None:
        if len(data) < 8 or data[:4] != STATE_MAGIC:
            raise ValueError("not a sliding-window VAD state")
        (n,) = struct.unpack("<I", data[4:8])
        if len(data) != 8 + 2 * n or n > self._context_len:
            raise ValueError("corrupt sliding-window VAD state")
        self._context = np.frombuffer(data[8:], dtype="<i2").astype(np.float32) / 32768.0

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        w = self._window
        audio = np.ascontiguousarray(windows, dtype=np.float32).reshape(-1)
        n = audio.size // w
        out = np.zeros(n, dtype=np.float32)
        # a long catch-up read is processed in bounded pieces, each with its left context
        for begin in range(0, n * w, self._max_new):
            piece = audio[begin : min(begin + self._max_new, n * w)]
            out[begin // w : begin // w + piece.size // w] = self._run(piece)
        return out

    def _run(self, new: np.ndarray) -> np.ndarray:
        chunk = np.concatenate([self._context, new])
        frame_probs = np.asarray(self._model(chunk), dtype=np.float32).reshape(-1)
        probs = frames_to_windows(
            frame_probs, chunk.size, self._context.size, new.size // self._window, self._window
        )
        if self._context_len:
            self._context = chunk[-self._context_len :].copy()
        return probs
