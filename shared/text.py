"""Text units for scripts written without spaces between words (pure).

Chinese, Japanese, Thai, Lao, Khmer and Burmese do not separate words with spaces, so "split on
whitespace" gives one "word" per sentence there. Whatever compares or wraps text by words (the
stable prefix of partials, caption wrapping, the character error rate of benchmarks) uses
:func:`units` instead: each character of those scripts is a unit of its own, every other run of
non-space characters is a unit, and each unit keeps the whitespace before it, so joining units
gives the text back exactly.
"""

from __future__ import annotations

import re

UNSPACED = (
    "\u2e80-\u2fdf"  # CJK radicals, Kangxi radicals
    "\u3000-\u303f"  # CJK symbols and punctuation (。、「」)
    "\u3040-\u30ff"  # hiragana, katakana
    "\u3100-\u312f\u31a0-\u31ff"  # bopomofo, katakana extensions
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    "\uff00-\uffef"  # full-width forms (，！？)
    "\u0e00-\u0e7f\u0e80-\u0eff"  # Thai, Lao
    "\u1000-\u109f\u1780-\u17ff"  # Myanmar, Khmer
)
_UNIT = re.compile(rf"\s*(?:[{UNSPACED}]|[^\s{UNSPACED}]+)")
_UNSPACED = re.compile(rf"[{UNSPACED}]")

UNSPACED_LANGUAGES = frozenset({"zh", "yue", "ja", "th", "lo", "km", "my"})
"""Whisper's languages written without spaces between words."""

CER_LANGUAGES = UNSPACED_LANGUAGES | {"ko"}
"""Languages scored by character error rate (Korean is spaced, but by convention scored by
characters too: its spacing varies)."""


def units(text: str) -> list[str]:
    """The text's units, each with the whitespace before it: ``"".join(units(t)) == t`` up to
    trailing whitespace."""
    return _UNIT.findall(text)


def is_unspaced(text: str) -> bool:
    """Most of the text's letters are of a script written without spaces."""
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and 2 * sum(bool(_UNSPACED.match(c)) for c in letters) > len(letters)
