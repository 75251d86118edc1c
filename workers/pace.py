"""Is a session's audio arriving faster than real time? (a file, a replay, a client catching up)

Such audio has no listener waiting on each word, so the VAD worker cuts it the way offline
faster-whisper does (long segments, joined across short pauses, no interim results or speculative
finals): fewer, fuller Whisper windows, which is what throughput and accuracy want. Pure logic:
fed the gateway's receive time of each chunk and its length.
"""

from __future__ import annotations

from collections import deque

FAST_RATE = 1.5
"""Audio seconds per wall second above which a session counts as faster than real time."""

WINDOW_S = 3.0
"""Judged over the last this many seconds of audio (a network hiccup's burst is shorter)."""


class PaceMeter:
    """``add(received_at, seconds)`` per chunk; :attr:`fast` says how the recent audio came."""

    def __init__(self, rate: float = FAST_RATE, window_s: float = WINDOW_S) -> None:
        self._rate = rate
        self._window = window_s
        self._audio = 0.0
        self._marks: deque[tuple[float, float]] = deque()  # (received_at, audio before chunk)
        self.fast = False

    def add(self, received_at: float, seconds: float) -> bool:
        """Record a chunk; return (and keep in :attr:`fast`) whether the last ``window_s`` of
        audio came at ``rate`` × real time or faster. Chunks without a receive time change
        nothing."""
        if received_at <= 0:
            return self.fast
        self._marks.append((received_at, self._audio))
        self._audio += seconds
        # keep one mark at or before the start of the window
        while len(self._marks) > 1 and self._audio - self._marks[1][1] >= self._window:
            self._marks.popleft()
        first_at, first_audio = self._marks[0]
        audio = self._audio - first_audio
        if audio < self._window:
            return self.fast  # not enough audio yet to judge
        wall = received_at - first_at
        self.fast = audio >= self._rate * max(wall, 1e-6)
        return self.fast
