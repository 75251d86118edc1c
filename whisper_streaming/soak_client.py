"""The soak test's client: one real-time ``/v1/listen`` session that, like a real client, resumes
on another gateway when its socket drops (docs/protocol.md, *Resumable sessions*).

It streams PCM16 at real-time pace, keeping the session id (``session_started=true``) and the last
final's ``segment``; when the socket drops before ``Metadata``, it reconnects to the next gateway
with ``session_id`` and ``last_segment``, waits for ``SessionStarted`` and sends on from its
``audio_received``: the seconds of audio the session holds durably. Audio is a live source: what
"was spoken" while it reconnected is sent at once (the gateway's frame-rate limit holds a burst
back, never refuses it).

What the protocol promises: finals are durable (``transcript:{session}``), so none is lost or
repeated across a resume; and ``audio_received`` says where the session's audio stops, so audio a
dead gateway had taken but not yet written to Redis (its coalescing buffer, ~``COALESCE_MS``, and
frames in the socket buffers) is sent again, and nothing already held is repeated. The soak
measures what is still lost: seconds sent minus the ``duration`` the server reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import websockets

from whisper_streaming.listen import CLOSE_STREAM, flatten
from whisper_streaming.soak_faults import SessionLog

FRAME = 3200
"""100 ms of 16 kHz PCM16 per frame."""

RECONNECT_FOR_S = 90.0
"""A client keeps reconnecting this long (a Redis outage, no gateway up) before it gives up."""

RECONNECT_PAUSE_S = 0.3

RETRYABLE = {"service_unavailable", "overloaded"}
"""Error codes after which the client reconnects (resuming); any other ends the session."""


class SessionFailed(Exception):
    """The session could not be completed (the reason is the message)."""


class ResumingClient:
    def __init__(
        self, gateways: Sequence[str], first: int, pcm: bytes, clock: Callable[[], float]
    ) -> None:
        self.gateways = list(gateways)
        self.pick = first
        self.pcm = pcm
        self.clock = clock
        """Seconds since the start of the run (the fault schedule's time)."""
        self.log = SessionLog()
        self.session_id: str | None = None
        self.last_segment = -1
        self.sent = 0
        """Bytes of ``pcm`` handed to a socket."""
        self.resumes = 0
        self.audio_seconds = 0.0
        """Of session audio, as ``Metadata`` says."""
        self.texts: dict[int, str] = {}
        self.history: list[str] = []
        """One line per socket: when it opened, the gateway, how it ended (a slow session's
        story, in the soak's errors)."""
        self._closed = False
        self._error: dict[str, Any] | None = None
        self._hello = asyncio.Event()

    def url(self) -> str:
        base = self.gateways[self.pick % len(self.gateways)]
        query = "interim_results=true&session_started=true"
        if self.session_id is not None:
            query += f"&session_id={self.session_id}&last_segment={self.last_segment}"
        return f"{base}/v1/listen?{query}"

    async def run(self) -> None:
        """Until ``Metadata``; raises :class:`SessionFailed`."""
        t0 = time.monotonic()
        down_since: float | None = None
        while True:
            self._error = None
            opened, how = self.clock(), "closed"
            try:
                async with websockets.connect(self.url(), open_timeout=5) as ws:
                    down_since = None
                    await self._one_socket(ws, t0)
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                how = type(exc).__name__
            self.history.append(
                f"{opened:.0f}-{self.clock():.0f}s {self.pick % len(self.gateways)} {how}"
                f"{' ' + str(self._error.get('code')) if self._error else ''} "
                f"sent={self.sent / 32000:.1f}s finals<={self.last_segment}"
            )
            if self._closed:
                self.log.ended_at = self.clock()
                return
            if self._error is not None and self._error.get("code") not in RETRYABLE:
                err = self._error
                raise SessionFailed(f"error {err.get('code')}: {err.get('message')}")
            if self.session_id is None:
                self.sent = 0  # never learned the id: start again, as a new session
            now = time.monotonic()
            down_since = down_since or now
            if now - down_since > RECONNECT_FOR_S:
                raise SessionFailed(f"no gateway took the session back for {RECONNECT_FOR_S:.0f}s")
            self.pick += 1  # the next gateway (the dead one may be back by the time it comes round)
            await asyncio.sleep(RECONNECT_PAUSE_S)

    async def _one_socket(self, ws: Any, t0: float) -> None:
        resuming = self.session_id is not None
        self._hello.clear()
        rx = asyncio.create_task(self._receive(ws))
        try:
            if resuming:  # send on from what the session holds (SessionStarted.audio_received)
                hello = asyncio.create_task(self._hello.wait())
                await asyncio.wait({hello, rx}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
                hello.cancel()
            while self.sent < len(self.pcm) and not rx.done():
                await ws.send(self.pcm[self.sent : self.sent + FRAME])
                self.sent = min(len(self.pcm), self.sent + FRAME)
                await asyncio.sleep(max(0.0, t0 + self.sent / 32000 - time.monotonic()))
            if not rx.done():
                await ws.send(CLOSE_STREAM)
            await asyncio.wait_for(asyncio.shield(rx), 180)
        finally:
            if not rx.done():
                rx.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.WebSocketException):
                await rx

    async def _receive(self, ws: Any) -> None:
        async for raw in ws:
            self._on_message(flatten(json.loads(raw)))

    def _on_message(self, msg: dict[str, Any]) -> None:
        now = self.clock()
        kind = msg.get("type")
        if kind == "session":
            self.session_id = msg["session_id"]
            if msg.get("resumed"):
                self.resumes += 1
                held = int(float(msg.get("audio_received") or 0.0) * 16000) * 2
                self.sent = min(self.sent, held)
            self._hello.set()
        seg = msg.get("segment")
        if isinstance(seg, int):
            self.log.heard[seg] = now
        if kind == "final" and isinstance(seg, int):
            self.log.finals.append((now, seg))
            self.texts.setdefault(seg, msg["text"])
            self.last_segment = seg
        elif kind == "closed":
            self.log.segments = msg["segments"]
            self.audio_seconds = msg.get("audio_seconds") or 0.0
            self._closed = True
        elif kind == "error":
            self._error = msg

    def transcript(self) -> str:
        """The finals' text, each segment once, in order."""
        return " ".join(self.texts[s] for s in sorted(self.texts))

    def audio_lost_s(self) -> float:
        """Seconds of audio sent that the session never got (gone with a killed gateway)."""
        return max(0.0, len(self.pcm) / 32000 - self.audio_seconds)
