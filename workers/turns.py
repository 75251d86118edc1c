"""When a pause ends the speaker's turn: the pure end-of-turn rule of ``endpointing=smart``.

A fixed endpoint waits for the same silence after every utterance (``VAD_MIN_SILENCE_MS``). The
smart one also reads the evidence the service has ~150 ms into a pause: the speculative
transcript of the utterance (workers/speculation.py), how long the pause is so far, and how long
the utterance was. Whisper ends a sentence it heard as finished with ``.``, ``?`` or ``!``; a
text that ends without one, or on a word that needs a continuation ("and", "the", "of"), is a
breath in the middle of a sentence. So:

- **fixed** endpointing: the turn ends at ``endpoint_ms`` of silence, whatever was said;
- **smart**: a text that looks finished ends the turn after ``complete_ms`` of pause
  (``short_ms`` if the utterance was shorter than ``short_s``: a short utterance and a long
  sentence call for different pauses); anything else waits for
  ``endpoint_ms``, as fixed endpointing does.

:func:`turn_pause_ms` is the rule; :func:`end_of_turn` applies it to a pause so far. Both are
pure (no clock, no I/O): the VAD worker applies them to what its segmenter and the stored
speculative final say (workers/vad_jobs.py). How the defaults were chosen, on which audio:
docs/vad.md ("End of turn").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TERMINAL = frozenset(".?!")
"""Sentence-final punctuation, as Whisper writes it (an ellipsis is Whisper hearing a sentence
trail off: unfinished)."""
_TRAILING = "\"'”’)]»"
"""Closing quotes and brackets after the punctuation (``He said "no."``)."""

UNFINISHED = frozenset(
    """
    and or but nor because although though while whereas unless until if whether than as
    which whose the a an my your his her its our their every
    of to into onto upon toward towards among between via per
    i we they he she
    """.split()
)
"""Words a sentence hardly ever ends on: conjunctions, articles and possessives, prepositions
that need an object, subject pronouns. Ending on one, even with Whisper's period, means the
speaker paused mid-sentence. (Words that end short answers stay out: "I do.", "Not yet.",
"Thank you.", "Look at this.")"""

_WORD = re.compile(r"[\w']+")


@dataclass(frozen=True)
class TurnConfig:
    smart: bool = True
    """``endpointing=smart``; False: a fixed endpoint of ``endpoint_ms``."""
    endpoint_ms: int = 500
    """Any pause this long ends the turn (the only rule of fixed endpointing)."""
    complete_ms: int = 200
    """A finished-looking text ends the turn after this much pause…"""
    short_ms: int = 450
    """…or this much, for an utterance shorter than ``short_s`` (on the tuning audio, a short
    utterance followed by a pause was more often a heading or a list item the speaker went on
    from than a whole turn: docs/vad.md)."""
    short_s: float = 2.0

    @property
    def earliest_ms(self) -> int:
        """No pause shorter than this ends a turn (the VAD worker looks no sooner)."""
        if not self.smart:
            return self.endpoint_ms
        return min(self.endpoint_ms, self.complete_ms, self.short_ms)


def looks_finished(text: str) -> bool:
    """Whisper's sentence-final punctuation on a last word that can end a sentence."""
    stripped = text.strip().rstrip(_TRAILING)
    if not stripped or stripped[-1] not in TERMINAL or stripped.endswith(("..", "…")):
        return False
    words = _WORD.findall(stripped.lower())
    return bool(words) and words[-1] not in UNFINISHED


def turn_pause_ms(text: str, speech_s: float, cfg: TurnConfig) -> int:
    """The pause after which an utterance of ``speech_s`` seconds transcribed as ``text`` is
    over (see the module docstring)."""
    if not cfg.smart or not looks_finished(text):
        return cfg.endpoint_ms
    early = cfg.short_ms if speech_s < cfg.short_s else cfg.complete_ms
    return min(early, cfg.endpoint_ms)


def end_of_turn(text: str, pause_ms: float, speech_s: float, cfg: TurnConfig) -> bool:
    """Whether the turn is over after ``pause_ms`` of silence."""
    return pause_ms >= turn_pause_ms(text, speech_s, cfg)
