"""Silero VAD through onnxruntime, window by window with per-session state.

The ONNX model ships inside faster-whisper (``faster_whisper/assets/silero_vad_v6.onnx``). One
:class:`SileroVad` (one inference session) is loaded per process; each audio session gets its own
:class:`SileroStream` carrying the LSTM state and the 64-sample context between calls, so results
are identical to running the model over the whole recording at once (a test checks this).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

WINDOW = 512
CONTEXT = 64


def default_model_path() -> Path:
    from faster_whisper.utils import get_assets_path

    return Path(get_assets_path()) / "silero_vad_v6.onnx"


class SileroVad:
    """The loaded model; cheap to share between sessions (``InferenceSession.run`` is thread-safe)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 4
        self.session = onnxruntime.InferenceSession(
            str(path or default_model_path()), providers=["CPUExecutionProvider"], sess_options=opts
        )

    def stream(self) -> SileroStream:
        return SileroStream(self)


class SileroStream:
    """Per-session state; call it with windows of shape (n, 512) to get n speech probabilities."""

    def __init__(self, model: SileroVad) -> None:
        self._session = model.session
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)

    def state(self) -> bytes:
        """h, c and context as float32 bytes, to continue elsewhere."""
        return b"".join(a.astype(np.float32).tobytes() for a in (self._h, self._c, self._context))

    def set_state(self, data: bytes) -> None:
        values = np.frombuffer(data, dtype=np.float32)
        if values.size != 128 + 128 + CONTEXT:
            raise ValueError("not a Silero state")
        self._h = values[:128].reshape(1, 1, 128).copy()
        self._c = values[128:256].reshape(1, 1, 128).copy()
        self._context = values[256:].copy()

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        windows = np.ascontiguousarray(windows, dtype=np.float32).reshape(-1, WINDOW)
        if len(windows) == 0:
            return np.zeros(0, dtype=np.float32)
        contexts = np.concatenate([self._context[None, :], windows[:-1, -CONTEXT:]], axis=0)
        batch = np.concatenate([contexts, windows], axis=1)
        probs, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = windows[-1, -CONTEXT:].copy()
        return np.asarray(probs, dtype=np.float32).reshape(-1)
