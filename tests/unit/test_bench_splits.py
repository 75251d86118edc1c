"""The continuation decode's pure parts (bench/splits.py): which of the previous cut's words make
the prefix, what is kept after it, and when a decode counts as finished. No model."""

from __future__ import annotations

from bench.splits import after_prefix, finished, prefix_words
from shared.schemas import Word


def w(word: str, start: float, end: float | None = None) -> Word:
    return Word(word=word, start=start, end=start + 0.3 if end is None else end, probability=0.9)


PREVIOUS = [w(" The", 0.2), w(" cut", 0.6), w(" on", 1.0), w(" his", 4.0), w(" chest.", 4.5)]


def test_the_prefix_is_the_previous_words_that_start_in_the_left_context() -> None:
    assert [x.word for x in prefix_words(PREVIOUS, 5.2, 2.0)] == [" his", " chest."]
    assert [x.word for x in prefix_words(PREVIOUS, 5.2, 10.0)] == [x.word for x in PREVIOUS]
    assert prefix_words(PREVIOUS, 5.2, 0.5) == []


def test_words_after_the_prefix_are_kept_and_a_decode_that_changed_it_is_not_trusted() -> None:
    prefix = prefix_words(PREVIOUS, 5.2, 2.0)
    got = [w(" his", 0.1), w(" chest.", 0.6), w(" The", 1.5), w(" ache", 1.9)]
    assert [x.word for x in after_prefix(got, prefix) or []] == [" The", " ache"]
    assert after_prefix([w(" hiss", 0.1), w(" chest.", 0.6), w(" The", 1.5)], prefix) is None
    assert after_prefix(got[:2], prefix) == []


def test_a_decode_is_finished_only_when_it_reaches_the_end_of_its_audio() -> None:
    assert finished([w(" ache", 1.9, 2.3)], 2.5)
    assert not finished([w(" ache", 1.9, 2.3)], 9.0)  # stopped early: the cut alone instead
    assert not finished([], 2.5)
    assert not finished([w(" ache", 0.0, 2.4)], 2.5)  # one word over seconds: a hallucination
