"""A mid-turn segment's continuation context (workers/continuation.py): which of the previous
segment's words make the prefix, the audio in front, what is kept of a decode, and when a decode
counts as finished. Pure: no model, no Redis."""

from __future__ import annotations

from shared.audio import SAMPLE_RATE
from shared.schemas import Word
from workers.continuation import (
    GAP_S,
    WORD_LEAD_S,
    Previous,
    after_prefix,
    context_for_next,
    finished,
    prefix_text,
    repeats,
    tail_samples,
)


def w(word: str, start: float, end: float | None = None) -> Word:
    return Word(word=word, start=start, end=start + 0.3 if end is None else end, probability=0.9)


WORDS = (w(" The", 0.2), w(" cut", 0.6), w(" on", 1.0), w(" his", 4.0), w(" chest.", 4.5))
END_S = 5.0


def previous(seconds: float, index: int = 3) -> Previous:
    """Segment ``index`` ending at 5 s, its tail kept as the VAD worker keeps it; each sample's
    value is its index in the session's audio, so the test can see where the context starts."""
    n = tail_samples(seconds)
    first = int(END_S * SAMPLE_RATE) - n
    samples = [(first + i) % 30000 for i in range(n)]
    tail = b"".join(x.to_bytes(2, "little", signed=True) for x in samples)
    return Previous(index=index, end_s=END_S, tail=tail, words=WORDS)


def first_sample(pcm: bytes) -> int:
    return int.from_bytes(pcm[:2], "little", signed=True)


def test_the_context_is_the_previous_words_in_its_last_seconds_and_the_audio_from_before_them() -> (
    None
):
    ctx = context_for_next(previous(2.0), 4, 5.3, 2.0)
    assert ctx is not None
    assert prefix_text(ctx.words) == "his chest."
    assert ctx.start_s == round(4.0 - WORD_LEAD_S, 3)
    assert first_sample(ctx.pcm) == int((4.0 - WORD_LEAD_S) * SAMPLE_RATE) % 30000
    assert len(ctx.pcm) // 2 == int(round((END_S - ctx.start_s) * SAMPLE_RATE))


def test_a_word_before_the_kept_audio_is_not_in_the_prefix() -> None:
    ctx = context_for_next(previous(10.0), 4, 5.3, 10.0)  # all of it, if the audio is there
    assert ctx is not None and prefix_text(ctx.words) == "The cut on his chest."
    ctx = context_for_next(previous(0.8), 4, 5.3, 0.8)  # 0.8 s: only "chest." starts in it
    assert ctx is not None and prefix_text(ctx.words) == "chest."
    ctx = context_for_next(previous(1.0), 4, 5.3, 3.0)  # 3 s asked, 1.1 s of audio kept
    assert ctx is not None and prefix_text(ctx.words) == "his chest."


def test_no_context_unless_the_segment_continues_the_previous_one() -> None:
    assert context_for_next(None, 4, 5.3, 3.0) is None
    assert context_for_next(previous(3.0), 5, 5.3, 3.0) is None  # not the next segment
    assert context_for_next(previous(3.0), 4, END_S + GAP_S + 0.01, 3.0) is None  # a new turn
    assert context_for_next(previous(3.0), 4, 5.3, 0.0) is None  # no context asked
    assert context_for_next(previous(0.2), 4, 5.3, 0.2) is None  # no word starts in it


def test_words_after_the_prefix_are_kept_and_a_decode_that_changed_it_is_not_trusted() -> None:
    prefix = [w(" his", 4.0), w(" chest.", 4.5)]
    got = [w(" his", 0.1), w(" chest.", 0.6), w(" The", 1.5), w(" ache", 1.9)]
    assert [x.word for x in after_prefix(got, prefix) or []] == [" The", " ache"]
    assert after_prefix([w(" hiss", 0.1), w(" chest.", 0.6), w(" The", 1.5)], prefix) is None
    assert after_prefix(got[:2], prefix) == []


def test_a_continuation_said_twice_is_a_loop() -> None:
    said = [w(x, i * 0.4) for i, x in enumerate(" On this morning the buffaloes were".split())]
    assert not repeats(said)
    assert repeats(said + said)  # the decoder said it again
    assert repeats([w(x, 0.0) for x in "a F-E-G F-E-G F-E-G F-E-G F-E-G F-E-G F-E-G F-E-G".split()])
    assert not repeats([w(x, 0.0) for x in "round and round and".split()])  # short runs are speech


def test_a_decode_is_finished_only_when_it_reaches_the_end_of_its_audio() -> None:
    assert finished([w(" ache", 1.9, 2.3)], 2.5, 1.2, 2.0)
    assert not finished([w(" ache", 1.9, 2.3)], 9.0, 1.2, 2.0)  # stopped early: alone instead
    assert not finished([], 2.5, 1.2, 2.0)
    assert not finished([w(" ache", 0.0, 2.4)], 2.5, 1.2, 2.0)  # one word for seconds
