"""What the predecessor's Locust test does on the wire, as plain code Locust calls (and a test can
call without Locust): connect to ``/`` with no config frame; for each file, send its 16 kHz PCM16
mono audio in 250 ms chunks (8,000 bytes) at real-time pace, then 10 s of silence in one frame of
220,500 bytes (pydub's ``AudioSegment.silent(10000)``, 11,025 Hz); read ``text`` from every
message.

What the predecessor could not measure and this does: **the time from the end of speech to the
final text** of each utterance. The end of speech is the last word's end time (seconds of session
audio, as the service reports it); the moment that audio had been sent is looked up in the send
timeline; the latency is the arrival of the final minus that moment (so it includes up to one
250 ms chunk of client buffering, as a live microphone client would have).

At the end it sends ``{"type": "eof"}`` (ours, not the predecessor's) so that the last finals come
back before the socket closes instead of being cut off.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

SAMPLE_RATE = 16_000
CHUNK_BYTES = 8_000
"""250 ms of 16 kHz PCM16, the predecessor's chunk."""
CHUNK_SECONDS = 0.25
SILENCE_FRAME = bytes(220_500)
"""10 s of pydub silence at its default 11,025 Hz, 16-bit: one 220,500-byte frame."""
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")


class Connection(Protocol):
    """The part of websocket-client's ``WebSocket`` used here (a test adapts another client)."""

    def send_binary(self, data: bytes) -> Any: ...
    def send(self, data: str) -> Any: ...
    def recv(self) -> str | bytes: ...
    def close(self) -> Any: ...


@dataclass
class Final:
    text: str
    end_of_speech: float
    """Seconds of session audio where the utterance's last word ends."""
    latency: float | None
    """Seconds from sending the audio at ``end_of_speech`` to receiving this final."""


class Timeline:
    """When each stretch of session audio was sent (monotonic clock)."""

    def __init__(self) -> None:
        self._audio: list[float] = []
        self._times: list[float] = []
        self.total_bytes = 0

    def sent(self, nbytes: int, now: float) -> None:
        self.total_bytes += nbytes
        self._audio.append(self.total_bytes / 2 / SAMPLE_RATE)
        self._times.append(now)

    def sent_at(self, audio_s: float) -> float | None:
        """When the audio up to ``audio_s`` had been sent, or None if it has not been."""
        i = bisect.bisect_left(self._audio, audio_s - 1e-6)
        return self._times[i] if i < len(self._times) else None


def end_of_speech(msg: dict[str, Any]) -> float:
    words = msg.get("words") or []
    if words:
        return float(words[-1]["end"])
    return float(msg.get("end", 0.0))


@dataclass
class Run:
    """One connection streaming files: the finals and how long each took to come back."""

    finals: list[Final] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    timeline: Timeline = field(default_factory=Timeline)
    on_final: Callable[[Final], None] | None = None
    clock: Callable[[], float] = time.monotonic

    def receive(self, conn: Connection) -> None:
        """Read every message until the socket closes (runs in its own thread/greenlet)."""
        while True:
            try:
                raw = conn.recv()
            except Exception as exc:  # closed: by the server after eof, or dropped
                if "closed" not in type(exc).__name__.lower():
                    self.errors.append(f"receive failed: {exc!r}")
                return
            if not raw:
                return
            now = self.clock()
            try:
                msg = json.loads(raw)
            except ValueError:
                self.errors.append(f"not JSON: {raw[:80]!r}")
                continue
            if msg.get("type") == "error":
                self.errors.append(f"{msg.get('code')}: {msg.get('message')}")
                continue
            text = msg["text"]  # what the predecessor read from every message
            eos = end_of_speech(msg)
            sent = self.timeline.sent_at(eos)
            final = Final(text, eos, None if sent is None else max(0.0, now - sent))
            self.finals.append(final)
            if self.on_final is not None:
                self.on_final(final)

    def stream(
        self,
        conn: Connection,
        files: Sequence[bytes],
        *,
        pace: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        send_eof: bool = True,
        timeout: float = 120.0,
    ) -> None:
        """Send each file in 250 ms chunks (every ``CHUNK_SECONDS / pace`` s; ``pace`` 1 is real
        time), each followed by the silence frame; then eof and wait for the server to close."""
        receiver = threading.Thread(target=self.receive, args=(conn,), daemon=True)
        receiver.start()
        try:
            for pcm in files:
                for i in range(0, len(pcm), CHUNK_BYTES):
                    chunk = pcm[i : i + CHUNK_BYTES]
                    conn.send_binary(chunk)
                    self.timeline.sent(len(chunk), self.clock())
                    if pace > 0:
                        sleep(CHUNK_SECONDS / pace)
                conn.send_binary(SILENCE_FRAME)
                self.timeline.sent(len(SILENCE_FRAME), self.clock())
            if send_eof:
                conn.send(json.dumps({"type": "eof"}))
                receiver.join(timeout)
        finally:
            conn.close()
        receiver.join(5)


def load_files(folder: str | Path, max_files: int = 0) -> list[tuple[str, bytes]]:
    """The recordings in ``folder`` (WAV like the predecessor's, or anything FFmpeg reads) as
    16 kHz PCM16 mono, sorted by name; ``max_files`` 0 = all."""
    from shared.audio import decode_file, float32_to_pcm16

    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if max_files:
        paths = paths[:max_files]
    if not paths:
        raise FileNotFoundError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {folder}")
    return [(p.name, float32_to_pcm16(decode_file(p))) for p in paths]
