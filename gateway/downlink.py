"""The results half of a gateway session: what the workers publish for it, in order, to a sink.

:class:`ResultsDownlink` drains the session's queue on the process's
:class:`~gateway.router.ResultRouter`, puts finals in segment order
(:class:`~gateway.ordering.ReorderBuffer`: duplicates dropped, a late earlier segment released
first), passes partials of a segment not yet final and VAD events through, takes the segment count
from ``session_done``, and catches up from the durable ``transcript:{session}`` when the live path
may have lost something (a resume, a lost subscription, the end of the live wait). It knows
nothing of sockets: the protocol hands it callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from gateway.attachment import Attachment
from gateway.context import GatewayContext
from gateway.ordering import ArrivalClock, ReorderBuffer
from gateway.router import Resync
from shared import metrics, session_state, tracing
from shared.audio import SAMPLE_RATE
from shared.redis_util import entry_data
from shared.schemas import (
    SchemaError,
    SessionDone,
    SocketAttached,
    StreamMessage,
    Transcript,
    TurnEvent,
    VadEvent,
    decode_as,
)
from shared.session_state import Field

log = logging.getLogger(__name__)

OnTranscript = Callable[[Transcript], Awaitable[None]]
OnVadEvent = Callable[[VadEvent], Awaitable[None]]
OnTurnEvent = Callable[[TurnEvent], Awaitable[None]]
OnReleased = Callable[[], Awaitable[None]]


async def _ignore(_item: object) -> None:
    return None


async def _nothing() -> None:
    return None


def _always() -> bool:
    return True


class ResultsDownlink:
    """One session's results, delivered in order to ``on_final`` (a final with text, while
    ``listening()``), ``on_partial`` (a partial of a segment not yet released),
    ``on_vad_event``, ``on_turn_event`` (``end_of_turn_eager`` / ``turn_resumed`` of a segment
    not yet released), and ``after_finals`` (after each release of finals, in or out of the
    live path).

    Use: :meth:`open` (register on the router, before anything can be published), optionally
    :meth:`catch_up`, :meth:`start`, …, :meth:`wait` for every final, :meth:`close`.
    """

    def __init__(
        self,
        ctx: GatewayContext,
        session_id: str,
        *,
        on_final: OnTranscript,
        on_partial: OnTranscript = _ignore,
        on_vad_event: OnVadEvent = _ignore,
        on_turn_event: OnTurnEvent = _ignore,
        after_finals: OnReleased = _nothing,
        listening: Callable[[], bool] = _always,
        clock: ArrivalClock | None = None,
        attachment: Attachment | None = None,
    ) -> None:
        self.ctx = ctx
        self.session_id = session_id
        self.reorder: ReorderBuffer[Transcript] = ReorderBuffer()
        self.total: int | None = None
        """Segments the session produced, once its audio ended (``session_done``)."""
        self.audio_seconds = 0.0
        self._on_final = on_final
        self._on_partial = on_partial
        self._on_vad_event = on_vad_event
        self._on_turn_event = on_turn_event
        self._after_finals = after_finals
        self._listening = listening
        self._clock = clock or ArrivalClock()
        self.attachment = attachment or Attachment()
        """This socket's claim on the session: once another socket took it over, nothing more is
        delivered here (the socket loop closes with ``session_replaced``)."""
        self._queue: asyncio.Queue[StreamMessage | Resync] | None = None
        self._task: asyncio.Task[None] | None = None
        self._read_from = "-"
        """Where the next catch-up reads ``transcript:{session}`` from: what was read before is
        in the reorder buffer already (released or held)."""

    @property
    def complete(self) -> bool:
        """Every segment of the ended session was released."""
        return self.total is not None and self.reorder.next >= self.total

    def start_at(self, segment: int) -> None:
        """A resumed session: the client has the finals before ``segment`` already."""
        self.reorder = ReorderBuffer(first=segment)

    def ended(self, segments: int, audio_seconds: float) -> None:
        """The segment count is known (a resumed session that had ended)."""
        self.total, self.audio_seconds = segments, audio_seconds

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self) -> None:
        """Register the session's queue on the router: results are kept from now on."""
        self._queue = self.ctx.router.register(self.session_id, self.attachment.token)

    def start(self) -> None:
        """Deliver live results until every final was released (see :meth:`wait`)."""
        self._task = asyncio.create_task(self.run(), name=f"send-{self.session_id}")

    async def wait(self, timeout_s: float) -> bool:
        """Wait for every final (the total from ``session_done``); False after ``timeout_s``.
        An error in the delivery is raised here."""
        assert self._task is not None, "start() first"
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.ctx.router.unregister(self.session_id, self.attachment.token)

    # -- the live path ------------------------------------------------------------------------

    async def run(self) -> None:
        """Take results off the session's queue until every segment was released."""
        if self._queue is None:
            self.open()
        assert self._queue is not None
        while not self.complete and not self.attachment.lost.is_set():
            await self.handle(await self._queue.get())

    async def handle(self, msg: StreamMessage | Resync) -> None:
        """One message of the session's queue."""
        if isinstance(msg, Transcript):
            if msg.final:
                await self._release(self.reorder.push(msg.segment, msg))
            elif msg.segment >= self.reorder.next:
                await self._on_partial(msg)
        elif isinstance(msg, VadEvent):
            await self._on_vad_event(msg)
        elif isinstance(msg, TurnEvent):
            if msg.segment >= self.reorder.next:
                await self._on_turn_event(msg)
        elif isinstance(msg, SessionDone):
            self.ended(msg.segments, msg.audio_seconds)
        elif isinstance(msg, SocketAttached):
            if self.attachment.notice(msg.token):
                log.info("session=%s another socket resumed it: this one stops", self.session_id)
        elif isinstance(msg, Resync):
            await self.resync()

    async def resync(self) -> None:
        """Catch up on what the live path lost: finals from the transcript stream, and the
        segment count if the session's audio already ended."""
        key = self.ctx.keys.session(self.session_id)
        conn = await session_state.read_text(self.ctx.redis, key, Field.CONN)
        if self.attachment.replaced_by(conn):  # its notice may have been lost with the link
            return
        segments, seconds = await session_state.read_totals(self.ctx.redis, key)
        if segments is not None:
            self.ended(segments, seconds or 0.0)
        await self.catch_up()

    # -- the durable path ---------------------------------------------------------------------

    async def catch_up(self) -> None:
        """Release, in order, the finals on ``transcript:{session}`` not released yet."""
        entries = await self.ctx.redis.xrange(
            self.ctx.keys.transcript(self.session_id), min=self._read_from
        )
        ready: list[Transcript] = []
        for entry_id, fields in entries:
            self._read_from = "(" + entry_id.decode()
            try:
                t = decode_as(entry_data(fields), Transcript)
            except SchemaError:
                continue
            ready += self.reorder.push(t.segment, t)
        await self._release(ready)

    async def fill_from_transcript(self) -> None:
        """The live wait is over: release the finals the live path missed, from the durable
        stream, and stop waiting for segments that never came."""
        await self.catch_up()
        if self.total is not None:
            if lost := self.reorder.missing(self.total):
                log.warning(
                    "session=%s segments %s never arrived (not published, not on the transcript "
                    "stream): given up on",
                    self.session_id, lost[:20],
                )  # fmt: skip
            await self._release(self.reorder.skip_to(self.total))

    # -- delivery -----------------------------------------------------------------------------

    async def _release(self, finals: list[Transcript]) -> None:
        for t in finals:
            await self._deliver(t)
        await self._after_finals()

    async def _deliver(self, t: Transcript) -> None:
        if not t.text or not self._listening() or self.attachment.lost.is_set():
            return  # silence, a failed segment (dead-lettered), nobody listening, or replaced
        await self._on_final(t)
        metrics.FINALS_SENT.inc()
        arrived = self._clock.arrival(int(t.end * SAMPLE_RATE))
        latency = None if arrived is None else max(0.0, time.monotonic() - arrived)
        if latency is not None:
            metrics.FINAL_LATENCY.observe(latency)
        if t.traceparent:  # the utterance's trace ends with its final sent to the client
            attrs = {"session_id": t.session_id, "segment": t.segment}
            if latency is not None:
                attrs["latency_ms"] = round(latency * 1000)
            tracing.record("gateway.final", t.traceparent, time.time(), attrs)
