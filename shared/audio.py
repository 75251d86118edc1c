"""Audio helpers: PCM16 conversion, file decoding and resampling (PyAV/FFmpeg)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

SAMPLE_RATE = 16_000
"""The pipeline's internal rate: everything on the streams is 16 kHz mono PCM16."""

BYTES_PER_SAMPLE = 2


class AudioDecodeError(ValueError):
    """The input could not be decoded as audio."""


def pcm16_to_float32(pcm: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM to float32 in [-1, 1)."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def float32_to_pcm16(audio: np.ndarray) -> bytes:
    clipped = np.clip(audio, -1.0, 32767.0 / 32768.0)
    return bytes((clipped * 32768.0).round().astype("<i2").tobytes())


def decode_file(source: str | Path | BinaryIO, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any file FFmpeg reads (any rate, any channel count) to float32 mono at ``sample_rate``.

    Channels are mixed down by the resampler; the result is a 1-D float32 array.
    """
    try:
        with av.open(
            source if not isinstance(source, Path) else str(source), mode="r"
        ) as container:
            if not container.streams.audio:
                raise AudioDecodeError("no audio stream in input")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
            parts: list[np.ndarray] = []
            for frame in container.decode(stream):
                frame.pts = None
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as exc:
        raise AudioDecodeError(f"cannot decode audio: {exc}") from exc
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(parts).astype(np.float32) / 32768.0


class PcmCarry:
    """Keeps frame boundaries sample-aligned: an odd trailing byte waits for the next frame."""

    def __init__(self, frame_bytes: int = BYTES_PER_SAMPLE) -> None:
        self._frame_bytes = frame_bytes
        self._rest = b""

    def push(self, data: bytes) -> bytes:
        data = self._rest + data
        cut = len(data) - len(data) % self._frame_bytes
        self._rest = data[cut:]
        return data[:cut]

    @property
    def pending(self) -> int:
        return len(self._rest)


class StreamResampler:
    """Stateful PCM16 mono resampler for live streams at a client's own rate (libswresample)."""

    def __init__(self, in_rate: int, out_rate: int = SAMPLE_RATE) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._resampler = (
            None
            if in_rate == out_rate
            else av.AudioResampler(format="s16", layout="mono", rate=out_rate)
        )

    def push(self, pcm: bytes) -> bytes:
        if self._resampler is None or not pcm:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self.in_rate
        return b"".join(
            bytes(out.to_ndarray().astype("<i2").tobytes())
            for out in self._resampler.resample(frame)
        )

    def flush(self) -> bytes:
        if self._resampler is None:
            return b""
        return b"".join(
            out.to_ndarray().astype("<i2").tobytes() for out in self._resampler.resample(None)
        )
