"""Logging set-up, done once in each entry point."""

from __future__ import annotations

import logging
import re

ECHO_CHARS = 64
"""Client input quoted back in an error frame or a log line is cut to this many characters."""

_TOKEN = re.compile(r"(?i)([?&](?:token|api_key|key)=)[^&\s\"]*")


def clip(value: object, limit: int = ECHO_CHARS) -> str:
    """``repr`` of client input, at most ``limit`` characters plus an ellipsis: a 900 KB
    ``type`` is not echoed whole to the client or into a log line."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def redact(text: str) -> str:
    """``?token=…`` values (credentials in URLs) replaced by ``***``."""
    return _TOKEN.sub(r"\1***", text)


class RedactTokens(logging.Filter):
    """On ``uvicorn.access`` (and anything else that logs request URLs): uvicorn writes the
    query string, and browsers put their credential in ``?token=``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        record.msg = redact(record.msg) if isinstance(record.msg, str) else record.msg
        return True


def configure(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
    )
    # The model libraries are chatty at INFO.
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
    logging.getLogger("faster_whisper").setLevel(max(logging.WARNING, logging.getLevelName(level)))
