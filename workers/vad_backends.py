"""Which VAD a worker runs (``VAD_BACKEND``), and the detection thresholds that go with it.

Both backends give the same interface (see :class:`VadModel`), consumed by the pure
``Segmenter``. pyannote is imported only when selected, so the default install never imports
torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from shared.settings import Settings


class VadStream(Protocol):
    """One session's VAD: windows (n, 512) float32 at 16 kHz -> n speech probabilities."""

    def __call__(self, windows: np.ndarray) -> np.ndarray: ...

    def state(self) -> bytes: ...

    def set_state(self, data: bytes) -> None: ...


class VadModel(Protocol):
    def stream(self) -> VadStream: ...


def make_vad(settings: Settings) -> VadModel:
    """Load the configured VAD (once per process)."""
    if settings.vad_backend == "pyannote":
        try:
            from workers.pyannote_vad import PyannoteVad
        except ImportError as exc:
            raise RuntimeError(
                f"VAD_BACKEND=pyannote needs the pyannote extra ({exc}): "
                "poetry install -E pyannote (see docs/vad.md)"
            ) from exc
        return PyannoteVad.from_settings(settings)
    from workers.silero import SileroVad

    return SileroVad()


@dataclass(frozen=True)
class Detection:
    threshold: float
    neg_threshold: float | None
    min_speech_ms: int
    min_silence_ms: int


def detection_params(s: Settings) -> Detection:
    """Silero: VAD_THRESHOLD (silence below it minus 0.15), VAD_MIN_SPEECH_MS,
    VAD_MIN_SILENCE_MS. pyannote: its onset / offset hysteresis and minimum durations, as
    pyannote's own ``Binarize`` names them (0 = the VAD_* value)."""
    if s.vad_backend == "pyannote":
        return Detection(
            threshold=s.pyannote_onset,
            neg_threshold=s.pyannote_offset,
            min_speech_ms=s.pyannote_min_duration_on_ms or s.vad_min_speech_ms,
            min_silence_ms=s.pyannote_min_duration_off_ms or s.vad_min_silence_ms,
        )
    return Detection(s.vad_threshold, None, s.vad_min_speech_ms, s.vad_min_silence_ms)
