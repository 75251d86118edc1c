"""Reading ``/v1/listen`` (Deepgram's live protocol with our extensions, docs/protocol.md) from a
client: each server message as one flat dict, for ``replay``, the benchmarks' client, the soak test
and the tests.

``Results`` become ``{"type": "final" | "partial", "segment", "start", "end", "text",
"stable_text", "speech_final", "from_finalize", "session_id", "words", "language",
"language_probability", "processing_time", "speaker", "translation"}``; ``Metadata`` becomes ``{"type":
"closed", "segments", "audio_seconds", "session_id"}``; ``Error`` becomes ``{"type": "error",
"code", "message", "variant"}``; ``SpeechStarted`` / ``UtteranceEnd`` become ``speech_started`` /
``utterance_end`` with ``segment`` and ``timestamp``; ``SessionStarted`` becomes ``session``.
Anything else is passed through with its ``type``.
"""

from __future__ import annotations

from typing import Any

CLOSE_STREAM = '{"type": "CloseStream"}'
FINALIZE = '{"type": "Finalize"}'
KEEPALIVE = '{"type": "KeepAlive"}'


def flatten(msg: dict[str, Any]) -> dict[str, Any]:
    kind = msg.get("type")
    if kind == "Results":
        alt = msg["channel"]["alternatives"][0]
        return {
            "type": "final" if msg.get("is_final") else "partial",
            "segment": msg.get("segment"),
            "start": msg["start"],
            "end": msg.get("end", round(msg["start"] + msg["duration"], 3)),
            "text": alt["transcript"],
            "stable_text": msg.get("stable_transcript", ""),
            "speech_final": msg.get("speech_final", False),
            "from_finalize": msg.get("from_finalize", False),
            "session_id": msg.get("session_id"),
            "words": [
                {
                    "word": w.get("punctuated_word", w["word"]),
                    "start": w["start"],
                    "end": w["end"],
                    "probability": w.get("confidence", 0.0),
                    **({"speaker": w["speaker"]} if "speaker" in w else {}),
                }
                for w in alt.get("words", [])
            ],
            "language": msg.get("language"),
            "language_probability": msg.get("language_probability", 0.0),
            "processing_time": msg.get("processing_time", 0.0),
            "speaker": msg.get("speaker"),
            "translation": msg.get("translation"),
        }
    if kind == "Metadata":
        return {
            "type": "closed",
            "segments": msg.get("segments"),
            "audio_seconds": msg.get("duration", 0.0),
            "session_id": msg.get("session_id"),
        }
    if kind == "Error":
        return {
            "type": "error",
            "code": msg.get("code") or msg.get("variant"),
            "message": msg.get("description", ""),
            "variant": msg.get("variant"),
        }
    if kind in ("SpeechStarted", "UtteranceEnd"):
        return {
            "type": "speech_started" if kind == "SpeechStarted" else "utterance_end",
            "segment": msg.get("segment"),
            "timestamp": msg.get("timestamp", msg.get("last_word_end")),
            "session_id": msg.get("session_id"),
        }
    if kind == "SessionStarted":
        return {**msg, "type": "session"}
    return msg


def is_listen(url: str) -> bool:
    """The URL is the ``/v1/listen`` endpoint (not the predecessor's ``/`` or ``/ws``)."""
    from urllib.parse import urlsplit

    return urlsplit(url).path.rstrip("/").endswith("/v1/listen")
