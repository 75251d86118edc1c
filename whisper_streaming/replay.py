"""Replay recorded files through the live WebSocket, as a client would stream them.

Each file is decoded (any format, rate and channel count FFmpeg reads), resampled to 16 kHz mono
PCM16 and sent in ``chunk_ms`` frames, at real-time pace times ``speed`` (0 = as fast as the
service takes it), to ``/v1/listen`` (the default: Deepgram's live protocol, then
``CloseStream``) or to the predecessor-compatible ``/`` or ``/ws`` (a config frame, then
``{"type": "eof"}``). Finals are collected until the server closes the socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import websockets

from shared.audio import SAMPLE_RATE, decode_file, float32_to_pcm16
from shared.formats import render
from shared.settings import Settings
from whisper_streaming.listen import CLOSE_STREAM, flatten, is_listen


@dataclass
class ReplayResult:
    finals: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    close_code: int | None = None
    final_latencies: list[float] = field(default_factory=list)
    """Per final: seconds from sending the audio at its ``end`` to receiving it."""

    @property
    def text(self) -> str:
        return " ".join(f["text"].strip() for f in self.finals if f.get("text"))


def load_pcm(path: str | Path) -> bytes:
    return float32_to_pcm16(decode_file(path))


def listen_url(url: str, language: str | None) -> str:
    """``/v1/listen`` with this client's audio format (and language) as query parameters."""
    params: dict[str, Any] = {"encoding": "linear16", "sample_rate": SAMPLE_RATE}
    if language:
        params["language"] = language
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _keep(result: ReplayResult, msg: dict[str, Any], sent_at: list[tuple[float, float]]) -> None:
    if msg.get("type") == "error":
        result.errors.append(msg)
    elif msg.get("type") != "ignored":
        result.finals.append(msg)
        end = float(msg.get("end", 0.0))
        for audio_s, t in sent_at:
            if audio_s >= end:
                result.final_latencies.append(time.monotonic() - t)
                break


def _message(raw: str | bytes, listen: bool) -> dict[str, Any]:
    """A final or an error as this client keeps it (the rest of /v1/listen is ``ignored``)."""
    if not listen:
        return dict(json.loads(raw))
    msg = flatten(json.loads(raw))
    return msg if msg.get("type") in ("final", "error") else {"type": "ignored"}


async def stream_pcm(
    url: str,
    pcm: bytes,
    *,
    speed: float = 1.0,
    chunk_ms: int = 100,
    language: str | None = None,
    send_config: bool = True,
    timeout: float = 300.0,
) -> ReplayResult:
    """Stream 16 kHz PCM16 mono to ``url`` and collect what comes back."""
    result = ReplayResult(audio_seconds=len(pcm) / 2 / SAMPLE_RATE)
    listen = is_listen(url)
    if listen:  # Deepgram's protocol: the settings are query parameters, not a config frame
        url, send_config = listen_url(url, language), False
    chunk = SAMPLE_RATE * 2 * chunk_ms // 1000
    sent_at: list[tuple[float, float]] = []  # (audio seconds sent so far, monotonic time)
    started = time.monotonic()
    async with websockets.connect(url, max_size=None, open_timeout=30) as ws:

        async def receive() -> None:
            async for raw in ws:
                _keep(result, _message(raw, listen), sent_at)

        receiver = asyncio.create_task(receive())
        if send_config:
            config = {
                "type": "config",
                "data": {"sampleRate": SAMPLE_RATE, "channels": 1, "language": language},
            }
            await ws.send(json.dumps(config))
        for i in range(0, len(pcm), chunk):
            if receiver.done():
                break
            await ws.send(pcm[i : i + chunk])
            audio_s = (i + len(pcm[i : i + chunk])) / 2 / SAMPLE_RATE
            sent_at.append((audio_s, time.monotonic()))
            if speed > 0:
                delay = started + audio_s / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        if not receiver.done():
            await ws.send(CLOSE_STREAM if listen else json.dumps({"type": "eof"}))
        try:
            await asyncio.wait_for(receiver, timeout)
        except websockets.ConnectionClosed:
            pass
        result.close_code = ws.close_code
    result.wall_seconds = time.monotonic() - started
    return result


async def _replay_all(
    urls_files: list[tuple[str, Path]], args: argparse.Namespace
) -> list[ReplayResult]:
    results = []
    for url, path in urls_files:
        pcm = await asyncio.to_thread(load_pcm, path)
        results.append(
            await stream_pcm(
                url, pcm, speed=args.speed, chunk_ms=args.chunk_ms, language=args.language,
                timeout=args.timeout,
            )
        )  # fmt: skip
    return results


def run_replay(settings: Settings, args: argparse.Namespace) -> int:
    url = args.url or f"ws://{settings.host}:{settings.port}/v1/listen"
    files = [Path(f) for f in args.files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    results = asyncio.run(_replay_all([(url, f) for f in files], args))
    out_dir = Path(args.output) if args.output and len(files) > 1 else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    code = 0
    for path, res in zip(files, results, strict=True):
        for err in res.errors:
            print(f"{path}: server error {err.get('code')}: {err.get('message')}", file=sys.stderr)
            code = 1
        text = render(args.format, res.finals)
        if out_dir:
            (out_dir / f"{path.stem}.{args.format}").write_text(text)
        elif args.output:
            Path(args.output).write_text(text)
        else:
            sys.stdout.write(text)
        print(
            f"{path}: {res.audio_seconds:.1f}s audio in {res.wall_seconds:.1f}s, "
            f"{len(res.finals)} finals",
            file=sys.stderr,
        )
    return code
