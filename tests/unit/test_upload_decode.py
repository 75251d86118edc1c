"""Untrusted uploads are decoded within bounds: only audio containers chosen from the bytes, only
audio codecs, a duration cap checked before and during decoding (real FFmpeg through PyAV)."""

from __future__ import annotations

import io
import time

import av
import numpy as np
import pytest

from shared.audio import (
    AudioTooLong,
    UnsupportedFormat,
    decode_upload_pcm,
    sniff_container,
)


def _encode(fmt: str, codec: str, seconds: float, rate: int = 16000, *, seekable: bool = True) -> bytes:  # fmt: skip
    class Sink(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return seekable

        def write(self, b) -> int:  # type: ignore[no-untyped-def, override]
            self.data += b
            return len(b)

    sink: io.BytesIO | Sink = io.BytesIO() if seekable else Sink()
    tone = (np.sin(np.arange(int(rate * seconds)) * 2 * np.pi * 440 / rate) * 8000).astype(np.int16)
    with av.open(sink, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        for i in range(0, len(tone), rate):
            frame = av.AudioFrame.from_ndarray(
                tone[None, i : i + rate], format="s16", layout="mono"
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return bytes(sink.getvalue() if isinstance(sink, io.BytesIO) else sink.data)


@pytest.mark.parametrize(
    ("fmt", "codec", "container"),
    [("wav", "pcm_s16le", "wav"), ("flac", "flac", "flac"), ("mp3", "libmp3lame", "mp3"),
     ("ogg", "libopus", "ogg"), ("webm", "libopus", "matroska"), ("ipod", "aac", "mov"),
     ("adts", "aac", "aac")],
)  # fmt: skip
def test_each_accepted_container_is_recognised_and_decoded(fmt: str, codec: str, container: str) -> None:  # fmt: skip
    data = _encode(fmt, codec, 3.0, 48000 if codec == "libopus" else 16000)
    assert sniff_container(data[:16]) == container
    pcm = decode_upload_pcm(io.BytesIO(data), max_seconds=60, deadline_s=30)
    assert abs(len(pcm) / 2 / 16000 - 3.0) < 0.1


@pytest.mark.parametrize(
    "head",
    [b"v=0\no=- 0 0 IN IP4 127.0.0.1\n", b"ffconcat version 1.0\n", b"#EXTM3U\n#EXT-X-",
     b"<?xml version='1.0'?><MPD", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", b"", b"RIFF\x00\x00\x00\x00AVI "],
)  # fmt: skip
def test_anything_else_is_refused_before_ffmpeg_sees_it(head: bytes) -> None:
    assert sniff_container(head) is None
    with pytest.raises(UnsupportedFormat, match="wav, flac, mp3"):
        decode_upload_pcm(io.BytesIO(head + bytes(64)), max_seconds=60, deadline_s=5)


def test_a_video_codec_in_an_accepted_container_is_refused() -> None:
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=1)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuvj420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        for packet in stream.encode(frame.reformat(format="yuvj420p")):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(Exception, match="no audio stream|not accepted"):
        decode_upload_pcm(io.BytesIO(buf.getvalue()), max_seconds=60, deadline_s=5)


def test_a_declared_duration_over_the_cap_is_refused_without_decoding() -> None:
    data = _encode("flac", "flac", 120.0)  # FLAC's header declares its length
    started = time.monotonic()
    with pytest.raises(AudioTooLong):
        decode_upload_pcm(io.BytesIO(data), max_seconds=30, deadline_s=30)
    assert time.monotonic() - started < 5  # refused from the header, not after decoding 2 min


def test_an_undeclared_duration_stops_decoding_at_the_cap() -> None:
    """A live-recorded WebM (MediaRecorder writes no duration): decoding stops at the cap, so
    memory stays bounded by it whatever the file holds."""
    data = _encode("webm", "libopus", 40.0, 48000, seekable=False)
    with av.open(io.BytesIO(data)) as probe:
        assert not probe.duration  # nothing declared: the loop's count is what stops it
    with pytest.raises(AudioTooLong):
        decode_upload_pcm(io.BytesIO(data), max_seconds=10, deadline_s=30)
    assert len(decode_upload_pcm(io.BytesIO(data), max_seconds=60, deadline_s=30)) / 32000 == pytest.approx(40, abs=0.1)  # fmt: skip
