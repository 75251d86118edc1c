"""The rule that fits Whisper's encoder context to the utterance (workers/context.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from workers.context import (
    AUTO_CONTEXT_PAD_S,
    MIN_CONTEXT_FRAMES,
    MIN_TAIL_S,
    QUANTUM_FRAMES,
    content_frames,
    context_for,
    context_pad,
    fit,
    fitted_frames,
    is_narrowband,
    tail_done,
)


def padded(frames: int, total: int = 3000, mels: int = 80) -> np.ndarray:
    """Log-mel features of ``frames`` frames of audio, zero-padded as ``pad_or_trim`` does."""
    rng = np.random.default_rng(frames)
    out = np.zeros((mels, total), dtype=np.float32)
    out[:, :frames] = rng.uniform(-1.0, 1.5, size=(mels, frames))
    return out


def test_content_ends_at_the_last_frame_before_the_zero_padding() -> None:
    assert content_frames(padded(542)) == 542
    assert content_frames(padded(3000)) == 3000
    assert content_frames(padded(0)) == 0


def test_a_frame_with_one_nonzero_band_is_content() -> None:
    f = padded(100)
    f[:, 100:] = 0
    f[79, 700] = 0.25  # one band of one frame: still audio, not padding
    assert content_frames(f) == 701


def test_a_batch_is_fitted_to_its_longest_item() -> None:
    batch = np.stack([padded(300), padded(1234), padded(10)])
    assert content_frames(batch) == 1234
    assert fit(batch, 5.0).shape == (3, 80, 1800)
    assert fit(np.stack([padded(300), padded(10)]), 5.0).shape[-1] == MIN_CONTEXT_FRAMES
    assert fit(np.stack([padded(300), padded(1834)]), 5.0).shape == (2, 80, 2400)


def test_the_fitted_length_is_the_audio_and_the_pad_in_whole_seconds() -> None:
    assert fitted_frames(1842, 3000, 3.0) == 2200  # 18.42 s + 3 s -> 22 s
    assert fitted_frames(1800, 3000, 3.0) == 2100  # exactly on a second stays there
    assert fitted_frames(1, 3000, 0.5, min_frames=0) == QUANTUM_FRAMES
    assert fitted_frames(2900, 3000, 3.0) == 3000  # never more than the window
    assert fitted_frames(542, 3000, 0.0) == 3000  # 0: the whole window, as faster-whisper


@pytest.mark.parametrize("pad_s", [0.5, 2.0, 3.0, 10.0])
def test_fitting_keeps_every_frame_of_audio_and_cuts_only_padding(pad_s: float) -> None:
    for frames in (1, 99, 100, 101, 542, 1499, 2999):
        f = padded(frames)
        cut = fit(f, pad_s)
        assert cut.shape[-1] % QUANTUM_FRAMES == 0 or cut.shape[-1] == f.shape[-1]
        assert cut.shape[-1] >= min(f.shape[-1], max(frames + pad_s * 100, MIN_CONTEXT_FRAMES))
        assert np.array_equal(cut[:, :frames], f[:, :frames])
        assert not cut[:, frames:].any()


def test_a_short_utterance_gets_at_least_the_minimum_context() -> None:
    assert fitted_frames(230, 3000, 5.0) == MIN_CONTEXT_FRAMES  # 2.3 s + 5 s < 10 s
    assert fitted_frames(230, 3000, 5.0, min_frames=0) == 800
    assert fitted_frames(1700, 3000, 5.0) == 2200


def test_narrowband_jobs_get_the_whole_window_for_their_decode_only() -> None:
    model = SimpleNamespace(context_pad_s=5.0)
    phone, mic = SimpleNamespace(source_rate=8000), SimpleNamespace(source_rate=48000)
    assert is_narrowband(phone) and not is_narrowband(mic)
    with context_for(model, phone):
        assert model.context_pad_s == 0.0
    assert model.context_pad_s == 5.0
    with context_for(model, mic):
        assert model.context_pad_s == 5.0
    try:
        with context_for(model, phone):
            raise RuntimeError("decode failed")
    except RuntimeError:
        pass
    assert model.context_pad_s == 5.0


def test_the_context_pad_is_the_setting_or_by_the_models_languages() -> None:
    assert context_pad(None, multilingual=False) == AUTO_CONTEXT_PAD_S
    assert context_pad(None, multilingual=True) == 0.0
    assert context_pad(3.0, multilingual=True) == 3.0
    assert context_pad(0.0, multilingual=False) == 0.0


TS = 50_000
"""A tokenizer's ``timestamp_begin`` in these tests: tokens from here on are timestamps."""


def test_a_window_that_reached_the_end_and_left_a_short_tail_is_the_last() -> None:
    # 10.43 s of audio in one window; "... sauce. <|10.12|><|10.12|>": 0.31 s after the stamp
    tokens = [100, 200, TS + 506, TS + 506]
    assert tail_done(tokens, TS, segment_size=1043, next_seek=1012, seek=0, window_frames=3000)
    # the stamp past the end of the audio (faster-whisper would go back to the last word)
    assert tail_done([100, TS + 526, TS + 526], TS, 1043, 1052, 0, 3000)


def test_a_long_tail_unfinished_text_or_a_whole_window_is_decoded_on() -> None:
    long_tail = round((MIN_TAIL_S + 0.3) * 100)
    assert not tail_done([100, TS + 10, TS + 10], TS, 551, 551 - long_tail, 0, 3000)
    # text after the last stamp: faster-whisper dropped it and decodes it again
    assert not tail_done([100, TS + 506, TS + 506, 300], TS, 1043, 1012, 0, 3000)
    # a whole window: more audio follows it
    assert not tail_done([100, TS + 1490, TS + 1490], TS, 3000, 2980, 0, 3000)
    # a later window of a long job, short tail: the same rule from its own seek
    assert tail_done([100, TS + 245, TS + 245], TS, 520, 3490, 3000, 3000)
    assert not tail_done([], TS, 520, 3490, 3000, 3000)


def test_a_min_tail_of_zero_keeps_faster_whispers_own_seeking() -> None:
    assert not tail_done([100, TS + 506, TS + 506], TS, 1043, 1012, 0, 3000, min_tail_s=0)
    assert not tail_done([100, TS + 526, TS + 526], TS, 1043, 1052, 0, 3000, min_tail_s=0)
