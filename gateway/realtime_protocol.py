"""OpenAI's Realtime transcription protocol, the client side (pure parsing; docs/protocol.md).

Both shapes are read: the GA one (``session.update`` with ``session.type: "transcription"`` and
``session.audio.input.{format, transcription, turn_detection}``) and the older beta one
(``transcription_session.update`` with ``input_audio_format``, ``input_audio_transcription``,
``turn_detection``). Errors are :class:`RealtimeError`: OpenAI's ``error`` event, after which the
session goes on (only the uplink's limits end it).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any

from gateway.encodings import G711_RATE, InputFormat
from gateway.protocol import CLOSE_INVALID_PAYLOAD, ProtocolError, load_object
from shared.languages import UnknownLanguage, normalize_language
from shared.logs import clip

PCM_RATE = 24_000
"""OpenAI's ``audio/pcm`` (and the beta ``pcm16``) is 24 kHz unless ``rate`` says otherwise."""

FORMATS = {"audio/pcm": "linear16", "audio/pcmu": "mulaw", "audio/pcma": "alaw"}
BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
TURN_TYPES = ("server_vad", "semantic_vad")
SILENCE_MAX_MS = 10_000

CLIENT_EVENTS = (
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
)


def event_id() -> str:
    return "event_" + uuid.uuid4().hex[:20]


class RealtimeError(ProtocolError):
    """An ``error`` event: ``invalid_request_error`` with ``code``, ``param`` and the client
    event's ``event_id``."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(code, message, CLOSE_INVALID_PAYLOAD)
        self.param = param
        self.client_event_id: str | None = None


def error_event(exc: ProtocolError) -> dict[str, Any]:
    """OpenAI's error event for any protocol error (ours end the session, theirs do not)."""
    return {
        "type": "error",
        "event_id": event_id(),
        "error": {
            "type": "invalid_request_error",
            "code": exc.code,
            "message": exc.message,
            "param": getattr(exc, "param", None),
            "event_id": getattr(exc, "client_event_id", None),
        },
    }


@dataclass(frozen=True)
class TranscriptionConfig:
    """A transcription session's settings, as ``session.created``/``updated`` report them."""

    format_type: str = "audio/pcm"
    rate: int = PCM_RATE
    model: str = "whisper-1"
    language: str | None = None
    prompt: str = ""
    turn_detection: dict[str, Any] | None = None
    """``None``: the client commits (no VAD events); else ``type`` and ``silence_duration_ms``."""
    noise_reduction: Any = None
    include: tuple[str, ...] = ()

    @property
    def input_format(self) -> InputFormat:
        return InputFormat(FORMATS[self.format_type], self.rate)

    @property
    def silence_ms(self) -> int | None:
        return None if self.turn_detection is None else self.turn_detection["silence_duration_ms"]

    def live(self) -> tuple[object, ...]:
        """What the session's audio is announced with: it cannot change once audio came."""
        return (self.format_type, self.rate, self.language, self.turn_detection)

    def session(self, session_id: str, beta: bool) -> dict[str, Any]:
        transcription = {"model": self.model, "language": self.language, "prompt": self.prompt}
        fmt: dict[str, Any] = {"type": self.format_type}
        if self.format_type == "audio/pcm":
            fmt["rate"] = self.rate
        if beta:
            beta_name = {v: k for k, v in BETA_FORMATS.items()}[self.format_type]
            return {
                "id": session_id,
                "object": "realtime.transcription_session",
                "input_audio_format": beta_name,
                "input_audio_transcription": transcription,
                "turn_detection": self.turn_detection,
                "input_audio_noise_reduction": self.noise_reduction,
                "include": list(self.include),
            }
        return {
            "type": "transcription",
            "id": session_id,
            "object": "realtime.transcription_session",
            "audio": {
                "input": {
                    "format": fmt,
                    "transcription": transcription,
                    "turn_detection": self.turn_detection,
                    "noise_reduction": self.noise_reduction,
                }
            },
            "include": list(self.include),
        }


def default_config(silence_ms: int) -> TranscriptionConfig:
    return TranscriptionConfig(turn_detection=_turn({"type": "server_vad"}, silence_ms, 10, ""))


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RealtimeError("invalid_type", f"'{param}' must be an object", param)
    return value


def _turn(value: Any, default_ms: int, min_ms: int, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    value = _object(value, param)
    kind = value.get("type", "server_vad")
    if kind not in TURN_TYPES:
        raise RealtimeError(
            "invalid_value",
            f"turn_detection type {clip(kind)} is not supported (server_vad, semantic_vad or null)",
            f"{param}.type",
        )
    silence = value.get("silence_duration_ms", default_ms) if kind == "server_vad" else default_ms
    if isinstance(silence, bool) or not isinstance(silence, int):
        raise RealtimeError(
            "invalid_type", "silence_duration_ms must be an integer", f"{param}.silence_duration_ms"
        )
    if not min_ms <= silence <= SILENCE_MAX_MS:
        raise RealtimeError(
            "invalid_value",
            f"silence_duration_ms must be between {min_ms} and {SILENCE_MAX_MS}",
            f"{param}.silence_duration_ms",
        )
    out = {"type": kind, "silence_duration_ms": silence}
    for name in ("prefix_padding_ms", "threshold", "eagerness"):  # accepted, reported, unused
        if name in value:
            out[name] = value[name]
    return out


def _transcription(
    base: TranscriptionConfig, value: Any, param: str
) -> dict[str, Any]:  # the changes it makes
    if value is None:
        return {}
    value = _object(value, param)
    changes: dict[str, Any] = {}
    if "model" in value:
        changes["model"] = str(value["model"] or base.model)
    if "language" in value:
        try:
            changes["language"] = normalize_language(value["language"] or None)
        except (UnknownLanguage, AttributeError) as exc:
            raise RealtimeError("invalid_value", str(exc), f"{param}.language") from exc
    if "prompt" in value:
        prompt = value["prompt"]
        if prompt is not None and not isinstance(prompt, str):
            raise RealtimeError("invalid_type", "prompt must be a string", f"{param}.prompt")
        changes["prompt"] = prompt or ""
    return changes


def _format(value: Any, param: str) -> dict[str, Any]:
    if isinstance(value, str):  # the beta's names
        if value not in BETA_FORMATS:
            raise RealtimeError(
                "invalid_value",
                f"input_audio_format {clip(value)} is not supported ({', '.join(BETA_FORMATS)})",
                param,
            )
        kind = BETA_FORMATS[value]
        return {"format_type": kind, "rate": PCM_RATE if kind == "audio/pcm" else G711_RATE}
    value = _object(value, param)
    kind = value.get("type", "audio/pcm")
    if kind not in FORMATS:
        raise RealtimeError(
            "invalid_value",
            f"audio format {clip(kind)} is not supported ({', '.join(FORMATS)})",
            f"{param}.type",
        )
    if kind != "audio/pcm":
        return {"format_type": kind, "rate": G711_RATE}
    rate = value.get("rate", PCM_RATE)
    if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 192_000:
        raise RealtimeError(
            "invalid_value", "rate must be an integer from 8000 to 192000", f"{param}.rate"
        )
    return {"format_type": kind, "rate": rate}


def apply_update(
    base: TranscriptionConfig, session: Any, *, beta: bool, min_silence_ms: int
) -> TranscriptionConfig:
    """``base`` changed by a ``session.update`` (GA) or ``transcription_session.update`` (beta)
    event's ``session``; absent fields keep their values."""
    session = _object(session, "session")
    changes: dict[str, Any] = {}
    default_ms = base.silence_ms or 500
    if beta:
        if "input_audio_format" in session:
            changes |= _format(session["input_audio_format"], "session.input_audio_format")
        changes |= _transcription(
            base, session.get("input_audio_transcription"), "session.input_audio_transcription"
        )
        if "turn_detection" in session:
            changes["turn_detection"] = _turn(
                session["turn_detection"], default_ms, min_silence_ms, "session.turn_detection"
            )
        if "input_audio_noise_reduction" in session:
            changes["noise_reduction"] = session["input_audio_noise_reduction"]
    else:
        kind = session.get("type", "transcription")
        if kind != "transcription":
            raise RealtimeError(
                "invalid_value",
                f"session type {clip(kind)} is not served: this endpoint transcribes "
                "(type 'transcription', ?intent=transcription)",
                "session.type",
            )
        audio = _object(session.get("audio") or {}, "session.audio")
        inp = _object(audio.get("input") or {}, "session.audio.input")
        if "format" in inp:
            changes |= _format(inp["format"], "session.audio.input.format")
        changes |= _transcription(
            base, inp.get("transcription"), "session.audio.input.transcription"
        )
        if "turn_detection" in inp:
            changes["turn_detection"] = _turn(
                inp["turn_detection"],
                default_ms,
                min_silence_ms,
                "session.audio.input.turn_detection",
            )
        if "noise_reduction" in inp:
            changes["noise_reduction"] = inp["noise_reduction"]
    if "include" in session:
        include = session["include"] or []
        if not isinstance(include, list):
            raise RealtimeError("invalid_type", "include must be a list", "session.include")
        changes["include"] = tuple(str(i) for i in include)
    return dataclasses.replace(base, **changes)


@dataclass(frozen=True)
class SessionUpdate:
    session: Any
    beta: bool


@dataclass(frozen=True)
class Append:
    audio: bytes


@dataclass(frozen=True)
class Commit:
    pass


@dataclass(frozen=True)
class Clear:
    pass


RealtimeEvent = SessionUpdate | Append | Commit | Clear


def decode_audio(value: Any, max_bytes: int) -> bytes:
    """An append's base64 ``audio``, at most ``max_bytes`` once decoded."""
    if not isinstance(value, str):
        raise RealtimeError("invalid_type", "'audio' must be a base64 string", "audio")
    if len(value) > (max_bytes + 2) // 3 * 4:
        raise RealtimeError(
            "audio_too_large",
            f"an append of more than {max_bytes} bytes of audio (MAX_FRAME_BYTES); send it in pieces",
            "audio",
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RealtimeError(
            "invalid_value", f"'audio' is not valid base64: {exc}", "audio"
        ) from exc


def parse_event(text: str, max_audio_bytes: int) -> RealtimeEvent:
    """One client event; :class:`RealtimeError` (with the event's ``event_id``) for anything
    this endpoint does not take."""
    try:
        obj = load_object(text)
    except ProtocolError as exc:
        raise RealtimeError(exc.code, exc.message) from exc
    client_id = obj.get("event_id")
    try:
        return _parse(obj, max_audio_bytes)
    except RealtimeError as exc:
        exc.client_event_id = client_id if isinstance(client_id, str) else None
        raise


def _parse(obj: dict[str, Any], max_audio_bytes: int) -> RealtimeEvent:
    kind = obj.get("type")
    if kind == "input_audio_buffer.append":
        return Append(decode_audio(obj.get("audio"), max_audio_bytes))
    if kind == "input_audio_buffer.commit":
        return Commit()
    if kind == "input_audio_buffer.clear":
        return Clear()
    if kind in ("session.update", "transcription_session.update"):
        return SessionUpdate(obj.get("session"), beta=kind == "transcription_session.update")
    raise RealtimeError(
        "invalid_value",
        f"unknown event type {clip(kind)}: a transcription session takes "
        f"{', '.join(CLIENT_EVENTS)}",
        "type",
    )
