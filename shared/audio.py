"""Audio helpers: PCM16 conversion, file decoding and resampling (PyAV/FFmpeg)."""

from __future__ import annotations

import time
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


class UnsupportedFormat(AudioDecodeError):
    """The upload is not one of the audio containers or codecs that uploads may use."""


class AudioTooLong(AudioDecodeError):
    """The upload holds (or declares) more audio than the limit."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(f"the audio is longer than the limit of {limit_s:.0f} s")
        self.limit_s = limit_s


class DecodeTimeout(AudioDecodeError):
    """Decoding took longer than its deadline."""


# Containers an upload may use, as (what the first bytes say, FFmpeg demuxer). The demuxer is
# chosen here from the bytes, never probed by FFmpeg, so a playlist, an SDP description, an
# ffconcat list or any other demuxer that opens further URLs or files can never run; input comes
# only from the request body through PyAV's in-memory I/O.
UPLOAD_CONTAINERS = ("wav", "flac", "mp3", "aac", "ogg", "matroska", "mov", "aiff", "caf", "amr")
UPLOAD_CODECS = frozenset(
    {
        "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_s32be",
        "pcm_f32le", "pcm_f32be", "pcm_f64le", "pcm_u8", "pcm_mulaw", "pcm_alaw",
        "adpcm_ms", "adpcm_ima_wav", "flac", "mp3", "mp3float", "mp2", "mp2float", "aac",
        "alac", "vorbis", "opus", "libopus", "amrnb", "amrwb", "libopencore_amrnb",
    }
)  # fmt: skip
UPLOAD_FORMATS_TEXT = (
    "wav, flac, mp3, aac (ADTS), ogg (vorbis, opus), webm/mkv, mp4/m4a/mov (aac, alac), "
    "aiff, caf, amr"
)


def sniff_container(head: bytes) -> str | None:
    """The FFmpeg demuxer for an upload from its first bytes (at least 12), or None when it is
    not an audio container uploads may use. Pure."""
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        layer = (head[1] >> 1) & 0x3
        return "aac" if layer == 0 else "mp3"  # ADTS has layer bits 00; MPEG audio 01..11
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # also WebM
    if head[4:8] == b"ftyp":
        return "mov"  # mp4, m4a, mov, 3gp
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"caff":
        return "caf"
    if head[:5] == b"#!AMR":
        return "amr"
    return None


def decode_upload_pcm(
    source: BinaryIO, *, max_seconds: float, deadline_s: float, sample_rate: int = SAMPLE_RATE
) -> bytes:
    """An untrusted upload to mono PCM16 at ``sample_rate``, bounded: only the containers of
    :data:`UPLOAD_CONTAINERS` and the codecs of :data:`UPLOAD_CODECS`; a container that declares
    more than ``max_seconds`` is refused before anything is decoded, and decoding stops as soon as
    it passes ``max_seconds`` (so memory is bounded by the limit, whatever the file declares) or
    runs past ``deadline_s`` of wall time."""
    head = source.read(16)
    source.seek(0)
    demuxer = sniff_container(head)
    if demuxer is None:
        raise UnsupportedFormat(f"not an audio format uploads accept ({UPLOAD_FORMATS_TEXT})")
    limit = int(max_seconds * sample_rate)
    started = time.monotonic()
    try:
        with av.open(source, mode="r", format=demuxer, options={"protocol_whitelist": "pipe"}) as c:
            if not c.streams.audio:
                raise AudioDecodeError("no audio stream in input")
            stream = c.streams.audio[0]
            codec = stream.codec_context.name
            if codec not in UPLOAD_CODECS:
                raise UnsupportedFormat(
                    f"audio codec {codec!r} is not accepted ({UPLOAD_FORMATS_TEXT})"
                )
            declared = c.duration / 1_000_000 if c.duration else 0.0  # AV_TIME_BASE units
            if declared > max_seconds:
                raise AudioTooLong(max_seconds)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
            parts: list[bytes] = []
            samples = 0
            for frame in c.decode(stream):
                frame.pts = None
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    samples += len(chunk)
                    parts.append(chunk.astype("<i2").tobytes())
                if samples > limit:
                    raise AudioTooLong(max_seconds)
                if time.monotonic() - started > deadline_s:
                    raise DecodeTimeout(f"decoding took longer than {deadline_s:.0f} s")
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1).astype("<i2").tobytes())
    except av.FFmpegError as exc:
        raise AudioDecodeError(f"cannot decode audio: {exc}") from exc
    pcm = b"".join(parts)
    if len(pcm) // BYTES_PER_SAMPLE > limit:
        raise AudioTooLong(max_seconds)
    return pcm


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
