"""Transcript output formats: plain text, JSON, SubRip (srt) and WebVTT (pure functions)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, int(round(seconds * 1000)))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_txt(finals: Sequence[dict[str, Any]]) -> str:
    return "\n".join(f["text"].strip() for f in finals if f.get("text", "").strip()) + "\n"


def to_json(finals: Sequence[dict[str, Any]], **extra: Any) -> str:
    text = " ".join(f["text"].strip() for f in finals if f.get("text", "").strip())
    return json.dumps({"text": text, "segments": list(finals), **extra}, indent=2) + "\n"


def to_srt(finals: Sequence[dict[str, Any]]) -> str:
    blocks = []
    for i, f in enumerate((f for f in finals if f.get("text", "").strip()), start=1):
        span = f"{_clock(f['start'], ',')} --> {_clock(f['end'], ',')}"
        blocks.append(f"{i}\n{span}\n{f['text'].strip()}\n")
    return "\n".join(blocks)


def to_vtt(finals: Sequence[dict[str, Any]]) -> str:
    blocks = ["WEBVTT\n"]
    for f in finals:
        if f.get("text", "").strip():
            span = f"{_clock(f['start'], '.')} --> {_clock(f['end'], '.')}"
            blocks.append(f"{span}\n{f['text'].strip()}\n")
    return "\n".join(blocks)


FORMATS = {"txt": to_txt, "json": to_json, "srt": to_srt, "vtt": to_vtt}


def render(fmt: str, finals: Sequence[dict[str, Any]]) -> str:
    return FORMATS[fmt](finals)
