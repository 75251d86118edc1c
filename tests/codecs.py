"""Encoded test audio made at test time by FFmpeg's encoders (PyAV): G.711 and Opus streams of
corpus recordings, as telephony and browsers send them."""

from __future__ import annotations

import io

import av
import numpy as np


def encode_stream(audio: np.ndarray, fmt: str, codec: str, rate: int) -> bytes:
    """float32 mono ``audio`` at ``rate`` as a ``fmt`` stream of ``codec`` (``mulaw``/``pcm_mulaw``,
    ``alaw``/``pcm_alaw``, ``ogg``/``libopus``, ``webm``/``libopus``), fed in 20 ms frames."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").reshape(1, -1)
        step = rate // 50
        for i in range(0, pcm.shape[1], step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(pcm[:, i : i + step]), format="s16", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()
