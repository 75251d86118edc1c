"""A benchmark client of ``/v1/realtime?intent=transcription`` (OpenAI's Realtime transcription):
streams 24 kHz PCM in base64 appends at real-time pace, with server VAD, and records when each
item's ``input_audio_buffer.speech_stopped`` and its
``conversation.item.input_audio_transcription.completed`` arrived."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import websockets

from bench.stack import BenchStack, Sampler
from bench.stats import summary
from shared.audio import StreamResampler
from whisper_streaming.evaluation import wer

RATE = 24_000
"""What OpenAI's clients send (``audio/pcm``)."""


@dataclass
class Item:
    stopped: float | None = None
    completed: float | None = None
    transcript: str = ""


@dataclass
class RealtimeRun:
    name: str
    items: dict[str, Item] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    max_send_lag_s: float = 0.0
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while every item that started has completed."""

    @property
    def text(self) -> str:
        ordered = sorted(self.items.items(), key=lambda kv: int(kv[0].rsplit("_", 1)[1]))
        return " ".join(i.transcript.strip() for _id, i in ordered if i.transcript.strip())

    def done(self) -> bool:
        return bool(self.items) and all(i.completed is not None for i in self.items.values())


def realtime_url(stack: BenchStack) -> str:
    return stack.ws_url.rsplit("/v1/", 1)[0] + "/v1/realtime?intent=transcription"


async def stream_realtime(
    url: str,
    name: str,
    pcm16k: bytes,
    *,
    chunk_ms: int = 20,
    silence_ms: int = 500,
    delay: float = 0.0,
    timeout: float = 240.0,
) -> RealtimeRun:
    """Stream ``pcm16k`` (16 kHz PCM16, resampled here to 24 kHz first) at real time; then wait
    until every item that started has completed (or ``timeout``)."""
    if delay:
        await asyncio.sleep(delay)
    resampler = StreamResampler(16_000, RATE)
    pcm = resampler.push(pcm16k) + resampler.flush()
    run = RealtimeRun(name)
    step = RATE * 2 * chunk_ms // 1000
    update = {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": RATE},
                    "transcription": {"model": "whisper-1", "language": "en"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms},
                }
            },
        },
    }
    async with websockets.connect(url, max_size=None, open_timeout=60) as ws:
        await ws.send(json.dumps(update))

        async def receive() -> None:
            async for raw in ws:
                _record(run, json.loads(raw), time.monotonic())

        receiver = asyncio.create_task(receive())
        started = time.monotonic()
        for i in range(0, len(pcm), step):
            due = started + (i + step) / 2 / RATE
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                run.max_send_lag_s = max(run.max_send_lag_s, -wait)
            chunk = base64.b64encode(pcm[i : i + step]).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        # close what is still open (a commit is the client's end of turn), give the VAD worker's
        # last events a moment to arrive, then wait for every item's transcript
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await asyncio.sleep(1.0)
        try:
            await asyncio.wait_for(run.settled.wait(), timeout)
        except TimeoutError:
            run.errors.append({"code": "bench_timeout", "message": f"items open after {timeout}s"})
        receiver.cancel()
    return run


def _record(run: RealtimeRun, event: dict[str, Any], now: float) -> None:
    kind = event.get("type", "")
    if kind == "input_audio_buffer.speech_started":
        run.items.setdefault(event["item_id"], Item())
        run.settled.clear()
    elif kind == "input_audio_buffer.speech_stopped":
        run.items.setdefault(event["item_id"], Item()).stopped = now
    elif kind == "conversation.item.input_audio_transcription.completed":
        item = run.items.setdefault(event["item_id"], Item())
        item.completed, item.transcript = now, event.get("transcript", "")
        if run.done():
            run.settled.set()
    elif kind == "error":
        run.errors.append(event.get("error", event))


def realtime_endpoint(
    stack: BenchStack,
    streams: list[Any],
    pcms: list[bytes],
    *,
    chunk_ms: int = 20,
    stagger_s: float = 0.25,
) -> dict[str, Any]:
    """All streams at once through the realtime endpoint: ``completed`` after ``speech_stopped``
    per item (items that stopped on silence; a max-length cut has no ``speech_stopped``)."""
    url = realtime_url(stack)

    async def go() -> list[RealtimeRun]:
        return await asyncio.gather(
            *(
                stream_realtime(url, s.name, pcm, chunk_ms=chunk_ms, delay=i * stagger_s)
                for i, (s, pcm) in enumerate(zip(streams, pcms, strict=True))
            )
        )

    with Sampler(stack) as sampler:
        runs = asyncio.run(go())
    latencies = [
        i.completed - i.stopped
        for r in runs
        for i in r.items.values()
        if i.stopped is not None and i.completed is not None
    ]
    w = wer((s.reference, r.text) for s, r in zip(streams, runs, strict=True))
    return {
        "endpoint": "realtime",
        "streams": len(streams),
        "items": sum(len(r.items) for r in runs),
        "items_stopped": sum(1 for r in runs for i in r.items.values() if i.stopped is not None),
        "items_without_completed": sum(
            1 for r in runs for i in r.items.values() if i.completed is None
        ),
        "completed_after_stopped_s": summary(latencies),
        "wer": round(w.wer * 100, 2),
        "client_max_send_lag_s": round(max(r.max_send_lag_s for r in runs), 3),
        "errors": [e for r in runs for e in r.errors],
        "texts": {r.name: r.text for r in runs},
        "resources": sampler.result(),
    }


REALTIME_HEADER = [
    "streams", "completed after speech_stopped p50 (s)", "p95 (s)", "max (s)",
    "items completed", "WER %", "service CPU (cores)",
]  # fmt: skip


def realtime_rows(levels: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            lv["streams"],
            lv["completed_after_stopped_s"]["p50"],
            lv["completed_after_stopped_s"]["p95"],
            lv["completed_after_stopped_s"]["max"],
            f"{lv['items'] - lv['items_without_completed']}/{lv['items']}",
            lv["wer"],
            lv["resources"]["cores_busy"],
        ]
        for lv in levels
    ]
