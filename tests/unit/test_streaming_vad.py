"""The sliding-window adapter of frame-level VAD models (pyannote's), with fake models: no torch."""

from __future__ import annotations

import numpy as np
import pytest

from workers.segmenter import Segmenter, SegmenterConfig
from workers.streaming_vad import SlidingWindowStream, frames_to_windows, speech_probability

W = 512
SR = 16_000


def test_speech_probability_kinds() -> None:
    # powerset: class 0 is "nobody speaks"
    logp = np.log(np.array([[0.9, 0.05, 0.05], [0.2, 0.5, 0.3]], dtype=np.float32))
    np.testing.assert_allclose(speech_probability(logp, "powerset"), [0.1, 0.8], atol=1e-6)
    multi = np.array([[0.1, 0.7, 0.2], [0.0, 0.0, 0.05]], dtype=np.float32)
    np.testing.assert_allclose(speech_probability(multi, "multilabel"), [0.7, 0.05])
    np.testing.assert_allclose(speech_probability(np.array([0.3, 0.9]), "binary"), [0.3, 0.9])
    with pytest.raises(ValueError):
        speech_probability(multi, "other")


def test_frames_to_windows_averages_frames_inside_each_window() -> None:
    # 4 windows of input, 8 frames (two per window): window k averages frames 2k and 2k+1
    frames = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.5, 0.5])
    out = frames_to_windows(frames, 4 * W, first=0, n_windows=4, window=W)
    np.testing.assert_allclose(out, [0.1, 0.5, 0.9, 0.5], atol=1e-6)
    # only the last two windows asked for (the first two are context)
    out = frames_to_windows(frames, 4 * W, first=2 * W, n_windows=2, window=W)
    np.testing.assert_allclose(out, [0.9, 0.5], atol=1e-6)


def test_frames_coarser_than_windows_are_interpolated() -> None:
    frames = np.array([0.0, 1.0])  # 2 frames over 8 windows: centres at windows 2 and 6
    out = frames_to_windows(frames, 8 * W, first=0, n_windows=8, window=W)
    assert out.shape == (8,)
    assert np.all((out >= 0) & (out <= 1))
    assert out[0] == pytest.approx(0.0) and out[-1] == pytest.approx(1.0)
    assert np.all(np.diff(out) >= 0)


class EnergyModel:
    """A fake frame model: speech where the signal is loud, ~1 frame per 270 samples as PyanNet;
    it records the input lengths it was given."""

    def __init__(self) -> None:
        self.lengths: list[int] = []

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        self.lengths.append(audio.size)
        n_frames = max(1, audio.size // 270)
        edges = np.linspace(0, audio.size, n_frames + 1).astype(int)
        return np.array(
            [
                float(np.abs(audio[a:b]).mean() > 0.05) if b > a else 0.0
                for a, b in zip(edges[:-1], edges[1:], strict=True)
            ]
        )


def tone(seconds: float, amp: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_stream_context_is_bounded_and_results_match_chunking() -> None:
    audio = np.concatenate([tone(1.0, 0.0), tone(1.5, 0.5), tone(1.0, 0.0)])
    n = audio.size // W
    windows = audio[: n * W].reshape(n, W)
    model = EnergyModel()
    stream = SlidingWindowStream(model, context_samples=SR, max_chunk_samples=2 * SR)
    probs = np.concatenate([stream(windows[i : i + 3]) for i in range(0, n, 3)])
    assert probs.shape == (n,)
    assert all(size <= SR + 3 * W for size in model.lengths), "context must stay bounded"
    assert stream.context_samples == SR
    speech = probs > 0.5
    first, last = np.flatnonzero(speech)[[0, -1]]
    assert abs(first * W / SR - 1.0) < 0.05 and abs((last + 1) * W / SR - 2.5) < 0.05
    # all at once gives the same decisions but at a frame straddling a window edge (the frame
    # grid depends on the input length)
    whole = SlidingWindowStream(EnergyModel(), context_samples=SR, max_chunk_samples=2 * SR)
    assert np.sum((whole(windows) > 0.5) != speech) <= 2


def test_long_catch_up_reads_are_cut_into_bounded_pieces() -> None:
    model = EnergyModel()
    stream = SlidingWindowStream(model, context_samples=SR // 2, max_chunk_samples=SR)
    out = stream(np.zeros((100, W), dtype=np.float32))  # 3.2 s at once
    assert out.shape == (100,)
    assert max(model.lengths) <= SR // 2 + SR


def test_state_round_trip_continues_identically() -> None:
    audio = np.concatenate([tone(0.7, 0.3), tone(0.5, 0.0)])
    n = audio.size // W
    windows = audio[: n * W].reshape(n, W)
    a = SlidingWindowStream(EnergyModel(), SR // 2, SR, silent_start=True)
    a(windows[:10])
    b = SlidingWindowStream(EnergyModel(), SR // 2, SR)
    b.set_state(a.state())
    np.testing.assert_allclose(a(windows[10:]), b(windows[10:]), atol=1e-6)
    assert len(a.state()) <= 8 + 2 * (SR // 2)
    with pytest.raises(ValueError):
        b.set_state(b"nonsense")


def test_drives_the_segmenter() -> None:
    """The adapter plugs into the Segmenter exactly like Silero's stream."""
    audio = np.concatenate([tone(0.5, 0.0), tone(1.2, 0.5), tone(1.0, 0.0)])
    seg = Segmenter(
        SlidingWindowStream(EnergyModel(), SR, 9 * SR, silent_start=True),
        SegmenterConfig(threshold=0.5, neg_threshold=0.5, speech_pad_ms=100),
    )
    events = [e for i in range(0, audio.size, 1600) for e in seg.feed(audio[i : i + 1600])]
    events += seg.flush()
    segments = [e for e in events if hasattr(e, "reason")]
    assert len(segments) == 1
    start, end = segments[0].seconds()
    assert 0.35 <= start <= 0.5 and 1.7 <= end <= 1.9
