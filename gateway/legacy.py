"""The predecessor-compatible endpoint (``/`` and ``/ws``): VoiceStreamAI's protocol, finals only.

Both versions of the predecessor's clients are served at once (docs/clients.md): the first sends
a config frame and reads ``text``, ``words``, ``language``, ``language_probability`` and
``processing_time``; the low-latency one sends ``?lang=`` (and ``dest_lang``) and no config, and
reads ``Transcript`` (``StartTime``/``EndTime`` in milliseconds). Every final carries both sets of
fields. A config frame's ``language`` wins over the query's ``lang``.

Audio is 16 kHz PCM16 mono whatever the config frame's ``sampleRate`` says (the predecessor's page
sends its AudioContext rate but downsamples itself; see ../shared/PREDECESSOR.md). Nothing but
finals (and error frames for bad input) is ever sent, since those clients read the result fields
from every message.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from starlette.websockets import WebSocket

from gateway.context import GatewayContext, final_message
from gateway.downlink import ResultsDownlink
from gateway.protocol import ClientConfig, Eof, LegacyQuery, ProtocolError, parse_text_frame
from gateway.session import ClientSocket, run_socket
from gateway.uplink import AudioUplink
from shared.capabilities import TRANSCRIBE
from shared.schemas import Transcript

log = logging.getLogger(__name__)


class LegacySession:
    """The predecessor's protocol: a config frame, audio, ``eof``; finals out."""

    def __init__(
        self,
        ws: WebSocket,
        ctx: GatewayContext,
        endpoint: str = "/",
        query: LegacyQuery | None = None,
    ) -> None:
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
            attachment=self.uplink.attachment,
        )
        query = query or LegacyQuery()
        self.uplink.language = query.language
        self.uplink.task = query.task

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
        if config.language_set:
            self.uplink.language = config.language
            self.uplink.task = TRANSCRIBE  # the config frame names the language to transcribe

    async def dropped(self) -> bool:
        return False  # the predecessor's sessions are not resumable

    async def closing(self) -> None:
        return None

    def error_frame(self, exc: ProtocolError) -> dict[str, Any]:
        return exc.frame()

    def close_for(self, exc: ProtocolError) -> tuple[int, str]:
        return exc.close_code, ""

    async def _final(self, t: Transcript) -> None:
        await self.client.send(legacy_final(t))


def legacy_final(t: Transcript) -> dict[str, Any]:
    """A final for both predecessor versions: the first's result object (``final_message``) and
    the low-latency version's ``Transcript``, ``StartTime``, ``EndTime`` (integer milliseconds of
    session audio)."""
    msg = final_message(t)
    msg["Transcript"] = t.text
    msg["StartTime"] = round(t.start * 1000)
    msg["EndTime"] = round(t.end * 1000)
    return msg
