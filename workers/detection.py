"""Which language to transcribe an utterance in, when the session did not say (pure).

A multilingual Whisper model gives, for each utterance, a probability for every language (from
the encoder output of its first 30 s). Taking the most probable one for every utterance makes
short utterances flip: one or two words ("OK", "ja", a name) are often given to a neighbouring
language or to English with a middling probability. So a session's language is *sticky*:

- the first utterance of a session takes the most probable language;
- a later one keeps the session's language (the language of the session's latest final) unless
  another language is detected with at least ``switch_probability``
  (``ASR_LANGUAGE_SWITCH_PROBABILITY``, 0.7) — then it switches, and the session's language
  with it. Real code-switching (a German speaker who goes on in English) is detected with
  probabilities near 1 on an utterance of a few seconds, so it switches at once.

Each final carries the language it was transcribed in and that language's probability for that
utterance (``language``, ``language_probability``), so a client sees when the rule kept a
language the model itself found less likely.
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_SWITCH_PROBABILITY = 0.7


def choose_language(
    probabilities: Sequence[tuple[str, float]],
    session_language: str | None,
    switch_probability: float = DEFAULT_SWITCH_PROBABILITY,
) -> tuple[str, float]:
    """The language to transcribe in and its probability for this utterance.

    ``probabilities``: ``(code, probability)`` for the candidate languages, most probable first
    (faster-whisper's ``detect_language`` order); ``session_language``: the language of the
    session's latest final, or None for the first one."""
    if not probabilities:
        return session_language or "en", 0.0
    top, top_p = probabilities[0]
    if session_language is None or top == session_language or top_p >= switch_probability:
        return top, top_p
    kept = next((p for code, p in probabilities if code == session_language), 0.0)
    return session_language, kept
