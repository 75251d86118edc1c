"""A benchmark client of ``/v1/listen`` (Deepgram's live protocol with our extensions): streams PCM
at a given pace like a microphone would and records, for every message, when it arrived, and for
every frame, when it left; optionally sends ``Finalize`` at given points of the audio (the end of
each utterance, as a voice agent with its own end-of-turn detection does)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import websockets

from bench.stats import Message
from shared.audio import SAMPLE_RATE
from whisper_streaming.listen import CLOSE_STREAM, FINALIZE, flatten


@dataclass
class StreamRun:
    name: str
    audio_seconds: float
    messages: list[Message] = field(default_factory=list)
    sent: list[tuple[float, float]] = field(default_factory=list)
    """(audio seconds sent so far, monotonic clock) per frame."""
    errors: list[dict[str, Any]] = field(default_factory=list)
    closed: dict[str, Any] | None = None
    final_messages: list[dict[str, Any]] = field(default_factory=list)
    """The finals as they came (language, translation …), in arrival order."""
    started: float = 0.0
    finished: float = 0.0
    max_send_lag_s: float = 0.0
    """How far the client fell behind its own real-time schedule (a loaded client skews latency)."""
    finalized: list[tuple[float, float]] = field(default_factory=list)
    """(audio seconds, monotonic clock) of each ``Finalize`` sent."""

    @property
    def finals(self) -> list[Message]:
        return sorted((m for m in self.messages if m.type == "final"), key=lambda m: m.segment)

    @property
    def text(self) -> str:
        return " ".join(m.text.strip() for m in self.finals if m.text.strip())

    @property
    def wall_seconds(self) -> float:
        return self.finished - self.started


async def stream(
    url: str,
    name: str,
    pcm: bytes,
    *,
    speed: float = 1.0,
    chunk_ms: int = 20,
    interim: bool = True,
    language: str | None = "en",
    delay: float = 0.0,
    timeout: float = 300.0,
    extra: dict[str, str] | None = None,
    finalize_at: list[float] | None = None,
) -> StreamRun:
    """Stream ``pcm`` (16 kHz PCM16 mono). At ``speed`` > 0 a frame leaves when its last sample
    would have been captured (real time × speed); at 0, as fast as the socket takes it. After
    the frame that reaches each second of ``finalize_at``, ``Finalize``. Then ``CloseStream``,
    and everything until ``Metadata`` and the server's close. ``language`` None: detection;
    ``extra``: more query parameters (``translate``)."""
    if delay:
        await asyncio.sleep(delay)
    run = StreamRun(name, len(pcm) / 2 / SAMPLE_RATE)
    params: dict[str, Any] = {"interim_results": str(interim).lower(), "sample_rate": SAMPLE_RATE}
    if language is not None:
        params["language"] = language
    query = urlencode(params | (extra or {}))
    chunk = SAMPLE_RATE * 2 * chunk_ms // 1000
    pending = sorted(finalize_at or [])
    async with websockets.connect(f"{url}?{query}", max_size=None, open_timeout=60) as ws:

        async def receive() -> None:
            async for raw in ws:
                _record(run, raw, time.monotonic())

        receiver = asyncio.create_task(receive())
        run.started = time.monotonic()
        for i in range(0, len(pcm), chunk):
            part = pcm[i : i + chunk]
            audio_s = (i + len(part)) / 2 / SAMPLE_RATE
            if speed > 0:
                due = run.started + audio_s / speed
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                else:
                    run.max_send_lag_s = max(run.max_send_lag_s, -wait)
            if receiver.done():
                break
            await ws.send(part)
            run.sent.append((audio_s, time.monotonic()))
            while pending and pending[0] <= audio_s:
                pending.pop(0)
                await ws.send(FINALIZE)
                run.finalized.append((audio_s, time.monotonic()))
        if not receiver.done():
            await ws.send(CLOSE_STREAM)
        try:
            await asyncio.wait_for(receiver, timeout)
        except websockets.ConnectionClosed:
            pass
        except TimeoutError:
            run.errors.append({"code": "bench_timeout", "message": f"no close in {timeout}s"})
            receiver.cancel()
    run.finished = time.monotonic()
    return run


def _record(run: StreamRun, raw: str | bytes, now: float) -> None:
    msg = flatten(json.loads(raw))
    kind = msg.get("type")
    if kind == "final":
        run.final_messages.append(msg)
    if kind in ("partial", "final"):
        run.messages.append(
            Message(
                kind,
                int(msg["segment"]),
                float(msg["start"]),
                float(msg["end"]),
                msg.get("text", ""),
                now,
                float(msg.get("processing_time") or 0.0),
                bool(msg.get("from_finalize")),
            )
        )
    elif kind == "error":
        run.errors.append(msg)
    elif kind == "closed":
        run.closed = msg
