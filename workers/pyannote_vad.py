"""pyannote.audio's segmentation model as a VAD backend (``VAD_BACKEND=pyannote``).

Same interface as :class:`workers.silero.SileroVad`: one loaded model per process, and
``stream()`` gives each session a callable mapping windows (n, 512) to n speech probabilities,
with ``state()`` / ``set_state()`` for checkpoints. The streaming logic (bounded left context,
frames to windows) is the pure :class:`workers.streaming_vad.SlidingWindowStream`; this module only
loads the model and runs it.

Needs the ``pyannote`` extra (``poetry install -E pyannote``): torch is imported here, and this
module is imported only when the pyannote backend is selected.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import torch

from shared.settings import Settings
from workers.streaming_vad import SlidingWindowStream, speech_probability

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
WINDOW = 512
MIN_CONTEXT_S = 0.5
"""SincNet needs some input before its first frame: a session starts as if preceded by at least
this much silence."""


def load_model(checkpoint: str, token: str | None = None, device: str = "cpu") -> Any:
    """A pyannote ``Model`` from a Hugging Face name (downloaded with ``token``, or found in the
    HF cache) or a local checkpoint file / directory holding ``pytorch_model.bin``."""
    from pyannote.audio import Model

    started = time.monotonic()
    local = os.path.exists(checkpoint)
    model = Model.from_pretrained(checkpoint, token=None if local else (token or None))
    if model is None:  # pyannote returns None (and logs) when a gated download is refused
        raise RuntimeError(
            f"could not load pyannote model {checkpoint!r}: accept its conditions on Hugging Face "
            "and set PYANNOTE_AUTH_TOKEN, or point the setting at a local checkpoint"
        )
    model.eval()
    model.to(torch.device(device))
    log.info(
        "loaded pyannote model %s (%s) on %s in %.2fs",
        checkpoint, type(model).__name__, device, time.monotonic() - started,
    )  # fmt: skip
    return model


def output_kind(model: Any) -> str:
    """How to read the model's outputs: ``powerset``, ``multilabel`` or ``binary``."""
    from pyannote.audio.core.task import Problem

    specs = model.specifications
    if isinstance(specs, tuple):
        raise ValueError("multi-task pyannote models are not supported as VAD")
    if specs.powerset:
        return "powerset"
    if specs.problem == Problem.BINARY_CLASSIFICATION:
        return "binary"
    if specs.problem == Problem.MULTI_LABEL_CLASSIFICATION:
        return "multilabel"
    raise ValueError(f"a {specs.problem} model cannot be used as VAD")


class PyannoteVad:
    """The loaded segmentation model; shared by the sessions of a worker (one call at a time)."""

    def __init__(self, model: Any, context_s: float = 2.0, device: str = "cpu") -> None:
        self.model = model
        self.kind = output_kind(model)
        self.device = torch.device(device)
        context_s = max(context_s, MIN_CONTEXT_S)
        self.context_samples = int(context_s * SAMPLE_RATE)
        # the model was trained on chunks of `duration` seconds: keep context + new within it
        duration = float(model.specifications.duration)
        self.max_new_samples = max(WINDOW, int((duration - context_s) * SAMPLE_RATE))

    @classmethod
    def from_settings(cls, s: Settings) -> PyannoteVad:
        # one intra-op thread, as Silero: a worker scales by processes, and torch's default (all
        # cores) makes concurrent workers on one node fight over them
        torch.set_num_threads(1)
        model = load_model(s.pyannote_model, s.pyannote_auth_token, s.pyannote_device)
        return cls(model, s.pyannote_context_s, s.pyannote_device)

    def frame_probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Per-frame speech probability of float32 mono samples at 16 kHz."""
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        with torch.inference_mode():
            out = self.model(x.to(self.device)[None, None])
        return speech_probability(out[0].float().cpu().numpy(), self.kind)

    def stream(self) -> SlidingWindowStream:
        return SlidingWindowStream(
            self.frame_probabilities,
            self.context_samples,
            self.max_new_samples,
            WINDOW,
            silent_start=True,
        )
