"""Stable prefixes of interim hypotheses: LocalAgreement-2 (pure).

Consecutive partial hypotheses of one utterance are compared word by word (case and punctuation
ignored) — character by character in scripts written without spaces (Chinese, Japanese, Thai …:
:func:`shared.text.units`); the units on which two consecutive hypotheses agree form the stable
prefix, which only ever grows. This is whisper_streaming's ``HypothesisBuffer`` idea applied per segment: what two
successive looks at the same growing audio agree on is very unlikely to change.

The final of a segment is an independent transcription of the whole utterance, so that finals
are identical with interim results on or off; it almost always starts with the stable prefix, and
clients replace the partial text with it. A partial's ``text`` always starts with its
``stable_text`` (:meth:`LocalAgreement.display`).
"""

from __future__ import annotations

import re

from shared.text import units

_STRIP = re.compile(r"[^\w']+", re.UNICODE)


def word_key(word: str) -> str:
    """A word as agreement compares it (case and punctuation ignored)."""
    return _STRIP.sub("", word.lower())


class LocalAgreement:
    def __init__(self) -> None:
        self._previous: list[str] | None = None
        self._stable: list[str] = []

    @property
    def stable_text(self) -> str:
        return "".join(self._stable).strip()

    def display(self, hypothesis: str) -> str:
        """The hypothesis as shown to the client: the stable units, then the hypothesis's own
        units after them, so the part that was promised never flickers."""
        words = units(hypothesis)
        return "".join(self._stable + words[len(self._stable) :]).strip()

    def update(self, hypothesis: str) -> str:
        """Take the next hypothesis of the utterance; return the stable prefix (its units)."""
        words = units(hypothesis)
        if self._previous is not None:
            n = 0
            for a, b in zip(self._previous, words, strict=False):
                if word_key(a) != word_key(b):
                    break
                n += 1
            agreed = words[:n]
            if len(agreed) > len(self._stable) and [
                word_key(w) for w in agreed[: len(self._stable)]
            ] == [word_key(w) for w in self._stable]:
                self._stable = agreed
        self._previous = words
        return self.stable_text
