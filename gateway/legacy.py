"""The predecessor-compatible endpoint (``/`` and ``/ws``): VoiceStreamAI's protocol, finals only.

Audio is 16 kHz PCM16 mono whatever the config frame's ``sampleRate`` says (the predecessor's page
sends its AudioContext rate but downsamples itself; see ../shared/PREDECESSOR.md). Nothing but
finals (and error frames for bad input) is ever sent, since that client reads the result fields
from every message.
"""

from __future__ import annotations

import logging

from gateway.protocol import ClientConfig, Eof, parse_text_frame
from gateway.session import STOP, Session, final_message
from shared.schemas import Transcript

log = logging.getLogger(__name__)


class LegacySession(Session):
    async def handle_text(self, text: str) -> str | None:
        parsed = parse_text_frame(text)
        if isinstance(parsed, Eof):
            return STOP
        self._on_config(parsed)
        return None

    def _on_config(self, config: ClientConfig) -> None:
        if self.announced:
            log.info("session=%s config after audio ignored", self.session_id)
            return
        self.language = config.language

    async def deliver_final(self, t: Transcript) -> None:
        await self.send(final_message(t))
