"""A pyannote speaker-embedding model (``DIARIZE_EMBEDDING_MODEL``) as a plain callable.

Loaded through the same code as the segmentation model (:func:`workers.pyannote_vad.load_model`):
a Hugging Face name with ``PYANNOTE_AUTH_TOKEN``, or a local checkpoint. Needs the ``pyannote``
extra; imported only by ASR workers that label a ``diarize=true`` session.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shared.settings import Settings
from workers.pyannote_vad import load_model

MIN_SAMPLES = 8000
"""Embedding models need some audio; shorter segments are zero-padded to half a second."""


class PyannoteEmbedding:
    """float32 mono 16 kHz samples -> one embedding vector (the whole segment)."""

    def __init__(self, model: Any, device: str = "cpu") -> None:
        self.model = model
        self.device = torch.device(device)

    @classmethod
    def from_settings(cls, s: Settings) -> PyannoteEmbedding:
        model = load_model(s.diarize_embedding_model, s.pyannote_auth_token, s.pyannote_device)
        return cls(model, s.pyannote_device)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        samples = np.asarray(audio, dtype=np.float32).reshape(-1)
        if samples.size < MIN_SAMPLES:
            samples = np.pad(samples, (0, MIN_SAMPLES - samples.size))
        x = torch.from_numpy(np.ascontiguousarray(samples))
        with torch.inference_mode():
            out = self.model(x.to(self.device)[None, None])
        return np.asarray(out[0].float().cpu().numpy(), dtype=np.float32).reshape(-1)
