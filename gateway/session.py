"""The socket-driving loop of the two WebSocket protocols (``/``, ``/ws`` and ``/v1/listen``).

A protocol (:mod:`gateway.legacy`, :mod:`gateway.native`) is an object that composes an
:class:`~gateway.uplink.AudioUplink`, a :class:`~gateway.downlink.ResultsDownlink` and a
:class:`ClientSocket`, and says what its text frames mean (:class:`SocketProtocol`). This loop
runs one: binary frames go to the uplink, text frames to the protocol, the downlink delivers
results beside it. When the session ends (eof, close, or a protocol error) the buffered speech is
flushed through the pipeline and its finals are sent before the socket is closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway.context import GatewayContext, counted
from gateway.downlink import ResultsDownlink
from gateway.protocol import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_SERVICE_RESTART,
    CLOSE_TRY_AGAIN_LATER,
    ProtocolError,
    session_replaced,
)
from gateway.uplink import AudioUplink
from shared import metrics
from shared.redis_util import RedisUnavailable

log = logging.getLogger(__name__)


class ClientSocket:
    """The client's WebSocket: JSON out one message at a time, and whether anyone is there."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.gone = False
        self._send_lock = asyncio.Lock()

    def connected(self) -> bool:
        return not self.gone

    async def send(self, obj: dict[str, Any]) -> None:
        if self.gone:
            return
        async with self._send_lock:
            try:
                await self.ws.send_json(obj)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.gone = True

    async def close(self, code: int, reason: str = "") -> None:
        if self.gone or self.ws.client_state != WebSocketState.CONNECTED:
            return
        try:
            await self.ws.close(code, reason or None)
        except (RuntimeError, OSError):
            pass


class SocketProtocol(Protocol):
    """What :func:`run_socket` needs of a WebSocket protocol."""

    session_id: str
    endpoint: str
    client: ClientSocket
    uplink: AudioUplink
    downlink: ResultsDownlink

    async def open(self) -> None:
        """After registration, before reading frames; raise ProtocolError to refuse."""

    async def handle_text(self, text: str) -> bool:
        """One text frame; True ends the session (eof). Raise ProtocolError."""

    async def dropped(self) -> bool:
        """The client went away without eof: True keeps the session open (resumable)."""

    async def closing(self) -> None:
        """All finals were sent; the socket is about to close normally."""

    def error_frame(self, exc: ProtocolError) -> dict[str, Any]:
        """The error message in this protocol's shape."""

    def close_for(self, exc: ProtocolError) -> tuple[int, str]:
        """The close code and reason after ``exc``."""


async def run_socket(ctx: GatewayContext, proto: SocketProtocol) -> None:
    """Run one WebSocket session to its end and close the socket."""
    client, uplink, downlink = proto.client, proto.uplink, proto.downlink
    downlink.open()
    close: tuple[int, str] = (CLOSE_NORMAL, "")
    try:
        with counted(ctx, proto.endpoint):
            try:
                try:
                    await proto.open()
                except ProtocolError as exc:  # e.g. resuming an unknown session
                    await client.send(proto.error_frame(exc))
                    close = proto.close_for(exc)
                    return
                downlink.start()
                ticker = asyncio.create_task(uplink.tick(), name=f"tick-{proto.session_id}")
                reason = "eof"
                try:
                    if not uplink.ended:
                        close, reason = await _receive_until_drained(ctx, proto)
                finally:
                    await _stop(ticker, proto.session_id)
                    if (stuck := await _end_within_deadline(ctx, proto, reason)) is not None:
                        close = stuck
            finally:
                downlink.close()
    finally:
        await client.close(*close)


TICKER_STOP_S = 5.0
"""How long the socket loop waits for a cancelled coalescing ticker before it ends the session
without it (a ticker flush rides through Redis errors only while it is not cancelled)."""


async def _stop(ticker: asyncio.Task[None], session_id: str) -> None:
    """Stop the coalescing ticker before the end is written; surface how it died, if it did.
    Bounded: a ticker that outlives its cancel (Python 3.11 swallowed some, shared/aio.py) is
    logged and cancelled again, never waited for for ever."""
    ticker.cancel()
    done, _ = await asyncio.wait({ticker}, timeout=TICKER_STOP_S)
    if not done:
        log.error("session=%s coalescing ticker still running %.0fs after its cancel",
                  session_id, TICKER_STOP_S)  # fmt: skip
        ticker.cancel()
        return
    if not ticker.cancelled() and (exc := ticker.exception()) is not None:
        log.error("session=%s coalescing ticker failed", session_id, exc_info=exc)


async def _receive_until_drained(
    ctx: GatewayContext, proto: SocketProtocol
) -> tuple[tuple[int, str], str]:
    """:func:`_receive`, as a task the gateway's drain can stop (SIGTERM): then the session ends
    as at an eof, and closes with 1012 once its finals are out."""
    receiving = asyncio.create_task(_receive(proto, ctx.settings.first_audio_timeout_s))
    replaced = asyncio.create_task(proto.uplink.attachment.lost.wait())
    ctx.receivers.add(receiving)
    try:
        await asyncio.wait({receiving, replaced}, return_when=asyncio.FIRST_COMPLETED)
        if receiving.done() or not replaced.done():
            return await receiving
        # Another socket resumed the session (a half-open one never sees its own drop): stop
        # reading this one, tell it, and close it without touching the session's state.
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)
        err = session_replaced(proto.session_id)
        log.info("session=%s socket replaced by a resume", proto.session_id)
        await proto.client.send(proto.error_frame(err))
        return proto.close_for(err), err.code
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not (ctx.draining and receiving.cancelled()) or (current and current.cancelling()):
            raise
        log.info("session=%s drained (gateway shutting down)", proto.session_id)
        return (CLOSE_SERVICE_RESTART, "service restart"), "shutdown"
    finally:
        ctx.receivers.discard(receiving)
        replaced.cancel()
        if not receiving.done():
            receiving.cancel()


async def _next_message(proto: SocketProtocol, deadline: float) -> Any:
    """The socket's next ASGI message; before the session's first audio, only until
    ``deadline`` (loop time): a socket that never sends audio cannot hold a session slot."""
    if proto.uplink.announced:
        return await proto.client.ws.receive()
    remaining = deadline - asyncio.get_running_loop().time()
    try:
        if remaining <= 0:
            raise TimeoutError
        return await asyncio.wait_for(proto.client.ws.receive(), remaining)
    except TimeoutError:
        raise ProtocolError(
            "no_audio",
            "no audio arrived within the time allowed after opening the session "
            "(FIRST_AUDIO_TIMEOUT_S)",
            CLOSE_POLICY,
        ) from None


async def _receive(
    proto: SocketProtocol, first_audio_timeout_s: float
) -> tuple[tuple[int, str], str]:
    """Frames until the session ends: the close (code, reason) and why it ended."""
    client = proto.client
    deadline = asyncio.get_running_loop().time() + first_audio_timeout_s
    try:
        while True:
            msg = await _next_message(proto, deadline)
            if msg["type"] == "websocket.disconnect":
                client.gone = True
                return (CLOSE_NORMAL, ""), "disconnect"
            data = msg.get("bytes")
            if data is not None:
                await proto.uplink.push(data)
                continue
            text = msg.get("text")
            if text is None:
                continue
            proto.uplink.check_text_rate()
            if await proto.handle_text(text):
                return (CLOSE_NORMAL, ""), "eof"
    except ProtocolError as exc:
        metrics.FRAMES_REJECTED.labels(exc.code).inc()
        log.warning("session=%s protocol error %s: %s", proto.session_id, exc.code, exc.message)
        await client.send(proto.error_frame(exc))
        return proto.close_for(exc), exc.code
    except WebSocketDisconnect:
        client.gone = True
        return (CLOSE_NORMAL, ""), "disconnect"
    except RedisUnavailable as exc:
        log.error("session=%s ends: %s", proto.session_id, exc)
        err = ProtocolError("service_unavailable", f"{exc}; reconnect later", CLOSE_TRY_AGAIN_LATER)
        metrics.FRAMES_REJECTED.labels(err.code).inc()
        await client.send(proto.error_frame(err))
        return proto.close_for(err), err.code


END_SLACK_S = 30.0
"""How long ending a session may take beyond the live wait for its finals (``EOF_TIMEOUT_S``)
and a Redis outage its last writes ride through (``REDIS_OUTAGE_TOLERANCE_S``); past the sum,
the socket is closed anyway (:func:`_end_within_deadline`)."""


class _Ending:
    """Where ending a session has got to, for the log if it never finishes."""

    def __init__(self) -> None:
        self.stage = "starting"


async def _end_within_deadline(
    ctx: GatewayContext, proto: SocketProtocol, reason: str
) -> tuple[int, str] | None:
    """:func:`_end`, bounded as a whole: every step of it has its own bound, and this one
    guarantees that no socket stays open for ever on a step that misses one. Past the deadline:
    an ``internal_error`` frame in the protocol's shape, logged with the step it was stuck at,
    and the close (1011) to use instead of the normal one; None when the end finished."""
    ending = _Ending()
    s = ctx.settings
    budget = s.eof_timeout_s + s.redis_outage_tolerance_s + END_SLACK_S
    deadline = asyncio.timeout(budget)
    try:
        async with deadline:
            await _end(ctx, proto, reason, ending)
        return None
    except TimeoutError:
        if not deadline.expired():
            raise
    log.error(
        "session=%s ending (%s) took over %.0fs, stuck %s; the socket is closed",
        proto.session_id, reason, budget, ending.stage,
    )  # fmt: skip
    metrics.SESSIONS_END_STUCK.inc()
    err = ProtocolError(
        "internal_error",
        f"the session could not be ended within {budget:.0f} s; finals not received here stay "
        "readable for the session TTL (resume the session to get them)",
        CLOSE_INTERNAL_ERROR,
    )
    await proto.client.send(proto.error_frame(err))
    return proto.close_for(err)


async def _end(ctx: GatewayContext, proto: SocketProtocol, reason: str, ending: _Ending) -> None:
    client, uplink, downlink = proto.client, proto.uplink, proto.downlink
    if not uplink.announced or reason == "service_unavailable":
        return  # nothing to end, or Redis is gone: the session's keys expire with their TTL
    if uplink.attachment.lost.is_set():
        return  # another socket has the session now: nothing here is this socket's to end
    try:
        if client.gone and not uplink.ended and await proto.dropped():
            ending.stage = "flushing a dropped socket's audio"
            await uplink.flush()
            return
        if not uplink.ended:
            ending.stage = "writing audio_end"
            await uplink.end(reason)
    except ProtocolError as exc:
        if exc.code == "session_replaced":
            return  # resumed elsewhere while this socket was going
        raise
    if client.gone:
        return  # finals stay on transcript:{session} for the session TTL
    ending.stage = "waiting for the finals"
    if not await downlink.wait(ctx.settings.eof_timeout_s):
        log.warning(
            "session=%s finals still missing after %.0fs; reading the transcript stream",
            proto.session_id,
            ctx.settings.eof_timeout_s,
        )
        ending.stage = "reading the transcript stream"
        await downlink.fill_from_transcript()
    if not client.gone:
        ending.stage = "sending the closing message"
        await proto.closing()
    log.info(
        "session=%s ended (%s): %s segments, %d released; closing",
        proto.session_id, reason, downlink.total, downlink.reorder.next,
    )  # fmt: skip
