"""What a VAD worker holds for one session it owns: the segmenter, the VAD stream and where it is.

Its own module so that the worker (vad_worker.py), which owns sessions, and the job writer
(vad_jobs.py), which writes what their segmenters emit, both depend on it and not on each other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from shared.keys import EN_POOL
from shared.schemas import SessionStart
from workers.continuation import Previous
from workers.pace import PaceMeter
from workers.segmenter import Segmenter
from workers.turns import TurnConfig
from workers.vad_backends import VadStream


@dataclass
class OwnedSession:
    start: SessionStart
    entry_id: bytes
    segmenter: Segmenter
    vad: VadStream
    last_id: bytes = b"0-0"
    last_audio_at: float = field(default_factory=time.monotonic)
    last_received_at: float = 0.0
    checkpoint_at: float = 0.0
    segments_since_checkpoint: int = 0
    pace: PaceMeter = field(default_factory=PaceMeter)
    speculated: dict[int, int] = field(default_factory=dict)
    """Segment -> revision of its speculative final job in flight (workers/speculation.py)."""
    seq: int = 0
    """The gateway's sequence number of the last entry processed."""
    bad_entries: int = 0
    """Audio entries of this session that were dead-lettered (odd PCM, undecodable)."""
    turns: TurnConfig = field(default_factory=TurnConfig)
    """The session's endpointing (workers/turns.py)."""
    previous: Previous | None = None
    """The last segment, if its final is known (a committed speculative final): the context of
    the next one, if that continues the turn (workers/continuation.py). Not checkpointed: after
    a takeover the next segment is decoded alone."""

    @property
    def pool(self) -> str:
        """The model pool the gateway routed the session to (an older gateway's: ``en``)."""
        return self.start.pool or EN_POOL
