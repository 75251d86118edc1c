"""Word error rate and text normalisation for comparing transcripts with references (pure).

Normalisation is deliberately simple and documented: lower case, hyphens and slashes to spaces,
punctuation removed (apostrophes inside words kept), whitespace collapsed. LibriSpeech references
are upper case without punctuation, so this is enough to compare like with like.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from shared.text import CER_LANGUAGES

_PUNCT = re.compile(r"[^\w\s']", re.UNICODE)
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("-", " ").replace("/", " ").replace("’", "'")
    text = _PUNCT.sub(" ", text)
    text = " ".join(w.strip("'") for w in text.split())
    return _SPACES.sub(" ", text).strip()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


@dataclass(frozen=True)
class WerResult:
    errors: int
    words: int

    @property
    def wer(self) -> float:
        return self.errors / self.words if self.words else 0.0


def wer(pairs: Iterable[tuple[str, str]]) -> WerResult:
    """Corpus-level WER over (reference, hypothesis) pairs, after :func:`normalize`."""
    errors = words = 0
    for ref, hyp in pairs:
        r, h = normalize(ref).split(), normalize(hyp).split()
        errors += edit_distance(r, h)
        words += len(r)
    return WerResult(errors, words)


def cer(pairs: Iterable[tuple[str, str]]) -> WerResult:
    """Corpus-level character error rate over (reference, hypothesis) pairs, after
    :func:`normalize`, spaces removed (for languages scored by characters: Chinese, Japanese,
    Korean, shared/text.py ``CER_LANGUAGES``); ``words`` counts reference characters."""
    errors = chars = 0
    for ref, hyp in pairs:
        r, h = list(normalize(ref).replace(" ", "")), list(normalize(hyp).replace(" ", ""))
        errors += edit_distance(r, h)
        chars += len(r)
    return WerResult(errors, chars)


def error_rate(language: str, pairs: Iterable[tuple[str, str]]) -> WerResult:
    """CER for the languages scored by characters, WER for the others (same normalisation)."""
    return cer(pairs) if language in CER_LANGUAGES else wer(pairs)
