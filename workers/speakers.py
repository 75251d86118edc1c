"""Online speaker clustering per session: the pure core of speaker labels.

Each final segment of a ``diarize=true`` session gets one speaker embedding (a vector from a
speaker-embedding model). :class:`OnlineClustering` compares it by cosine similarity with the
running centroids of the speakers seen so far in the session: the closest one above ``threshold``
takes the segment (and its centroid moves towards the new embedding); otherwise a new speaker is
opened, unless ``max_speakers`` are open already, in which case the closest one takes it.
Segments shorter than ``min_duration_s`` give unreliable embeddings: they are labelled with the
closest existing speaker without moving its centroid (or not at all, before the first speaker).

The state is a few hundred bytes per speaker (:meth:`ClusterState.to_bytes`), kept in Redis per
session, so any ASR worker can label the next segment. Limits: one speaker per segment (an
utterance with two voices gets the dominant one), labels depend on the order in which segments
are labelled, and nothing is ever relabelled afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack
import numpy as np

STATE_VERSION = 1


@dataclass(frozen=True)
class ClusterConfig:
    threshold: float = 0.5
    """Cosine similarity to a centroid above which a segment belongs to that speaker."""
    max_speakers: int = 8
    min_duration_s: float = 1.0


@dataclass
class ClusterState:
    centroids: list[np.ndarray] = field(default_factory=list)
    """Unit-norm running mean direction of each speaker's embeddings."""
    counts: list[int] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        return msgpack.packb(
            {
                "v": STATE_VERSION,
                "c": [c.astype("<f4").tobytes() for c in self.centroids],
                "n": self.counts,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes | None) -> ClusterState:
        if not data:
            return cls()
        obj = msgpack.unpackb(data)
        if not isinstance(obj, dict) or obj.get("v") != STATE_VERSION:
            raise ValueError("not a speaker clustering state")
        centroids = [np.frombuffer(c, dtype="<f4").astype(np.float32) for c in obj["c"]]
        counts = [int(n) for n in obj["n"]]
        if len(centroids) != len(counts):
            raise ValueError("corrupt speaker clustering state")
        return cls(centroids, counts)


def speaker_label(index: int) -> str:
    return f"S{index}"


def _unit(v: np.ndarray) -> np.ndarray | None:
    vec = np.asarray(v, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(vec))
    if not np.isfinite(norm) or norm == 0.0:
        return None
    return vec / norm


class OnlineClustering:
    """Assigns embeddings to speakers; see the module docstring."""

    def __init__(self, config: ClusterConfig | None = None) -> None:
        self.cfg = config or ClusterConfig()

    def assign(self, state: ClusterState, embedding: np.ndarray, duration_s: float) -> str | None:
        """Label one segment, updating ``state`` in place; ``None`` when it cannot be told."""
        vec = _unit(embedding)
        if vec is None:
            return None
        if state.centroids and len(state.centroids[0]) != len(vec):
            raise ValueError("embedding size differs from the session's speakers")
        sims = [float(np.dot(vec, c)) for c in state.centroids]
        best = int(np.argmax(sims)) if sims else -1
        if duration_s < self.cfg.min_duration_s:
            return speaker_label(best) if best >= 0 else None
        if best >= 0 and (
            sims[best] >= self.cfg.threshold or len(state.centroids) >= self.cfg.max_speakers
        ):
            n = state.counts[best]
            merged = _unit(state.centroids[best] * n + vec)
            if merged is not None:
                state.centroids[best] = merged.astype(np.float32)
            state.counts[best] = n + 1
            return speaker_label(best)
        state.centroids.append(vec.astype(np.float32))
        state.counts.append(1)
        return speaker_label(len(state.centroids) - 1)
