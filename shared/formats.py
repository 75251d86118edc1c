"""Transcript output formats: plain text, JSON, SubRip (srt) and WebVTT (pure functions).

Subtitles are made of :func:`cues`: a final longer than ``CUE_MAX_S`` (files are cut into
segments of up to 29 s, docs/architecture.md) is split at its words, at sentence ends where it
can, so that no caption stays on screen for half a minute. A caption in a script written without
spaces (Chinese, Japanese, Thai …) is wrapped by characters into lines of at most
``UNSPACED_LINE_CHARS`` (:func:`caption_text`); others stay one line per cue, as players wrap
them at spaces.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shared.text import is_unspaced, units


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, int(round(seconds * 1000)))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


CUE_MAX_S = 7.0
"""The longest caption; a final longer than this is split at its words."""

CUE_MIN_S = 1.0
"""A sentence end splits a caption only once it is this long."""

_SENTENCE_END = (".", "?", "!", "…", "。", "？", "！")

UNSPACED_LINE_CHARS = 16
"""The longest caption line in characters for scripts without spaces (the usual guideline for
Chinese and Japanese subtitles: 13 to 16 full-width characters)."""


def caption_text(text: str, line_chars: int = UNSPACED_LINE_CHARS) -> str:
    """A cue's text as it goes into srt/vtt: text of a script without spaces wrapped by
    characters (at unit boundaries, so a Latin word inside stays whole); other text as it is."""
    text = text.strip()
    if not is_unspaced(text) or len(text) <= line_chars:
        return text
    lines: list[str] = []
    line = ""
    for unit in units(text):
        if line and len(line) + len(unit) > line_chars:
            lines.append(line.strip())
            unit = unit.lstrip()
            line = ""
        line += unit
    if line.strip():
        lines.append(line.strip())
    return "\n".join(lines)


def cues(finals: Sequence[dict[str, Any]], max_s: float = CUE_MAX_S) -> list[dict[str, Any]]:
    """The finals with text, each longer than ``max_s`` split into pieces at word boundaries: after
    a word that ends a sentence (once the piece is ``CUE_MIN_S`` long), or before a word that would
    take it past ``max_s``. A piece is a copy of its final with its own ``start``, ``end``,
    ``text`` and ``words``; finals without word times stay whole."""
    out: list[dict[str, Any]] = []
    for f in finals:
        if not f.get("text", "").strip():
            continue
        words = f.get("words") or []
        if f["end"] - f["start"] <= max_s or not words:
            out.append(dict(f))
            continue
        piece: list[dict[str, Any]] = []
        for w in words:
            if piece and w["end"] - piece[0]["start"] > max_s:
                out.append(_piece(f, piece))
                piece = []
            piece.append(w)
            sentence = w["word"].strip().endswith(_SENTENCE_END)
            if sentence and w["end"] - piece[0]["start"] >= CUE_MIN_S:
                out.append(_piece(f, piece))
                piece = []
        if piece:
            out.append(_piece(f, piece))
    return out


def _piece(final: dict[str, Any], words: list[dict[str, Any]]) -> dict[str, Any]:
    text = "".join(w["word"] for w in words).strip()
    return dict(final, start=words[0]["start"], end=words[-1]["end"], text=text, words=words)


def to_txt(finals: Sequence[dict[str, Any]]) -> str:
    return "\n".join(f["text"].strip() for f in finals if f.get("text", "").strip()) + "\n"


def to_json(finals: Sequence[dict[str, Any]], **extra: Any) -> str:
    text = " ".join(f["text"].strip() for f in finals if f.get("text", "").strip())
    return json.dumps({"text": text, "segments": list(finals), **extra}, indent=2) + "\n"


def to_srt(finals: Sequence[dict[str, Any]]) -> str:
    blocks = []
    for i, f in enumerate(cues(finals), start=1):
        span = f"{_clock(f['start'], ',')} --> {_clock(f['end'], ',')}"
        blocks.append(f"{i}\n{span}\n{caption_text(f['text'])}\n")
    return "\n".join(blocks)


def to_vtt(finals: Sequence[dict[str, Any]]) -> str:
    blocks = ["WEBVTT\n"]
    for f in cues(finals):
        span = f"{_clock(f['start'], '.')} --> {_clock(f['end'], '.')}"
        blocks.append(f"{span}\n{caption_text(f['text'])}\n")
    return "\n".join(blocks)


FORMATS = {"txt": to_txt, "json": to_json, "srt": to_srt, "vtt": to_vtt}


def render(fmt: str, finals: Sequence[dict[str, Any]]) -> str:
    return FORMATS[fmt](finals)
