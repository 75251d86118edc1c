"""The native protocol of ``/v1/listen`` (pure parsing; see docs/protocol.md)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.protocol import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_UNSUPPORTED,
    ProtocolError,
    load_object,
    translation_task,
)
from shared.languages import UnknownLanguage, normalize_language
from shared.logs import clip

PROTOCOL_VERSION = 1
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class NativeOptions:
    language: str | None = None
    sample_rate: int = 16000
    encoding: str = "linear16"
    interim_results: bool = True
    endpointing: int | None = None
    """Milliseconds of silence that end an utterance; ``None`` = the server default."""
    vad_events: bool = False
    diarize: bool = False
    """Label finals (and their words) with ``speaker``."""
    translate: str | None = None
    """``en``: each final also carries its English translation (the only target Whisper has)."""
    token: str | None = None
    session_id: str | None = None
    """Resume this session (with ``last_segment``: the last final the client has)."""
    last_segment: int = -1

    def public(self, default_endpointing: int) -> dict[str, Any]:
        """The effective settings, as the ``session`` message reports them."""
        return {
            "language": self.language,
            "sample_rate": self.sample_rate,
            "encoding": self.encoding,
            "interim_results": self.interim_results,
            "endpointing": self.endpointing or default_endpointing,
            "vad_events": self.vad_events,
            "diarize": self.diarize,
            "translate": self.translate,
        }


@dataclass(frozen=True)
class Finalize:
    """End the current utterance now and return its final."""


@dataclass(frozen=True)
class KeepAlive:
    """The client is there, just quiet."""


@dataclass(frozen=True)
class NativeEof:
    """Flush, send the last finals and ``closed``, close."""


@dataclass(frozen=True)
class NativeConfig:
    values: dict[str, Any]


NativeMessage = Finalize | KeepAlive | NativeEof | NativeConfig


def _bad(name: str, why: str) -> ProtocolError:
    return ProtocolError("invalid_parameter", f"'{name}' {why}", CLOSE_INVALID_PAYLOAD)


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise _bad(name, "must be true or false")


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        raise _bad(name, "must be an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _bad(name, "must be an integer") from None
    if isinstance(value, float) and number != value:
        raise _bad(name, "must be an integer")
    if not lo <= number <= hi:
        raise _bad(name, f"must be between {lo} and {hi}")
    return number


def _language(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _bad(name, "must be a string")
    try:
        return normalize_language(value)
    except UnknownLanguage as exc:
        raise _bad(name, str(exc)) from exc


def _translate(name: str, value: Any) -> str | None:
    """A translation target: ``en`` (or ``english``); ``false``, empty or null for none."""
    if value is None or (isinstance(value, str) and value.lower() in ("", "false", "none", "0")):
        return None
    if value is False:
        return None
    target = _language(name, value)
    translation_task(target, None, name)  # only English: unsupported_translation_target
    return target


def _encoding(name: str, value: Any) -> str:
    if value != "linear16":
        raise ProtocolError(
            "unsupported_encoding",
            f"encoding {clip(value)} is not supported (use linear16: PCM16 LE mono)",
            CLOSE_UNSUPPORTED,
        )
    return "linear16"


def _session_id(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _SESSION_ID.match(value):
        raise _bad(name, "is not a session id")
    return value


def parse_options(
    values: Mapping[str, Any], base: NativeOptions | None = None, min_endpointing: int = 100
) -> NativeOptions:
    """Query parameters or config-frame fields over ``base``; unknown names are ignored."""

    def endpointing(name: str, value: Any) -> int | None:
        if value in (None, "default"):
            return None
        return _int(name, value, min_endpointing, 10_000)

    parsers: dict[str, Any] = {
        "language": _language,
        "sample_rate": lambda n, v: _int(n, v, 8000, 192_000),
        "encoding": _encoding,
        "interim_results": _bool,
        "vad_events": _bool,
        "diarize": _bool,
        "translate": _translate,
        "endpointing": endpointing,
        "token": lambda n, v: None if v is None else str(v),
        "session_id": _session_id,
        "last_segment": lambda n, v: _int(n, v, -1, 10**9),
    }
    changes = {name: parsers[name](name, v) for name, v in values.items() if name in parsers}
    return dataclasses.replace(base or NativeOptions(), **changes)


def parse_native_frame(text: str) -> NativeMessage:
    obj = load_object(text)
    kind = obj.get("type")
    if kind == "finalize":
        return Finalize()
    if kind == "keepalive":
        return KeepAlive()
    if kind in ("eof", "close_stream"):
        return NativeEof()
    if kind == "config":
        data = obj.get("data", obj)
        if not isinstance(data, dict):
            raise ProtocolError("invalid_config", "'data' must be an object", CLOSE_INVALID_PAYLOAD)
        return NativeConfig({k: v for k, v in data.items() if k != "type"})
    raise ProtocolError(
        "unsupported_message",
        f"unknown message type {clip(kind)} (expected config, finalize, keepalive or eof)",
        CLOSE_UNSUPPORTED,
    )
