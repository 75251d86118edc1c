"""A recorded file transcribed through the live pipeline, as one more session.

The decoded audio is fed to an ordinary :class:`~gateway.session.Session` through a
WebSocket-shaped source (:class:`Loopback`) that yields the audio in frames and then ``eof``. So a
file takes exactly the path a live stream takes — ``session_start`` on ``sessions``, audio entries
on ``audio:{session}`` (with the session's back-pressure), ``audio_end``, the VAD worker cutting
utterances, the whole ASR pool transcribing them in parallel, finals routed back and put in order —
and there is no second model or code path to keep in step.

What differs from a live session: the caller waits much longer for the last finals
(``TRANSCRIPTION_TIMEOUT_S`` rather than ``EOF_TIMEOUT_S``: a long file may leave a large ASR
backlog behind it), and past the live wait it keeps reading the durable ``transcript:{session}``
stream instead of giving up on missing segments.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from starlette.websockets import WebSocketState

from gateway.session import STOP, GatewayContext, Session
from shared.audio import SAMPLE_RATE
from shared.redis_util import entry_data
from shared.schemas import SchemaError, Transcript, decode_as

log = logging.getLogger(__name__)

FRAME_SECONDS = 1.0
"""Audio per frame fed to the session: large enough that a long file costs few Redis writes (and
stays far below the per-session frame-rate limit), small enough for a fine back-pressure."""

POLL_S = 0.25
"""How often the durable transcript stream is read once the live wait is over."""


class Loopback:
    """Looks like a Starlette WebSocket to :class:`Session`: ``receive()`` yields the audio in
    frames, then an ``eof`` text frame; what the session sends (errors) is kept in ``sent``."""

    def __init__(self, pcm: bytes, frame_bytes: int) -> None:
        self._frames = self._split(pcm, max(2, frame_bytes - frame_bytes % 2))
        self.sent: list[dict[str, Any]] = []
        self.client_state = WebSocketState.CONNECTED
        self.close_code: int | None = None

    @staticmethod
    def _split(pcm: bytes, size: int) -> Iterator[bytes]:
        for i in range(0, len(pcm), size):
            yield pcm[i : i + size]

    async def receive(self) -> dict[str, Any]:
        frame = next(self._frames, None)
        if frame is None:
            return {"type": "websocket.receive", "text": json.dumps({"type": "eof"})}
        return {"type": "websocket.receive", "bytes": frame}

    async def send_json(self, obj: dict[str, Any]) -> None:
        self.sent.append(obj)

    async def close(self, code: int = 1000) -> None:
        self.close_code = code
        self.client_state = WebSocketState.DISCONNECTED


class FileSession(Session):
    """One uploaded file as a pipeline session; :meth:`transcribe` returns its finals in order."""

    endpoint = "/v1/audio/transcriptions"

    def __init__(
        self,
        ctx: GatewayContext,
        pcm: bytes,
        *,
        language: str | None = None,
        prompt: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        frame = min(ctx.settings.max_frame_bytes, int(SAMPLE_RATE * 2 * FRAME_SECONDS))
        self.loopback = Loopback(pcm, frame)
        super().__init__(self.loopback, ctx)  # type: ignore[arg-type]
        self.language = language
        self.prompt = prompt
        self.finals: list[Transcript] = []
        self.complete = False
        self._deadline = time.monotonic() + (timeout_s or ctx.settings.transcription_timeout_s)
        self._read_from = "-"

    async def transcribe(self) -> list[Transcript]:
        """Run the session to its end; ``complete`` says whether every segment came back."""
        await self.run()
        if not self.announced:  # no audio at all: nothing to wait for
            self.complete = True
        elif not self.complete:
            self.complete = self._all_in()
        return self.finals

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Error frames the session raised (e.g. ``overloaded``, ``session_too_long``)."""
        return [m for m in self.loopback.sent if m.get("type") == "error"]

    # -- Session hooks -------------------------------------------------------------------------

    async def on_open(self) -> None:
        if self.prompt:
            # The ASR workers prompt each segment with the session's latest final text; seeding it
            # (as "segment -1") makes the caller's prompt the context of the first segments.
            key = self.keys.session(self.session_id)
            async with self.ctx.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"prompt": self.prompt, "prompt_seg": -1})
                pipe.expire(key, self.ctx.settings.session_ttl_s)
                await pipe.execute()

    async def handle_text(self, text: str) -> str | None:
        return STOP  # the loopback only ever sends eof

    async def deliver_final(self, t: Transcript) -> None:
        self.finals.append(t)

    async def fill_from_transcript(self) -> None:
        """The live wait (``EOF_TIMEOUT_S``) is over but segments are missing: unlike a live
        session, keep reading the durable transcript stream until every segment is there or
        ``TRANSCRIPTION_TIMEOUT_S`` has passed, never skipping a segment still in the queue."""
        while True:
            await self._read_transcript()
            if self.total is None:
                segments = await self.ctx.redis.hget(self.keys.session(self.session_id), "segments")
                if segments is not None:
                    self.total = int(segments)
            if self._all_in():
                self.complete = True
                return
            if time.monotonic() >= self._deadline:
                log.warning(
                    "session=%s stage=gateway file transcription incomplete: %d of %s segments",
                    self.session_id,
                    self.reorder.next,
                    self.total,
                )
                return
            await asyncio.sleep(POLL_S)

    # -- helpers -------------------------------------------------------------------------------

    def _all_in(self) -> bool:
        return self.total is not None and self.reorder.next >= self.total

    async def _read_transcript(self) -> None:
        entries = await self.ctx.redis.xrange(
            self.keys.transcript(self.session_id), min=self._read_from
        )
        for entry_id, fields in entries:
            self._read_from = "(" + entry_id.decode()
            try:
                t = decode_as(entry_data(fields), Transcript)
            except SchemaError:
                continue
            for ready in self.reorder.push(t.segment, t):
                if ready.text:
                    self.finals.append(ready)
