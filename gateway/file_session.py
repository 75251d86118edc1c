"""A recorded file transcribed through the live pipeline, as one more session.

The decoded audio is pushed into an :class:`~gateway.uplink.AudioUplink` in frames, and the
results come back through a :class:`~gateway.downlink.ResultsDownlink`: the parts a WebSocket
session is made of, without a socket. So a file takes exactly the path a live stream takes —
``session_start`` on ``sessions``, audio entries on ``audio:{session}`` (with the session's
back-pressure), ``audio_end``, the VAD worker cutting utterances, the whole ASR pool transcribing
them in parallel, finals routed back and put in order — and there is no second model or code path
to keep in step.

What differs from a live session: the caller waits much longer for the last finals
(``TRANSCRIPTION_TIMEOUT_S`` rather than ``EOF_TIMEOUT_S``: a long file may leave a large ASR
backlog behind it), and past the live wait it keeps reading the durable ``transcript:{session}``
stream instead of giving up on missing segments.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from gateway.context import GatewayContext, counted
from gateway.downlink import ResultsDownlink
from gateway.protocol import ProtocolError
from gateway.uplink import AudioUplink
from shared import metrics, session_state
from shared.audio import SAMPLE_RATE
from shared.capabilities import TRANSCRIBE, TRANSLATE
from shared.schemas import Transcript
from shared.session_state import Field

log = logging.getLogger(__name__)

FRAME_SECONDS = 1.0
"""Audio per frame fed to the uplink: large enough that a long file costs few Redis writes (and
stays far below the per-session frame-rate limit), small enough for a fine back-pressure."""

POLL_S = 0.25
"""How often the durable transcript stream is read once the live wait is over."""


def frames(pcm: bytes, frame_bytes: int) -> Iterator[bytes]:
    """``pcm`` in frames of ``frame_bytes`` (rounded down to whole samples, at least one)."""
    size = max(2, frame_bytes - frame_bytes % 2)
    for i in range(0, len(pcm), size):
        yield pcm[i : i + size]


class FileSession:
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
        task: str = TRANSCRIBE,
        session_id: str | None = None,
        on_final: Callable[[Transcript], Awaitable[None]] | None = None,
    ) -> None:
        self.ctx = ctx
        if task == TRANSLATE:
            self.endpoint = "/v1/audio/translations"
        self.session_id = session_id or uuid.uuid4().hex
        self.pcm = pcm
        self.prompt = prompt
        self.uplink = AudioUplink(ctx, self.session_id, self.endpoint)
        self.uplink.language = language
        self.uplink.task = task
        self.downlink = ResultsDownlink(
            ctx,
            self.session_id,
            on_final=self._final,
            clock=self.uplink.clock,
            attachment=self.uplink.attachment,
        )
        self.finals: list[Transcript] = []
        self.on_final = on_final
        """Called with each final, in order, as it arrives (a streamed response)."""
        self.complete = False
        self.errors: list[dict[str, Any]] = []
        """Error frames the session raised (e.g. ``overloaded``, ``session_too_long``)."""
        self._frame_bytes = min(ctx.settings.max_frame_bytes, int(SAMPLE_RATE * 2 * FRAME_SECONDS))
        self._deadline = time.monotonic() + (timeout_s or ctx.settings.transcription_timeout_s)

    async def transcribe(self) -> list[Transcript]:
        """Run the session to its end; ``complete`` says whether every segment came back."""
        self.downlink.open()
        with counted(self.ctx, self.endpoint):
            try:
                await self._seed_prompt()
                self.downlink.start()
                reason = await self._send_audio()
                if self.uplink.announced:
                    await self.uplink.end(reason)
                    if not await self.downlink.wait(self.ctx.settings.eof_timeout_s):
                        await self._read_durable()
            finally:
                self.downlink.close()
        if not self.uplink.announced:  # no audio at all: nothing to wait for
            self.complete = True
        elif not self.complete:
            self.complete = self.downlink.complete
        return self.finals

    async def _seed_prompt(self) -> None:
        if not self.prompt:
            return
        # The ASR workers prompt each segment with the session's latest final text; seeding it
        # (as "segment -1") makes the caller's prompt the context of the first segments.
        key = self.ctx.keys.session(self.session_id)
        values: dict[Field, session_state.Value] = {Field.PROMPT: self.prompt, Field.PROMPT_SEG: -1}
        async with self.ctx.redis.pipeline(transaction=True) as pipe:
            session_state.write(pipe, key, values, self.ctx.settings.session_ttl_s)
            await pipe.execute()

    async def _send_audio(self) -> str:
        """Push the file; the reason its audio ends (``eof``, or the broken limit's code)."""
        try:
            for frame in frames(self.pcm, self._frame_bytes):
                await self.uplink.push(frame)
        except ProtocolError as exc:
            metrics.FRAMES_REJECTED.labels(exc.code).inc()
            log.warning("session=%s protocol error %s: %s", self.session_id, exc.code, exc.message)
            self.errors.append(exc.frame())
            return exc.code
        return "eof"

    async def _read_durable(self) -> None:
        """The live wait (``EOF_TIMEOUT_S``) is over but segments are missing: unlike a live
        session, keep reading the durable transcript stream until every segment is there or
        ``TRANSCRIPTION_TIMEOUT_S`` has passed, never skipping a segment still in the queue."""
        key = self.ctx.keys.session(self.session_id)
        while True:
            await self.downlink.catch_up()
            if self.downlink.total is None:
                segments, seconds = await session_state.read_totals(self.ctx.redis, key)
                if segments is not None:
                    self.downlink.ended(segments, seconds or 0.0)
            if self.downlink.complete:
                self.complete = True
                return
            if time.monotonic() >= self._deadline:
                log.warning(
                    "session=%s stage=gateway file transcription incomplete: %d of %s segments",
                    self.session_id,
                    self.downlink.reorder.next,
                    self.downlink.total,
                )
                return
            await asyncio.sleep(POLL_S)

    async def _final(self, t: Transcript) -> None:
        self.finals.append(t)
        if self.on_final is not None:
            await self.on_final(t)
