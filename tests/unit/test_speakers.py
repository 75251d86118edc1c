"""Online speaker clustering (pure core of speaker labels)."""

from __future__ import annotations

import numpy as np
import pytest

from workers.speakers import ClusterConfig, ClusterState, OnlineClustering


def voice(seed: int, dim: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=dim)


def noisy(v: np.ndarray, rng: np.random.Generator, scale: float = 0.2) -> np.ndarray:
    return v + scale * rng.normal(size=v.size) * np.linalg.norm(v) / np.sqrt(v.size)


def test_two_voices_get_two_stable_labels() -> None:
    rng = np.random.default_rng(0)
    a, b = voice(1), voice(2)
    clustering = OnlineClustering(ClusterConfig(threshold=0.6))
    state = ClusterState()
    labels = [clustering.assign(state, noisy(v, rng), 2.0) for v in [a, b, a, a, b, a, b, b]]
    assert labels == ["S0", "S1", "S0", "S0", "S1", "S0", "S1", "S1"]
    assert state.counts == [4, 4]


def test_max_speakers_bounds_new_labels() -> None:
    clustering = OnlineClustering(ClusterConfig(threshold=0.99, max_speakers=2))
    state = ClusterState()
    labels = [clustering.assign(state, voice(i), 2.0) for i in range(5)]
    assert labels[:2] == ["S0", "S1"]
    assert set(labels) == {"S0", "S1"}
    assert len(state.centroids) == 2


def test_short_segments_join_without_moving_centroids() -> None:
    clustering = OnlineClustering(ClusterConfig(threshold=0.6, min_duration_s=1.0))
    state = ClusterState()
    assert clustering.assign(state, voice(1), 0.4) is None  # nobody known yet
    assert clustering.assign(state, voice(1), 2.0) == "S0"
    before = state.centroids[0].copy()
    assert clustering.assign(state, voice(9), 0.4) == "S0"  # closest, even if far
    np.testing.assert_array_equal(state.centroids[0], before)
    assert state.counts == [1]


def test_degenerate_embeddings_are_not_labelled() -> None:
    clustering = OnlineClustering()
    state = ClusterState()
    assert clustering.assign(state, np.zeros(8), 2.0) is None
    assert clustering.assign(state, np.full(8, np.nan), 2.0) is None
    clustering.assign(state, voice(1, 8), 2.0)
    with pytest.raises(ValueError):
        clustering.assign(state, voice(1, 4), 2.0)


def test_state_round_trips_through_bytes() -> None:
    clustering = OnlineClustering()
    state = ClusterState()
    for i in range(3):
        clustering.assign(state, voice(i), 2.0)
    again = ClusterState.from_bytes(state.to_bytes())
    assert again.counts == state.counts
    for x, y in zip(again.centroids, state.centroids, strict=True):
        np.testing.assert_array_equal(x, y)
    assert ClusterState.from_bytes(None).centroids == []
    with pytest.raises(ValueError):
        ClusterState.from_bytes(b"\x91\x01")
