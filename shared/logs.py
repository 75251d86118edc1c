"""Logging set-up, done once in each entry point."""

from __future__ import annotations

import logging


def configure(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
    )
    # The model libraries are chatty at INFO.
    logging.getLogger("faster_whisper").setLevel(max(logging.WARNING, logging.getLevelName(level)))
