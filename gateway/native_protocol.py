"""The protocol of ``/v1/listen`` (pure: parsing and message shapes, no I/O).

It is Deepgram's live protocol (query parameters; binary audio; ``KeepAlive``, ``Finalize``,
``CloseStream``, ``Configure``; ``Results``, ``SpeechStarted``, ``UtteranceEnd``, ``Metadata``,
``Error``), so Deepgram's SDKs and the voice-agent plug-ins built on them work unchanged, plus our
own capabilities as extra fields, messages and query parameters (the stable prefix of partials,
resumable sessions, segment numbers, language probabilities). docs/protocol.md has the table of
what is Deepgram's, what is ours and what is accepted and ignored.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.protocol import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_POLICY,
    CLOSE_UNSUPPORTED,
    ProtocolError,
    load_object,
    translation_task,
)
from shared.keyterms import KeytermError, check_keyterms
from shared.languages import UnknownLanguage, normalize_language
from shared.logs import clip
from shared.schemas import Transcript, TurnEvent, Word
from shared.settings import Settings

PROTOCOL_VERSION = 2
"""1 was our own message set (``session``/``partial``/``final``/``closed``); 2 is Deepgram's."""

_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")

SUPPORTED_ENCODINGS = ("linear16", "mulaw", "alaw", "opus", "ogg-opus")
"""Decoded by the uplink (gateway/encodings.py); ``ogg-opus`` is ``opus`` in an Ogg container
(the container of an Opus stream, Ogg or WebM, is recognised from its bytes)."""
KNOWN_ENCODINGS = (
    "linear16", "linear32", "flac", "alaw", "mulaw", "amr-nb", "amr-wb", "opus", "ogg-opus",
    "speex", "g729",
)  # fmt: skip
"""Deepgram's encoding names: a known one this server does not decode yet is refused as
unsupported (not as unknown)."""

CHANNELS = [0, 1]
"""Deepgram's ``channel_index`` / ``channel``: [this channel, of how many]."""

DATA_ERRORS = frozenset(
    {
        "invalid_json", "invalid_message", "unsupported_message", "invalid_config",
        "invalid_parameter", "late_config", "unsupported_encoding", "unsupported_language",
        "frame_too_large",
    }
)  # fmt: skip
"""What the client sent cannot be used: Deepgram's ``DATA-0000`` close reason."""

SCHEMA_ERRORS = frozenset({"invalid_json", "invalid_message", "unsupported_message"})


@dataclass(frozen=True)
class ListenOptions:
    model: str | None = None
    """Accepted and ignored: the ASR pool serves one model (reported in ``model_info``)."""
    language: str | None = None
    sample_rate: int = 16000
    encoding: str = "linear16"
    channels: int = 1
    interim_results: bool = False
    endpointing: int | str | None = None
    """Milliseconds of silence that end an utterance (fixed endpointing), ``"smart"`` (ours: the
    end-of-turn rule, workers/turns.py), or ``None`` = the server default (``VAD_ENDPOINTING``)."""
    eager_eot: bool = False
    """Ours: send ``EagerEndOfTurn`` / ``TurnResumed`` (Flux's names)."""
    utterance_end_ms: int | None = None
    """Set: send ``UtteranceEnd`` when the VAD ends an utterance."""
    vad_events: bool = False
    punctuate: bool | None = None
    """``False`` strips punctuation and case from transcripts; otherwise Whisper's text."""
    smart_format: bool = False
    diarize: bool = False
    """Label finals (and their words) with ``speaker``."""
    eager_eot: bool = False
    """Send ``end_of_turn_eager`` / ``turn_resumed``."""
    translate: str | None = None
    """Ours: ``en``: each final also carries its English translation (the only target Whisper
    has)."""
    keyterms: tuple[str, ...] = ()
    token: str | None = None
    session_id: str | None = None
    """Ours: resume this session (with ``last_segment``: the last final the client has)."""
    last_segment: int = -1
    session_started: bool = False
    """Ours: send a ``SessionStarted`` message first (the session id, for resuming)."""

    @property
    def smart_endpointing(self) -> bool | None:
        """For ``SessionStart``: ``None`` = the server's mode."""
        if self.endpointing is None:
            return None
        return self.endpointing == "smart"

    @property
    def endpoint_ms(self) -> int | None:
        """A fixed endpointing's silence, for ``SessionStart.min_silence_ms``."""
        return self.endpointing if isinstance(self.endpointing, int) else None

    def public(self, default_endpointing: int | str) -> dict[str, Any]:
        """The effective settings, as ``SessionStarted`` reports them."""
        return {
            "language": self.language,
            "sample_rate": self.sample_rate,
            "encoding": self.encoding,
            "channels": self.channels,
            "interim_results": self.interim_results,
            "endpointing": self.endpointing or default_endpointing,
            "utterance_end_ms": self.utterance_end_ms,
            "vad_events": self.vad_events,
            "diarize": self.diarize,
            "eager_eot": self.eager_eot,
            "translate": self.translate,
            "keyterms": list(self.keyterms),
        }


@dataclass(frozen=True)
class Finalize:
    """End the current utterance now and return its final (``from_finalize``)."""


@dataclass(frozen=True)
class KeepAlive:
    """The client is there, just quiet."""


@dataclass(frozen=True)
class CloseStream:
    """Flush, send the last finals and ``Metadata``, close."""


@dataclass(frozen=True)
class Configure:
    keyterms: tuple[str, ...] | None
    """``None``: keep the current ones."""


ListenMessage = Finalize | KeepAlive | CloseStream | Configure


# -- query parameters -----------------------------------------------------------------------------


def _bad(name: str, why: str) -> ProtocolError:
    return ProtocolError("invalid_parameter", f"'{name}' {why}", CLOSE_INVALID_PAYLOAD)


def parse_bool(name: str, value: Any) -> bool:
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
    """An ISO code or name (a BCP-47 region, ``en-US``, is its language's); Deepgram's
    ``multi`` is detection, like ours (absent, ``auto``)."""
    if value is not None and not isinstance(value, str):
        raise _bad(name, "must be a string")
    if value is not None and value.strip().lower() == "multi":
        return None
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
    text = str(value).lower()
    if text in SUPPORTED_ENCODINGS:
        return "opus" if text == "ogg-opus" else text
    if text in KNOWN_ENCODINGS:
        raise ProtocolError(
            "unsupported_encoding",
            f"encoding {clip(value)} is not supported by this server yet "
            f"(supported: {', '.join(SUPPORTED_ENCODINGS)})",
            CLOSE_UNSUPPORTED,
        )
    raise _bad(name, f"{clip(value)} is not an encoding (expected one of {', '.join(KNOWN_ENCODINGS)})")  # fmt: skip


def _session_id(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _SESSION_ID.match(value):
        raise _bad(name, "is not a session id")
    return value


def keyterms(name: str, value: Any) -> tuple[str, ...]:
    """One term or a list of them, within the bounds every endpoint shares (shared/keyterms.py:
    they become the decoder's ``hotwords``)."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise _bad(name, "must be a string or a list of strings")
    try:
        return tuple(check_keyterms(values))
    except KeytermError as exc:
        raise _bad(name, str(exc)) from exc


IGNORED = (
    "callback", "callback_method", "detect_entities", "dictation", "diarize_version", "extra",
    "filler_words", "keywords", "language_hint", "mip_opt_out", "multichannel", "numerals",
    "profanity_filter", "redact", "replace", "search", "tag", "version", "no_delay",
)  # fmt: skip
"""Deepgram's query parameters that are accepted and have no effect here (docs/protocol.md)."""


def parse_options(
    values: Mapping[str, Any], base: ListenOptions | None = None, min_endpointing: int = 100
) -> ListenOptions:
    """Query parameters over ``base`` (``keyterm`` may be a list: it repeats). Deepgram's other
    parameters (:data:`IGNORED`) and unknown names are ignored."""

    def endpointing(name: str, value: Any) -> int | str | None:
        # Deepgram's default is 10 ms and ``false`` turns it off; here silence shorter than
        # ``min_endpointing`` would cut words apart, so a smaller value is raised to it, and
        # ``false`` is the server's default (segments still end at silence). ``smart`` is ours.
        if value in (None, "default") or (isinstance(value, str) and value.lower() == "false"):
            return None
        if isinstance(value, str) and value.lower() == "smart":
            return "smart"
        if value is False:
            return None
        return max(min_endpointing, _int(name, value, 0, 10_000))

    def channels(name: str, value: Any) -> int:
        n = _int(name, value, 1, 8)
        if n != 1:
            raise ProtocolError(
                "unsupported_encoding",
                f"channels={n} is not supported yet: send mono audio (channels=1)",
                CLOSE_UNSUPPORTED,
            )
        return n

    parsers: dict[str, Any] = {
        "model": lambda n, v: str(v)[:64],
        "language": _language,
        "sample_rate": lambda n, v: _int(n, v, 8000, 192_000),
        "encoding": _encoding,
        "channels": channels,
        "interim_results": parse_bool,
        "vad_events": parse_bool,
        "punctuate": parse_bool,
        "smart_format": parse_bool,
        "diarize": parse_bool,
        "eager_eot": parse_bool,
        "translate": _translate,
        "endpointing": endpointing,
        "utterance_end_ms": lambda n, v: _int(n, v, 0, 60_000),
        "keyterm": keyterms,
        "token": lambda n, v: None if v is None else str(v),
        "session_id": _session_id,
        "last_segment": lambda n, v: _int(n, v, -1, 10**9),
        "session_started": parse_bool,
    }
    fields = {"keyterm": "keyterms"}
    changes = {
        fields.get(name, name): parsers[name](name, v)
        for name, v in values.items()
        if name in parsers
    }
    if "diarize_model" in values:  # Deepgram: naming a diarization model turns it on
        changes["diarize"] = True
    if "detect_language" in values and parse_bool("detect_language", values["detect_language"]):
        changes["language"] = None  # Deepgram: detection wins over a language given
    return dataclasses.replace(base or ListenOptions(), **changes)


# -- client messages ------------------------------------------------------------------------------


def parse_frame(text: str) -> ListenMessage:
    obj = load_object(text)
    kind = obj.get("type")
    if kind == "Finalize":
        return Finalize()
    if kind == "KeepAlive":
        return KeepAlive()
    if kind == "CloseStream":
        return CloseStream()
    if kind == "Configure":
        terms = obj.get("keyterms")
        return Configure(None if terms is None else keyterms("keyterms", terms))
    raise ProtocolError(
        "unsupported_message",
        f"unknown message type {clip(kind)} "
        "(expected KeepAlive, Finalize, CloseStream or Configure)",
        CLOSE_UNSUPPORTED,
    )


# -- server messages ------------------------------------------------------------------------------


def request_id(session_id: str) -> str:
    """Deepgram's ``request_id`` (a UUID) of our 32-hex-digit session id."""
    return str(uuid.UUID(hex=session_id))


def model_info(model: str) -> dict[str, str]:
    return {"name": model, "version": "whisper-streaming", "arch": "whisper"}


def model_uuid(model: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"whisper-streaming:{model}"))


_NOT_WORD = re.compile(r"[^\w'\s-]+", re.UNICODE)


def plain(text: str) -> str:
    """Deepgram's unpunctuated ``word``: lower case, no punctuation."""
    return " ".join(_NOT_WORD.sub("", text).lower().split())


def speaker_number(label: str | None) -> int | None:
    """Our ``S0``, ``S1``, … as Deepgram's 0, 1, …"""
    if label and label[1:].isdigit():
        return int(label[1:])
    return None


def confidence(words: Sequence[Word]) -> float:
    return round(sum(w.probability for w in words) / len(words), 4) if words else 0.0


def words_of(t: Transcript, punctuate: bool | None) -> list[dict[str, Any]]:
    out = []
    for w in t.words:
        shown = w.word.strip()
        item: dict[str, Any] = {
            "word": plain(shown),
            "start": w.start,
            "end": w.end,
            "confidence": w.probability,
            "punctuated_word": plain(shown) if punctuate is False else shown,
        }
        speaker = speaker_number(w.speaker or t.speaker)
        if speaker is not None:
            item["speaker"] = speaker
        if t.language:
            item["language"] = t.language
        out.append(item)
    return out


def results(
    t: Transcript,
    *,
    text: str,
    is_final: bool,
    options: ListenOptions,
    model: str,
    stable_text: str | None = None,
) -> dict[str, Any]:
    """A ``Results`` message: Deepgram's fields, then ours (``session_id``, ``segment``,
    ``end``, ``stable_transcript`` on partials, ``language_probability``, ``processing_time``,
    ``speaker``, ``translation`` on the finals of a ``translate=en`` session)."""
    transcript = plain(text) if options.punctuate is False else text.strip()
    alternative: dict[str, Any] = {
        "transcript": transcript,
        "confidence": confidence(t.words),
        "words": words_of(t, options.punctuate),
    }
    if t.language:
        alternative["languages"] = [t.language]
    msg: dict[str, Any] = {
        "type": "Results",
        "channel_index": CHANNELS,
        "duration": round(max(0.0, t.end - t.start), 3),
        "start": t.start,
        "is_final": is_final,
        "speech_final": is_final and t.speech_final,
        "from_finalize": is_final and t.from_finalize,
        "channel": {"alternatives": [alternative]},
        "metadata": {
            "request_id": request_id(t.session_id),
            "model_info": model_info(model),
            "model_uuid": model_uuid(model),
        },
        # ours
        "session_id": t.session_id,
        "segment": t.segment,
        "end": t.end,
        "language": t.language,
        "language_probability": t.language_probability,
    }
    if stable_text is not None:
        stable = plain(stable_text) if options.punctuate is False else stable_text
        msg["stable_transcript"] = stable
    if is_final:
        msg["processing_time"] = t.processing_time
        speaker = speaker_number(t.speaker)
        if speaker is not None:
            msg["speaker"] = speaker
        if t.translation is not None:
            msg["translation"] = {"language": t.translation.language, "text": t.translation.text}
    return msg


def speech_started(session_id: str, segment: int, timestamp: float) -> dict[str, Any]:
    return {
        "type": "SpeechStarted",
        "channel": CHANNELS,
        "timestamp": timestamp,
        "session_id": session_id,
        "segment": segment,
    }


def utterance_end(session_id: str, segment: int, last_word_end: float) -> dict[str, Any]:
    return {
        "type": "UtteranceEnd",
        "channel": CHANNELS,
        "last_word_end": last_word_end,
        "session_id": session_id,
        "segment": segment,
    }


def _summary(
    session_id: str, *, model: str, sha256: str, created: str, duration: float
) -> dict[str, Any]:
    """Deepgram's metadata of a request (live ``Metadata`` and pre-recorded ``metadata``)."""
    return {
        "transaction_key": "deprecated",
        "request_id": request_id(session_id),
        "sha256": sha256,
        "created": created,
        "duration": round(duration, 3),
        "channels": 1,
        "models": [model_uuid(model)],
        "model_info": {model_uuid(model): model_info(model)},
        "session_id": session_id,
    }


def metadata(
    session_id: str,
    *,
    model: str,
    sha256: str,
    created: str,
    duration: float,
    segments: int | None,
) -> dict[str, Any]:
    """The last message of a session (after ``CloseStream``): Deepgram's summary, and ours
    (``session_id``, ``segments``)."""
    return {
        "type": "Metadata",
        **_summary(session_id, model=model, sha256=sha256, created=created, duration=duration),
        "segments": segments,
    }


def error(exc: ProtocolError, received: str | None = None) -> dict[str, Any]:
    """Deepgram's ``Error`` message: ``variant`` (``SchemaError`` for a text message that could
    not be parsed, else our code), ``description``, ``code`` (ours), ``message`` (the text
    message that could not be parsed, clipped)."""
    msg: dict[str, Any] = {
        "type": "Error",
        "variant": "SchemaError" if exc.code in SCHEMA_ERRORS else exc.code,
        "description": exc.message,
        "code": exc.code,
    }
    if received is not None and exc.code in SCHEMA_ERRORS:
        msg["message"] = received[:200]
    return msg


def close_for(exc: ProtocolError) -> tuple[int, str]:
    """The close code and reason: what the client sent that cannot be used closes 1008 with
    Deepgram's ``DATA-0000`` (1009 for an oversized frame); the rest keep their code."""
    if exc.code == "frame_too_large":
        return exc.close_code, f"DATA-0000 {exc.code}"
    if exc.code in DATA_ERRORS:
        return CLOSE_POLICY, f"DATA-0000 {exc.code}"
    return exc.close_code, exc.code


# -- pre-recorded (POST /v1/listen) ---------------------------------------------------------------


def prerecorded(
    finals: Sequence[Transcript],
    *,
    session_id: str,
    options: ListenOptions,
    model: str,
    sha256: str,
    created: str,
    duration: float,
    utterances: bool = False,
    paragraphs: bool = False,
) -> dict[str, Any]:
    """Deepgram's pre-recorded response of a file's finals (one channel, one alternative):
    ``metadata``; ``results.channels[0].alternatives[0]`` with ``transcript``, ``confidence``,
    ``words`` and (``paragraphs``, or ``smart_format``) ``paragraphs``, one a segment;
    ``results.utterances`` (``utterances=true``), one a segment."""
    spoken = [t for t in finals if t.text.strip()]
    shown = [plain(t.text) if options.punctuate is False else t.text.strip() for t in spoken]
    words = [w for t in spoken for w in words_of(t, options.punctuate)]
    alternative: dict[str, Any] = {
        "transcript": " ".join(shown),
        "confidence": confidence([w for t in spoken for w in t.words]),
        "words": words,
    }
    if paragraphs or options.smart_format:
        alternative["paragraphs"] = {
            "transcript": "".join(f"\n{text}\n" for text in shown),
            "paragraphs": [_paragraph(t, text) for t, text in zip(spoken, shown, strict=True)],
        }
    channel: dict[str, Any] = {"alternatives": [alternative]}
    language = options.language or next((t.language for t in spoken if t.language), None)
    if options.language is None and language:
        channel["detected_language"] = language
        channel["language_confidence"] = next(
            (t.language_probability for t in spoken if t.language == language), 0.0
        )
    body: dict[str, Any] = {
        "metadata": _summary(
            session_id, model=model, sha256=sha256, created=created, duration=duration
        ),
        "results": {"channels": [channel]},
    }
    if utterances:
        body["results"]["utterances"] = [
            _utterance(t, text, options) for t, text in zip(spoken, shown, strict=True)
        ]
    return body


def _paragraph(t: Transcript, text: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sentences": [{"text": text, "start": t.start, "end": t.end}],
        "num_words": len(text.split()),
        "start": t.start,
        "end": t.end,
    }
    speaker = speaker_number(t.speaker)
    if speaker is not None:
        out["speaker"] = speaker
    return out


def _utterance(t: Transcript, text: str, options: ListenOptions) -> dict[str, Any]:
    out: dict[str, Any] = {
        "start": t.start,
        "end": t.end,
        "confidence": confidence(t.words),
        "channel": 0,
        "transcript": text,
        "words": words_of(t, options.punctuate),
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{t.session_id}:{t.segment}")),
    }
    speaker = speaker_number(t.speaker)
    if speaker is not None:
        out["speaker"] = speaker
    return out


def default_endpointing(settings: Settings) -> int | str:
    """What ``endpointing`` is when a client does not say: ``"smart"`` or the fixed silence."""
    return "smart" if settings.vad_endpointing == "smart" else settings.vad_min_silence_ms


def turn_message(event: TurnEvent) -> dict[str, Any]:
    """``EagerEndOfTurn`` (the speculative transcript, as soon as it exists) or ``TurnResumed``
    (the speaker went on: drop what was started on it), Flux's names; ours: ``segment``."""
    msg: dict[str, Any] = {
        "type": "EagerEndOfTurn" if event.kind == "end_of_turn_eager" else "TurnResumed",
        "session_id": event.session_id,
        "segment": event.segment,
        "request_id": request_id(event.session_id),
    }
    if event.kind == "end_of_turn_eager":
        msg |= {"transcript": event.text, "start": event.start, "end": event.end}
    return msg
