"""``/v1/listen``: Deepgram's live protocol with our extensions (interim results with their stable
prefix, VAD events, Finalize, resumable sessions, diarization). Protocol reference with
examples: docs/protocol.md; message shapes: :mod:`gateway.native_protocol`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.websockets import WebSocket

from gateway import native_protocol as dg
from gateway.agreement import LocalAgreement
from gateway.attachment import DETACH_LUA, take_over
from gateway.auth import Principal
from gateway.context import GatewayContext
from gateway.downlink import ResultsDownlink
from gateway.encodings import parse_input_format
from gateway.native_protocol import (
    PROTOCOL_VERSION,
    CloseStream,
    Configure,
    Finalize,
    KeepAlive,
    ListenOptions,
    default_endpointing,
    parse_frame,
    turn_message,
)
from gateway.protocol import CLOSE_POLICY, ProtocolError, translation_task
from gateway.session import ClientSocket, run_socket
from gateway.uplink import AudioUplink
from shared import metrics, session_state
from shared.audio import SAMPLE_RATE
from shared.schemas import Transcript, TurnEvent, VadEvent
from shared.session_state import State

log = logging.getLogger(__name__)

KEEPALIVE_EVERY_S = 5.0


VadHandler = Callable[["NativeSession", VadEvent], Awaitable[None]]


async def _speech_started(session: NativeSession, event: VadEvent) -> None:
    if session.options.vad_events:
        await session.client.send(dg.speech_started(session.session_id, event.segment, event.time))


async def _utterance_end(session: NativeSession, event: VadEvent) -> None:
    if session.options.utterance_end_ms is not None:
        await session.utterance_end(event)


VAD_MESSAGES: dict[str, VadHandler] = {
    "speech_started": _speech_started,
    "utterance_end": _utterance_end,
}
"""The server messages of each VAD event kind. More kinds (turn-taking: an eager end of turn)
add an entry here; a kind without one is not sent."""


class NativeSession:
    """Deepgram's live protocol over an :class:`AudioUplink` and a :class:`ResultsDownlink`;
    keeps the partials' LocalAgreement per segment (their ``stable_transcript``) and holds a
    later segment's partial until the earlier segment's final was sent."""

    endpoint = "/v1/listen"

    def __init__(self, ws: WebSocket, ctx: GatewayContext, options: ListenOptions) -> None:
        self.ctx = ctx
        self.session_id = options.session_id or uuid.uuid4().hex
        self.client = ClientSocket(ws)
        self.uplink = AudioUplink(ctx, self.session_id, self.endpoint)
        self.downlink = ResultsDownlink(
            ctx,
            self.session_id,
            on_final=self._final,
            on_partial=self._partial,
            on_vad_event=self._vad_event,
            on_turn_event=self._turn_event,
            after_finals=self._after_finals,
            listening=self.client.connected,
            clock=self.uplink.clock,
            attachment=self.uplink.attachment,
        )
        self.principal: Principal | None = None
        """Whose session (set by the endpoint): a resume re-asserts the key's slot for it."""
        self.options = options
        self.resuming = options.session_id is not None
        self._agreements: dict[int, LocalAgreement] = {}
        self._partial_rev: dict[int, int] = {}
        self._held: dict[int, dict[str, Any]] = {}
        self._ends_held: dict[int, VadEvent] = {}
        """``UtteranceEnd`` of a segment whose final is not sent yet (Deepgram's order)."""
        self._last_word_end: dict[int, float] = {}
        """Per released segment not yet ended: its final's last word's end."""
        self._last_keepalive = 0.0
        self._received: str | None = None
        self.model = ctx.settings.asr_model or "tiny.en"
        self.created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self._apply(options)

    def _apply(self, options: ListenOptions) -> None:
        self.options = options
        up = self.uplink
        up.language = options.language
        up.task = translation_task(options.translate, options.language, "translate")
        up.interim_results = options.interim_results
        up.vad_events = options.vad_events or options.utterance_end_ms is not None
        up.diarize = options.diarize
        up.min_silence_ms = options.endpoint_ms
        up.smart_endpointing = options.smart_endpointing
        up.eager_eot = options.eager_eot
        up.set_input_format(parse_input_format(options.encoding, options.sample_rate))
        up.keyterms = list(options.keyterms)  # within the bounds already (parse_options)

    async def run(self) -> None:
        await run_socket(self.ctx, self)

    # -- open and resume -----------------------------------------------------------------------

    async def open(self) -> None:
        if self.resuming:
            await self._resume_state()
        if self.options.session_started:
            await self.client.send(
                {
                    "type": "SessionStarted",
                    "session_id": self.session_id,
                    "request_id": dg.request_id(self.session_id),
                    "protocol_version": PROTOCOL_VERSION,
                    "resumed": self.resuming,
                    "audio_received": round(self.uplink.written / SAMPLE_RATE, 3),
                    "settings": self.options.public(default_endpointing(self.ctx.settings)),
                }
            )
        if self.resuming:
            await self.downlink.catch_up()

    async def _resume_state(self) -> None:
        key = self.ctx.keys.session(self.session_id)
        view = await session_state.read(self.ctx.redis, key)
        auth = self.ctx.auth
        foreign = auth is not None and auth.enabled and view.owner != self.uplink.owner
        if not view.exists or foreign:
            raise ProtocolError(
                "unknown_session",
                f"session {self.session_id} does not exist or has expired",
                CLOSE_POLICY,
            )
        self.downlink.start_at(self.options.last_segment + 1)
        if view.state != State.ENDED:
            # Attach this socket, replacing any other (a half-open one included), in one Lua
            # step that also tells the others; the stream continues after the last entry
            # accepted from the old socket (gateway/attachment.py).
            self.uplink.attachment.taking_over = True  # the router's queue is registered
            taken = await take_over(
                self.ctx.redis,
                key,
                self.ctx.keys.results(self.session_id),
                self.session_id,
                self.uplink.attachment.token,
                self.ctx.settings.session_ttl_s,
            )
            if taken is not None:
                seq = taken.seq if taken.seq is not None else (view.vad_seq or 0)
                self.uplink.resume(
                    samples=taken.samples or 0, seq=seq, ended=False, pool=view.pool or ""
                )
                if self.principal is not None and self.ctx.key_sessions is not None:
                    # the old socket may have freed the key's slot before the takeover
                    await self.ctx.key_sessions.hold(self.principal, self.session_id)
                log.info(
                    "session=%s resumed after segment %d (attach %d%s)",
                    self.session_id,
                    self.options.last_segment,
                    taken.attach,
                    ", replacing a live socket"
                    if taken.previous and view.state == State.ATTACHED
                    else "",
                )
                return
            view = await session_state.read(self.ctx.redis, key)  # it ended meanwhile
        seq = view.seq if view.seq is not None else (view.vad_seq or 0)
        self.uplink.resume(samples=view.samples or 0, seq=seq, ended=True, pool=view.pool or "")
        if view.segments is not None:
            self.downlink.ended(view.segments, view.audio_seconds or 0.0)

    async def dropped(self) -> bool:
        grace = self.ctx.settings.resume_grace_s
        if grace <= 0:
            return False
        key = self.ctx.keys.session(self.session_id)
        token = self.uplink.attachment.token
        if not await self.ctx.redis.eval(DETACH_LUA, 1, key, token):
            self.uplink.attachment.lost.set()
            return True  # another socket resumed the session already: it is not ours to keep
        self.ctx.background.spawn(self._expire_after(grace), f"grace-{self.session_id}")
        log.info("session=%s dropped; resumable for %.0fs", self.session_id, grace)
        return True

    async def _expire_after(self, grace: float) -> None:
        await asyncio.sleep(grace)
        key = self.ctx.keys.session(self.session_id)
        view = await session_state.read(self.ctx.redis, key)
        if view.conn not in (None, self.uplink.attachment.token) or view.state != State.DETACHED:
            return  # resumed (or already ended) meanwhile
        try:
            await self.uplink.end("abandoned")  # its buffer was flushed when the socket dropped
        except ProtocolError:
            return  # resumed just now
        log.info("session=%s not resumed within %.0fs: ended", self.session_id, grace)

    # -- input -----------------------------------------------------------------------------------

    async def handle_text(self, text: str) -> bool:
        self._received = text
        msg = parse_frame(text)
        self._received = None
        if isinstance(msg, CloseStream):
            return True
        if isinstance(msg, Finalize):
            await self.uplink.control("finalize")
        elif isinstance(msg, KeepAlive):
            now = time.monotonic()
            if now - self._last_keepalive >= KEEPALIVE_EVERY_S:
                self._last_keepalive = now
                await self.uplink.control("keepalive")
        elif isinstance(msg, Configure):
            if msg.keyterms is not None:
                self.options = dataclasses.replace(self.options, keyterms=msg.keyterms)
                await self.uplink.set_keyterms(list(msg.keyterms))  # for what is cut from here
            await self.client.send(
                {
                    "type": "ConfigureSuccess",
                    "request_id": dg.request_id(self.session_id),
                    "keyterms": list(self.options.keyterms),
                }
            )
        return False

    def error_frame(self, exc: ProtocolError) -> dict[str, Any]:
        return dg.error(exc, self._received)

    def close_for(self, exc: ProtocolError) -> tuple[int, str]:
        return dg.close_for(exc)

    # -- output ----------------------------------------------------------------------------------

    async def _final(self, t: Transcript) -> None:
        await self._send_ends_before(t.segment)  # of earlier segments released with it, empty
        await self.client.send(
            dg.results(t, text=t.text, is_final=True, options=self.options, model=self.model)
        )
        if t.words and self.options.utterance_end_ms is not None:
            self._last_word_end[t.segment] = t.words[-1].end
        await self._send_ends_before(t.segment + 1)

    async def utterance_end(self, event: VadEvent) -> None:
        """Deepgram sends ``UtteranceEnd`` after the utterance's finalized words: one whose
        final is still on its way (the VAD's event often reaches the gateway first) is held
        until that final was sent (:meth:`_final`, or :meth:`_after_finals` for a final without
        text); ``last_word_end`` is the final's last
        word's end where it has words, else the end of the segment."""
        if event.segment >= self.downlink.reorder.next:
            self._ends_held[event.segment] = event
        else:
            await self._send_end(event)

    async def _send_ends_before(self, segment: int) -> None:
        for seg in sorted(s for s in self._ends_held if s < segment):
            await self._send_end(self._ends_held.pop(seg))

    async def _send_end(self, event: VadEvent) -> None:
        end = self._last_word_end.pop(event.segment, event.time)
        for seg in [s for s in self._last_word_end if s < event.segment]:
            del self._last_word_end[seg]  # segments cut at the maximum length: no end of their own
        await self.client.send(dg.utterance_end(self.session_id, event.segment, end))

    async def _partial(self, t: Transcript) -> None:
        if not self.options.interim_results:
            return
        seg = t.segment
        if t.rev <= self._partial_rev.get(seg, 0):
            return  # an older revision arriving late
        self._partial_rev[seg] = t.rev
        agreement = self._agreements.setdefault(seg, LocalAgreement())
        stable = agreement.update(t.text)
        msg = dg.results(
            t,
            text=agreement.display(t.text),
            is_final=False,
            options=self.options,
            model=self.model,
            stable_text=stable,
        )
        if seg == self.downlink.reorder.next:
            await self._send_partial(msg)
        else:  # an earlier segment's final is still on its way: keep order per the display
            self._held[seg] = msg

    async def _send_partial(self, msg: dict[str, Any]) -> None:
        await self.client.send(msg)
        arrived = self.uplink.clock.arrival(int(msg["end"] * SAMPLE_RATE))
        if arrived is not None:
            metrics.PARTIAL_LATENCY.observe(max(0.0, time.monotonic() - arrived))

    async def _after_finals(self) -> None:
        nxt = self.downlink.reorder.next
        for seg in [s for s in self._held if s < nxt]:
            del self._held[seg]
        for seg in [s for s in self._agreements if s < nxt]:
            del self._agreements[seg]
        await self._send_ends_before(nxt)
        held = self._held.pop(nxt, None)
        if held is not None:
            await self._send_partial(held)

    async def _vad_event(self, event: VadEvent) -> None:
        handler = VAD_MESSAGES.get(event.kind)
        if handler is not None:
            await handler(self, event)

    async def _turn_event(self, event: TurnEvent) -> None:
        if self.options.eager_eot:
            await self.client.send(turn_message(event))

    async def closing(self) -> None:
        await self.client.send(
            dg.metadata(
                self.session_id,
                model=self.model,
                sha256=self.uplink.received.hexdigest(),
                created=self.created,
                duration=self.downlink.audio_seconds,
                segments=self.downlink.total,
            )
        )
