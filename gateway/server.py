"""uvicorn as the gateway runs it: bounded connections and a deadline for request headers.

uvicorn bounds the time between requests on a kept-alive connection (``timeout_keep_alive``) but
not the time a client may take to send its first request's headers, so a few hundred connections
trickling a header byte at a time hold sockets and file descriptors forever (seen: 200 held).
:class:`HeaderDeadlineProtocol` closes a connection whose request headers are not complete within
``HTTP_HEADER_TIMEOUT_S`` of its opening (or of the previous response on a kept-alive one);
``MAX_CONNECTIONS`` (uvicorn's ``limit_concurrency``) answers 503 to requests beyond the cap.
WebSocket sessions are bounded separately by admission (``MAX_SESSIONS``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's headers."""

    header_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            log.info("closing a connection from %s: request headers not complete within %.0f s",
                     self.client, self.header_timeout_s)  # fmt: skip
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on a kept-alive connection has the same deadline


def protocol_class(header_timeout_s: float) -> type[HeaderDeadlineProtocol]:
    return type("GatewayHttpProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": header_timeout_s})  # fmt: skip


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose shutdown (SIGTERM) first stops accepting connections and then
    awaits ``drain`` (the sessions' own graceful end), and only then lets uvicorn close what is
    left with 1012: without it every socket is closed at once and clients of ``/`` lose their
    last utterance."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._drain = drain

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connections while the sessions drain
        try:
            await self._drain()
        except Exception:  # noqa: BLE001 - uvicorn's own shutdown must still run
            log.exception("draining the sessions failed")
        await super().shutdown(sockets)
