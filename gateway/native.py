"""The native endpoint ``/v1/listen``: interim results, VAD events, control messages, resumable
sessions. Protocol reference with examples: docs/protocol.md."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.websockets import WebSocket

from gateway.agreement import LocalAgreement
from gateway.native_protocol import (
    PROTOCOL_VERSION,
    Finalize,
    KeepAlive,
    NativeConfig,
    NativeEof,
    NativeOptions,
    parse_native_frame,
    parse_options,
)
from gateway.ordering import ReorderBuffer
from gateway.protocol import CLOSE_INVALID_PAYLOAD, CLOSE_POLICY, ProtocolError
from gateway.session import STOP, GatewayContext, Session, final_message
from shared import metrics
from shared.audio import SAMPLE_RATE
from shared.schemas import Transcript, VadEvent

log = logging.getLogger(__name__)

KEEPALIVE_EVERY_S = 5.0


class NativeSession(Session):
    endpoint = "/v1/listen"

    def __init__(self, ws: WebSocket, ctx: GatewayContext, options: NativeOptions) -> None:
        super().__init__(ws, ctx, session_id=options.session_id)
        self.options = options
        self.resuming = options.session_id is not None
        self._agreements: dict[int, LocalAgreement] = {}
        self._partial_rev: dict[int, int] = {}
        self._held: dict[int, dict[str, Any]] = {}
        self._last_keepalive = 0.0
        self._attach = 1
        self._apply(options)

    def _apply(self, options: NativeOptions) -> None:
        self.options = options
        self.language = options.language
        self.interim_results = options.interim_results
        self.vad_events = options.vad_events
        self.diarize = options.diarize
        self.min_silence_ms = options.endpointing
        self.set_input_rate(options.sample_rate)

    # -- open and resume -----------------------------------------------------------------------

    async def on_open(self) -> None:
        if self.resuming:
            await self._resume_state()
        await self.send(
            {
                "type": "session",
                "session_id": self.session_id,
                "protocol_version": PROTOCOL_VERSION,
                "resumed": self.resuming,
                "settings": self.options.public(self.ctx.settings.vad_min_silence_ms),
            }
        )
        if self.resuming:
            await self.catch_up()

    async def _resume_state(self) -> None:
        key = self.keys.session(self.session_id)
        state = await self.ctx.redis.hgetall(key)
        auth = self.ctx.auth
        foreign = auth is not None and auth.enabled and state.get(b"owner") != self.owner.encode()
        if not state or b"state" not in state or foreign:
            raise ProtocolError(
                "unknown_session",
                f"session {self.session_id} does not exist or has expired",
                CLOSE_POLICY,
            )
        self.announced = True
        self.reorder = ReorderBuffer(first=self.options.last_segment + 1)
        self.samples = int(state.get(b"samples", b"0"))
        self.seq = int(state.get(b"seq", state.get(b"vad_seq", b"0")))
        if state[b"state"] == b"ended":
            self.ended = True
            if b"segments" in state:
                self.total = int(state[b"segments"])
                self.audio_seconds = float(state.get(b"audio_seconds", b"0"))
            return
        async with self.ctx.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "attach", 1)
            pipe.hset(key, "state", "attached")
            attach, _ = await pipe.execute()
        self._attach = int(attach)
        log.info("session=%s resumed after segment %d", self.session_id, self.options.last_segment)

    async def on_dropped(self) -> bool:
        grace = self.ctx.settings.resume_grace_s
        if grace <= 0:
            return False
        key = self.keys.session(self.session_id)
        await self.ctx.redis.hset(
            key, mapping={"state": "detached", "samples": self.samples, "seq": self.seq}
        )
        self.ctx.background.spawn(self._expire_after(grace), f"grace-{self.session_id}")
        log.info("session=%s dropped; resumable for %.0fs", self.session_id, grace)
        return True

    async def _expire_after(self, grace: float) -> None:
        await asyncio.sleep(grace)
        key = self.keys.session(self.session_id)
        attach, state = await self.ctx.redis.hmget(key, ["attach", "state"])
        if attach is None or int(attach) != self._attach or state != b"detached":
            return  # resumed (or already ended) meanwhile
        await self.end_audio("abandoned")  # its buffer was flushed when the socket dropped
        log.info("session=%s not resumed within %.0fs: ended", self.session_id, grace)

    # -- input -----------------------------------------------------------------------------------

    async def handle_text(self, text: str) -> str | None:
        msg = parse_native_frame(text)
        if isinstance(msg, NativeEof):
            return STOP
        if isinstance(msg, Finalize):
            await self.control("finalize")
        elif isinstance(msg, KeepAlive):
            now = time.monotonic()
            if now - self._last_keepalive >= KEEPALIVE_EVERY_S:
                self._last_keepalive = now
                await self.control("keepalive")
        elif isinstance(msg, NativeConfig):
            if self.announced:
                raise ProtocolError(
                    "late_config",
                    "a config frame must come before any audio",
                    CLOSE_INVALID_PAYLOAD,
                )
            values = {
                k: v for k, v in msg.values.items() if k not in ("session_id", "last_segment")
            }
            self._apply(parse_options(values, self.options, self.ctx.settings.endpointing_min_ms))
        return None

    # -- output ----------------------------------------------------------------------------------

    async def deliver_final(self, t: Transcript) -> None:
        msg = final_message(t)
        msg["speech_final"] = t.speech_final
        await self.send(msg)

    async def on_partial(self, t: Transcript) -> None:
        if not self.options.interim_results:
            return
        seg = t.segment
        if t.rev <= self._partial_rev.get(seg, 0):
            return  # an older revision arriving late
        self._partial_rev[seg] = t.rev
        agreement = self._agreements.setdefault(seg, LocalAgreement())
        stable = agreement.update(t.text)
        msg = {
            "type": "partial",
            "session_id": self.session_id,
            "segment": seg,
            "text": agreement.display(t.text),
            "stable_text": stable,
            "start": t.start,
            "end": t.end,
        }
        if seg == self.reorder.next:
            await self._send_partial(msg)
        else:  # an earlier segment's final is still on its way: keep order per the display
            self._held[seg] = msg

    async def _send_partial(self, msg: dict[str, Any]) -> None:
        await self.send(msg)
        arrived = self.clock.arrival(int(msg["end"] * SAMPLE_RATE))
        if arrived is not None:
            metrics.PARTIAL_LATENCY.observe(max(0.0, time.monotonic() - arrived))

    async def after_finals(self) -> None:
        nxt = self.reorder.next
        for seg in [s for s in self._held if s < nxt]:
            del self._held[seg]
        for seg in [s for s in self._agreements if s < nxt]:
            del self._agreements[seg]
        held = self._held.pop(nxt, None)
        if held is not None:
            await self._send_partial(held)

    async def on_vad_event(self, event: VadEvent) -> None:
        if self.options.vad_events:
            await self.send(
                {
                    "type": event.kind,
                    "session_id": self.session_id,
                    "segment": event.segment,
                    "timestamp": event.time,
                }
            )

    async def on_closing(self) -> None:
        await self.send(
            {
                "type": "closed",
                "session_id": self.session_id,
                "segments": self.total,
                "audio_seconds": self.audio_seconds,
            }
        )
