"""A mid-turn segment decoded as the continuation of the one before it (pure).

When smart endpointing commits at a pause and the speaker goes on, the next segment is a cut in
the middle of a turn: decoded alone, it has no sentence before it, and tiny models are weakest
on short audio (``python -m bench.splits``: the cuts of the default rule cost 1.5 points of WER on
the corpus' 72 LibriSpeech files against the same files decoded whole). Decoded as a
*continuation* (``ASR_CONTINUATION``), the ASR worker puts the last 3 s (:data:`CONTEXT_S`) of the previous
segment's audio in front of it, with that audio's final words (what the client already has) as
Whisper's forced prefix, and keeps only the words after them.

The VAD worker keeps the previous segment (:class:`Previous`: its audio's tail and the words of
its committed speculative final) and puts the context on the next segment's jobs
(:func:`context_for_next`); the ASR worker decodes it (workers/asr.py) and falls back to the
segment alone when the decode does not begin with the prefix or stops short of the end of the
audio (:func:`after_prefix`, :func:`finished`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.audio import SAMPLE_RATE
from shared.schemas import Word

CONTEXT_S = 3.0
"""How much of the previous segment goes in front (the corpus' WER was the same with 5, 8 and
30 s, and much worse with 1–1.5 s: ``python -m bench.splits --left-s``)."""
GAP_S = 1.0
"""A segment that starts at most this long after the previous one ended continues its turn
(the pause of an early commit the speaker went on from); a longer pause starts afresh."""
WORD_LEAD_S = 0.1
"""The context's audio starts this long before its first prefix word."""
BYTES_PER_SAMPLE = 2


@dataclass(frozen=True)
class Previous:
    """The session's last segment, as the VAD worker keeps it for the next one."""

    index: int
    end_s: float
    """Where the segment's audio ends (session seconds)."""
    tail: bytes
    """The segment's last seconds of audio (PCM16), ending at ``end_s``."""
    words: tuple[Word, ...]
    """Its final's words (session seconds)."""

    @property
    def tail_start_s(self) -> float:
        return self.end_s - len(self.tail) / BYTES_PER_SAMPLE / SAMPLE_RATE


@dataclass(frozen=True)
class Context:
    pcm: bytes
    start_s: float
    words: list[Word]


def tail_samples(seconds: float = CONTEXT_S) -> int:
    """How much of a segment's end the VAD worker keeps for a context of ``seconds``."""
    return max(int((seconds + WORD_LEAD_S) * SAMPLE_RATE), 1)


def context_for_next(
    previous: Previous | None, index: int, start_s: float, seconds: float = CONTEXT_S
) -> Context | None:
    """The context of segment ``index`` starting at ``start_s``: the previous segment's words
    that start in its last ``seconds`` (and lie in its kept audio), and its audio from just
    before the first of them; ``None`` when the segment does not continue the previous one."""
    if previous is None or seconds <= 0 or index != previous.index + 1:
        return None
    if start_s - previous.end_s > GAP_S:
        return None
    earliest = max(previous.end_s - seconds, previous.tail_start_s + WORD_LEAD_S)
    words = [w for w in previous.words if w.start >= earliest and w.end <= previous.end_s]
    if not words:
        return None
    begin = words[0].start - WORD_LEAD_S
    skip = int(round((begin - previous.tail_start_s) * SAMPLE_RATE)) * BYTES_PER_SAMPLE
    return Context(previous.tail[max(skip, 0) :], round(begin, 3), words)


def prefix_text(words: list[Word]) -> str:
    return " ".join(w.word.strip() for w in words)


def after_prefix(got: list[Any], prefix: list[Word]) -> list[Any] | None:
    """The decoded words after the forced prefix, or ``None`` if the decode does not begin
    with the prefix's words (then the continuation is not trusted)."""
    n = len(prefix)
    if [w.word.strip() for w in got[:n]] != [w.word.strip() for w in prefix]:
        return None
    return got[n:]


def repeats(words: list[Any], run: int = 4) -> bool:
    """The words hold a run of at least ``run`` words said twice in a row (a decoder loop:
    tiny.en, after a prefix, sometimes says the continuation twice)."""
    seq = [w.word.strip().lower().strip(".,?!") for w in words]
    for k in range(run, len(seq) // 2 + 1):
        for i in range(len(seq) - 2 * k + 1):
            if seq[i : i + k] == seq[i + k : i + 2 * k]:
                return True
    return False


def finished(words: list[Any], seconds: float, gap_s: float, max_word_s: float) -> bool:
    """The decode reached the end of its ``seconds`` of audio (the ASR worker's early-stop
    test: tiny.en may stop right after a prefix): its last word ends less than ``gap_s`` before
    the end, and no word lasts longer than ``max_word_s``."""
    if not words or any(w.end - w.start > max_word_s for w in words):
        return False
    return bool(seconds - words[-1].end <= gap_s)
