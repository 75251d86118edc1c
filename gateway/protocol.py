"""Parsing what clients send on the predecessor-compatible endpoint (pure: no I/O).

The wire format is the VoiceStreamAI one that the predecessor's browser page and Locust test
speak; see docs/protocol.md. Errors carry the close code the connection must end with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.capabilities import TRANSCRIBE, TRANSLATE
from shared.languages import LANGUAGES, UnknownLanguage, normalize_language
from shared.logs import clip

CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_REPLACED = 4409
"""Another socket resumed this session (``session_replaced``): do not reconnect from here."""


class ProtocolError(Exception):
    """A client message that ends the session with an error frame and ``close_code``."""

    def __init__(self, code: str, message: str, close_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message if len(message) <= 300 else message[:300] + "…"  # a safety net
        self.close_code = close_code

    def frame(self) -> dict[str, str]:
        return {"type": "error", "code": self.code, "message": self.message}


def session_replaced(session_id: str) -> ProtocolError:
    """The error of a socket whose session another socket (the same key's) resumed."""
    return ProtocolError(
        "session_replaced",
        f"session {session_id} was resumed on another connection; this one is closed",
        CLOSE_REPLACED,
    )


@dataclass(frozen=True)
class ClientConfig:
    """What a config frame sets. ``sample_rate`` is what the client *said*; on the legacy
    endpoint the audio is 16 kHz whatever it says (the predecessor's page sends its
    AudioContext rate but downsamples itself)."""

    sample_rate: int = 16000
    channels: int = 1
    language: str | None = None
    language_set: bool = False
    """The frame had a ``language`` field (null included): it wins over the query's ``lang``."""
    chunk_length_seconds: float | None = None
    chunk_offset_seconds: float | None = None


@dataclass(frozen=True)
class Eof:
    """``{"type": "eof"}``: flush the buffered speech, send the last finals, close."""


ClientMessage = ClientConfig | Eof


def _number(data: dict[str, Any], key: str, *, integer: bool = False) -> float | int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError("invalid_config", f"'{key}' must be a number", CLOSE_INVALID_PAYLOAD)
    if integer and int(value) != value:
        raise ProtocolError("invalid_config", f"'{key}' must be an integer", CLOSE_INVALID_PAYLOAD)
    return int(value) if integer else float(value)


def parse_config(data: Any) -> ClientConfig:
    if not isinstance(data, dict):
        raise ProtocolError("invalid_config", "'data' must be an object", CLOSE_INVALID_PAYLOAD)
    rate = _number(data, "sampleRate", integer=True)
    if rate is not None and not 8000 <= rate <= 192_000:
        raise ProtocolError(
            "invalid_config", "'sampleRate' must be between 8000 and 192000", CLOSE_INVALID_PAYLOAD
        )
    channels = _number(data, "channels", integer=True)
    if channels is not None and not 1 <= channels <= 8:
        raise ProtocolError("invalid_config", "'channels' must be 1 to 8", CLOSE_INVALID_PAYLOAD)
    language = data.get("language")
    if language is not None and not isinstance(language, str):
        raise ProtocolError(
            "invalid_config", "'language' must be a string or null", CLOSE_INVALID_PAYLOAD
        )
    try:
        code = normalize_language(language)
    except UnknownLanguage as exc:
        raise ProtocolError("invalid_config", str(exc), CLOSE_INVALID_PAYLOAD) from exc
    args = data.get("processing_args")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ProtocolError(
            "invalid_config", "'processing_args' must be an object", CLOSE_INVALID_PAYLOAD
        )
    strategy = data.get("processing_strategy")
    if strategy is not None and not isinstance(strategy, str):
        raise ProtocolError(
            "invalid_config", "'processing_strategy' must be a string", CLOSE_INVALID_PAYLOAD
        )
    return ClientConfig(
        sample_rate=int(rate or 16000),
        channels=int(channels or 1),
        language=code,
        language_set="language" in data,
        chunk_length_seconds=_number(args, "chunk_length_seconds"),
        chunk_offset_seconds=_number(args, "chunk_offset_seconds"),
    )


@dataclass(frozen=True)
class LegacyQuery:
    """What the query of ``/`` and ``/ws`` asks for (the predecessor's low-latency clients:
    ``?lang=<code or name or null>`` and ``dest_lang``). ``language`` is an ISO code, or None
    for detection (``lang=null``) or when ``lang`` is absent."""

    language: str | None = None
    task: str = TRANSCRIBE
    """``translate`` when ``dest_lang`` is English and differs from ``lang``."""


def _query_language(name: str, value: str) -> str | None:
    try:
        return normalize_language(value)
    except UnknownLanguage as exc:
        raise ProtocolError("invalid_parameter", f"'{name}': {exc}", CLOSE_INVALID_PAYLOAD) from exc


def translation_task(target: str | None, source: str | None, name: str) -> str:
    """The task of a session asking for translation into ``target`` (an ISO code; ``None`` for
    none) of speech in ``source``: transcription when there is no target or it is the source,
    translation into English (the only target Whisper translates into), and
    ``unsupported_translation_target`` for any other (close 1003)."""
    if target is None or target == source:
        return TRANSCRIBE
    if target == "en":
        return TRANSLATE
    raise ProtocolError(
        "unsupported_translation_target",
        f"'{name}': translation into {clip(target)} ({LANGUAGES.get(target, target)}) is not "
        "available: Whisper translates only into English (en)",
        CLOSE_UNSUPPORTED,
    )


def parse_legacy_query(params: Mapping[str, str]) -> LegacyQuery:
    """``lang`` and ``dest_lang`` of the low-latency version's clients (other names are
    ignored: the page's address may carry anything). ``dest_lang`` absent or equal to ``lang``
    is transcription; ``dest_lang=en`` with another ``lang`` is translation into English (the
    only target Whisper translates into); another target is ``unsupported_translation_target``."""
    language = _query_language("lang", params["lang"]) if "lang" in params else None
    if "dest_lang" not in params:
        return LegacyQuery(language)
    dest = _query_language("dest_lang", params["dest_lang"])
    return LegacyQuery(language, translation_task(dest, language, "dest_lang"))


def load_object(text: str) -> dict[str, Any]:
    """A text frame's JSON object, or the error every endpoint gives for anything else."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(
            "invalid_json", f"text frame is not JSON: {exc}", CLOSE_INVALID_PAYLOAD
        ) from exc
    if not isinstance(obj, dict):
        raise ProtocolError(
            "invalid_message", "a text frame must be a JSON object", CLOSE_INVALID_PAYLOAD
        )
    return obj


def parse_text_frame(text: str) -> ClientMessage:
    """One text frame: a config or a control message. Unknown fields are ignored."""
    obj = load_object(text)
    kind = obj.get("type")
    if kind == "config":
        return parse_config(obj.get("data"))
    if kind == "eof":
        return Eof()
    raise ProtocolError(
        "unsupported_message",
        f"unknown message type {clip(kind)} (expected 'config' or 'eof')",
        CLOSE_UNSUPPORTED,
    )
