"""Key terms of a session (names, jargon) that the ASR decodes with as faster-whisper ``hotwords``.

They come from Deepgram's ``keyterm`` parameters and ``Configure`` message, and from an OpenAI
realtime session's transcription ``prompt``; they travel on ``session_start`` (and a
``keyterms`` control entry mid-stream) to every job of the session. Bounded: Whisper's decoder
has 448 tokens for prompt and output together, and faster-whisper gives hotwords up to half of
them; ``MAX_KEYTERMS_CHARS`` (~110 tokens of English) leaves room for the previous text's prompt
(``PROMPT_MAX_CHARS``) and the transcript itself. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_KEYTERMS = 100
"""Terms a session may carry."""

MAX_KEYTERMS_CHARS = 500
"""Characters of all terms together (as the ``hotwords`` string: joined with ``", "``)."""


class KeytermError(ValueError):
    """Key terms beyond the bounds (or not strings)."""


def check_keyterms(terms: Sequence[object]) -> list[str]:
    """The terms, stripped, empty ones dropped; :class:`KeytermError` beyond the bounds."""
    if len(terms) > MAX_KEYTERMS:
        raise KeytermError(f"{len(terms)} key terms exceed the limit of {MAX_KEYTERMS}")
    if not all(isinstance(t, str) for t in terms):
        raise KeytermError("key terms must be strings")
    clean = [t.strip() for t in terms if isinstance(t, str) and t.strip()]
    length = len(", ".join(clean))
    if length > MAX_KEYTERMS_CHARS:
        raise KeytermError(
            f"key terms of {length} characters exceed the limit of {MAX_KEYTERMS_CHARS}"
        )
    return clean


def hotwords(terms: Sequence[str]) -> str | None:
    """faster-whisper's ``hotwords`` for the terms (None for none)."""
    return ", ".join(terms) or None
