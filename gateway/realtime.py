"""``WS /v1/realtime?intent=transcription``: OpenAI's Realtime transcription session over the
pipeline (an :class:`~gateway.uplink.AudioUplink`, a :class:`~gateway.downlink.ResultsDownlink`
and :func:`~gateway.session.run_socket`, like the other protocols).

Each VAD segment is one conversation item (``item_{session}_{segment}``): with ``server_vad``
its ``speech_started`` and ``utterance_end`` become ``input_audio_buffer.speech_started``,
``speech_stopped`` and ``committed``; a client ``input_audio_buffer.commit`` is the native
``finalize``. The stable prefix of the segment's partials (LocalAgreement) goes out as
append-only ``conversation.item.input_audio_transcription.delta`` events while it grows, the final
as ``.completed`` (an item without speech completes with an empty transcript). The transcription
``prompt`` becomes the session's key terms (faster-whisper ``hotwords``). Bad events get OpenAI's
``error`` event and the session goes on; a broken limit of the uplink ends it (error, close).
docs/protocol.md has the mapping.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

from gateway.agreement import LocalAgreement, word_key
from gateway.auth import Principal, credential_from
from gateway.context import GatewayContext, admission_error
from gateway.downlink import ResultsDownlink
from gateway.protocol import CLOSE_UNSUPPORTED, ProtocolError
from gateway.realtime_protocol import (
    Append,
    Clear,
    Commit,
    RealtimeError,
    SessionUpdate,
    TranscriptionConfig,
    apply_update,
    default_config,
    error_event,
    event_id,
    parse_event,
)
from gateway.session import ClientSocket, run_socket
from gateway.uplink import AudioUplink
from shared.audio import SAMPLE_RATE
from shared.schemas import Transcript, VadEvent

log = logging.getLogger(__name__)

KEY_SUBPROTOCOL = "openai-insecure-api-key."
"""OpenAI's browser clients put the key in a subprotocol (a browser cannot set headers)."""

MIN_COMMIT_SAMPLES = SAMPLE_RATE // 10
"""OpenAI refuses a commit of less than 100 ms of audio (``input_audio_buffer_commit_empty``)."""


@dataclass
class Item:
    """One segment as a conversation item."""

    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    rev: int = 0
    sent: list[str] = field(default_factory=list)
    """The words sent as deltas."""
    started: bool = False
    """``speech_started`` was sent (server VAD)."""
    stopped: bool = False
    """``speech_stopped`` was sent."""
    committed: bool = False
    completed: bool = False


class RealtimeSession:
    endpoint = "/v1/realtime"

    def __init__(self, ws: WebSocket, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self.session_id = uuid.uuid4().hex
        self.client = ClientSocket(ws)
        self.uplink = AudioUplink(ctx, self.session_id, self.endpoint)
        self.uplink.text_audio = True
        self.uplink.interim_results = True
        self.uplink.vad_events = True  # the items' boundaries, whether or not they are sent
        self.downlink = ResultsDownlink(
            ctx,
            self.session_id,
            on_final=self._final,
            on_partial=self._partial,
            on_vad_event=self._vad_event,
            after_finals=self._after_finals,
            listening=self.client.connected,
            clock=self.uplink.clock,
            attachment=self.uplink.attachment,
        )
        self.config = default_config(ctx.settings.vad_min_silence_ms)
        self.beta = False
        self._items: dict[int, Item] = {}
        self._open: int | None = None
        """The segment whose speech started and has not stopped."""
        self._next = 0
        """The segment after the last one seen."""
        self._released = 0
        self._last_committed: str | None = None
        self._committed_at = 0
        self._apply(self.config)

    def item_id(self, segment: int) -> str:
        return f"item_{self.session_id[:12]}_{segment}"

    def _item(self, segment: int) -> Item:
        self._next = max(self._next, segment + 1)
        return self._items.setdefault(segment, Item())

    def _apply(self, config: TranscriptionConfig) -> None:
        self.config = config
        up = self.uplink
        up.set_input_format(config.input_format)
        up.language = config.language
        # no turn detection: the client commits, the VAD waits as long as it may for them
        up.min_silence_ms = config.silence_ms or 10_000

    async def run(self) -> None:
        await run_socket(self.ctx, self)

    def error_frame(self, exc: ProtocolError) -> dict[str, Any]:
        """OpenAI's ``error`` event."""
        return error_event(exc)

    def close_for(self, exc: ProtocolError) -> tuple[int, str]:
        return exc.close_code, ""

    async def _send(self, kind: str, **fields: Any) -> None:
        await self.client.send({"type": kind, "event_id": event_id(), **fields})

    # -- the socket loop's hooks -----------------------------------------------------------------

    async def open(self) -> None:
        await self._send("session.created", session=self.config.session(self._sid, False))

    @property
    def _sid(self) -> str:
        return "sess_" + self.session_id[:24]

    async def handle_text(self, text: str) -> bool:
        try:
            await self._handle(text)
        except RealtimeError as exc:
            log.info("session=%s realtime error %s: %s", self.session_id, exc.code, exc.message)
            await self.client.send(error_event(exc))
        return False

    async def dropped(self) -> bool:
        return False

    async def closing(self) -> None:
        return None

    # -- client events ---------------------------------------------------------------------------

    async def _handle(self, text: str) -> None:
        event = parse_event(text, self.ctx.settings.max_frame_bytes)
        if isinstance(event, Append):
            await self.uplink.push(event.audio)
        elif isinstance(event, Commit):
            await self._commit()
        elif isinstance(event, Clear):
            await self._send("input_audio_buffer.cleared")
        elif isinstance(event, SessionUpdate):
            await self._update(event)

    async def _update(self, event: SessionUpdate) -> None:
        config = apply_update(
            self.config,
            event.session,
            beta=event.beta,
            min_silence_ms=self.ctx.settings.endpointing_min_ms,
        )
        if self.uplink.announced and config.live() != self.config.live():
            raise RealtimeError(
                "session_update_after_audio",
                "the input format, language and turn detection cannot change once audio has "
                "arrived (the transcription model and prompt can)",
                "session",
            )
        if config.prompt != self.config.prompt:
            try:
                await self.uplink.set_keyterms([config.prompt] if config.prompt else [])
            except ProtocolError as exc:
                raise RealtimeError(exc.code, exc.message, "prompt") from exc
        if not self.uplink.announced:
            self._apply(config)
        self.config = config
        self.beta = self.beta or event.beta
        kind = "transcription_session.updated" if event.beta else "session.updated"
        await self._send(kind, session=config.session(self._sid, event.beta))

    async def _commit(self) -> None:
        if self.uplink.samples - self._committed_at < MIN_COMMIT_SAMPLES:
            ms = (self.uplink.samples - self._committed_at) * 1000 / SAMPLE_RATE
            raise RealtimeError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {ms:.2f}ms of audio.",
            )
        self._committed_at = self.uplink.samples
        await self.uplink.control("finalize")
        segment = self._open if self._open is not None else self._next
        await self._committed(segment)

    # -- results ---------------------------------------------------------------------------------

    async def _committed(self, segment: int) -> None:
        item = self._item(segment)
        if item.committed:
            return
        item.committed = True
        item_id = self.item_id(segment)
        await self._send(
            "input_audio_buffer.committed", previous_item_id=self._last_committed, item_id=item_id
        )
        self._last_committed = item_id

    async def _vad_event(self, event: VadEvent) -> None:
        if event.segment < self._released:  # completed and forgotten: its final came first
            return
        vad = self.config.turn_detection is not None
        ms = round(event.time * 1000)
        item_id = self.item_id(event.segment)
        self._item(event.segment)
        if event.kind == "speech_started":
            self._open = event.segment
            if vad:
                self._item(event.segment).started = True
                await self._send(
                    "input_audio_buffer.speech_started", audio_start_ms=ms, item_id=item_id
                )
        elif event.kind == "utterance_end":
            if self._open == event.segment:
                self._open = None
            if vad:
                await self._stopped(event.segment, ms)
                await self._committed(event.segment)

    async def _stopped(self, segment: int, ms: int) -> None:
        """``speech_stopped`` of a started item, once, before its ``committed``: a final can
        reach the gateway before the VAD's ``utterance_end`` (a speculative final published at
        the cut), and OpenAI's order is stopped, committed, completed."""
        item = self._item(segment)
        if item.stopped:
            return
        item.stopped = True
        await self._send(
            "input_audio_buffer.speech_stopped", audio_end_ms=ms, item_id=self.item_id(segment)
        )

    async def _partial(self, t: Transcript) -> None:
        item = self._item(t.segment)
        if item.completed or t.rev <= item.rev:
            return
        item.rev = t.rev
        stable = item.agreement.update(t.text).split()
        await self._delta(t.segment, item, stable)

    async def _delta(self, segment: int, item: Item, words: list[str]) -> None:
        """Send the words after those already sent, if the words start with them."""
        sent = item.sent
        if len(words) <= len(sent) or [word_key(w) for w in words[: len(sent)]] != [
            word_key(w) for w in sent
        ]:
            return
        new = words[len(sent) :]
        text = (" " if sent else "") + " ".join(new)
        item.sent = sent + new
        await self._send(
            "conversation.item.input_audio_transcription.delta",
            item_id=self.item_id(segment),
            content_index=0,
            delta=text,
        )

    async def _final(self, t: Transcript) -> None:
        item = self._item(t.segment)
        if item.started and not item.committed:  # the VAD's utterance_end is still to come
            await self._stopped(t.segment, round(t.end * 1000))
        await self._committed(t.segment)
        await self._delta(t.segment, item, t.text.split())
        await self._completed(t.segment, item, t.text, t.end - t.start)

    async def _completed(self, segment: int, item: Item, text: str, seconds: float) -> None:
        item.completed = True
        await self._send(
            "conversation.item.input_audio_transcription.completed",
            item_id=self.item_id(segment),
            content_index=0,
            transcript=text,
            usage={"type": "duration", "seconds": round(max(0.0, seconds), 3)},
        )

    async def _after_finals(self) -> None:
        """Released segments that were items but had no text complete empty; forget them."""
        nxt = self.downlink.reorder.next
        for segment in range(self._released, nxt):
            item = self._items.pop(segment, None)
            if item is not None and not item.completed and self.client.connected():
                await self._committed(segment)
                await self._completed(segment, item, "", 0.0)
        self._released = max(self._released, nxt)


# -- opening a session -----------------------------------------------------------------------


def realtime_credential(ws: WebSocket) -> str | None:
    """``Authorization: Bearer``, ``?token=``, or the browser's ``openai-insecure-api-key.<key>``
    subprotocol."""
    found = credential_from(dict(ws.headers), dict(ws.query_params))
    if found:
        return found
    for proto in ws.scope.get("subprotocols", []):
        if proto.startswith(KEY_SUBPROTOCOL):
            return proto[len(KEY_SUBPROTOCOL) :] or None
    return None


async def _refuse(ws: WebSocket, exc: ProtocolError) -> None:
    await ws.send_json(error_event(exc))
    await ws.close(exc.close_code)


async def open_realtime(ws: WebSocket) -> tuple[RealtimeSession, Principal] | None:
    """Accept (with the ``realtime`` subprotocol where offered), check the intent, origin,
    credentials and admission; refusals are error events and a close code."""
    offered = ws.scope.get("subprotocols", [])
    await ws.accept(subprotocol="realtime" if "realtime" in offered else None)
    ctx: GatewayContext = ws.app.state.ctx
    assert ctx.auth is not None
    intent = ws.query_params.get("intent", "transcription")
    if intent != "transcription":
        await _refuse(
            ws,
            ProtocolError(
                "unsupported_intent",
                f"intent {intent[:40]!r} is not served: this endpoint transcribes "
                "(?intent=transcription)",
                CLOSE_UNSUPPORTED,
            ),
        )
        return None
    try:
        ctx.auth.check_origin(ws.headers.get("origin"))
        principal = ctx.auth.authenticate(realtime_credential(ws))
    except ProtocolError as exc:
        await _refuse(ws, exc)
        return None
    refused = await admission_error(ctx)
    if refused is not None:
        await _refuse(ws, refused)
        return None
    return RealtimeSession(ws, ctx), principal
