"""The predecessor-compatible endpoint (``/`` and ``/ws``): VoiceStreamAI's protocol, finals only.

Audio is 16 kHz PCM16 mono whatever the config frame's ``sampleRate`` says (the predecessor's page
sends its AudioContext rate but downsamples itself; see ../shared/PREDECESSOR.md). Nothing but
finals (and error frames for bad input) is ever sent, since that client reads the result fields
from every message.
"""

from __future__ import annotations

import logging
import uuid

from starlette.websockets import WebSocket

from gateway.context import GatewayContext, final_message
from gateway.downlink import ResultsDownlink
from gateway.protocol import ClientConfig, Eof, parse_text_frame
from gateway.session import ClientSocket, run_socket
from gateway.uplink import AudioUplink
from shared.schemas import Transcript

log = logging.getLogger(__name__)


class LegacySession:
    """The predecessor's protocol: a config frame, audio, ``eof``; finals out."""

    def __init__(self, ws: WebSocket, ctx: GatewayContext, endpoint: str = "/") -> None:
        self.ctx = ctx
        self.session_id = uuid.uuid4().hex
        self.endpoint = endpoint
        self.client = ClientSocket(ws)
        self.uplink = AudioUplink(ctx, self.session_id, endpoint)
        self.downlink = ResultsDownlink(
            ctx,
            self.session_id,
            on_final=self._final,
            listening=self.client.connected,
            clock=self.uplink.clock,
        )

    async def run(self) -> None:
        await run_socket(self.ctx, self)

    async def open(self) -> None:
        return None

    async def handle_text(self, text: str) -> bool:
        parsed = parse_text_frame(text)
        if isinstance(parsed, Eof):
            return True
        self._on_config(parsed)
        return False

    def _on_config(self, config: ClientConfig) -> None:
        if self.uplink.announced:
            log.info("session=%s config after audio ignored", self.session_id)
            return
        self.uplink.language = config.language

    async def dropped(self) -> bool:
        return False  # the predecessor's sessions are not resumable

    async def closing(self) -> None:
        return None

    async def _final(self, t: Transcript) -> None:
        await self.client.send(final_message(t))
