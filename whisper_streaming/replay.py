"""Replay recorded files through the live WebSocket, as a client would stream them.

Each file is decoded (any format, rate and channel count FFmpeg reads), resampled to 16 kHz mono
PCM16 and sent in ``chunk_ms`` frames, at real-time pace times ``speed`` (0 = as fast as the
service takes it), to ``/v1/listen`` (the default: Deepgram's live protocol, then
``CloseStream``) or to the predecessor-compatible ``/`` or ``/ws`` (a config frame, then
``{"type": "eof"}``). Finals are collected until the server closes the socket.

Output (:class:`LiveOutput`): each final's text is printed on stdout as it arrives; srt, vtt and
json documents need every final, so they are written when a file is done (to ``-o``, or to stdout,
which then carries only the document). On a terminal, stderr shows a progress bar redrawn in place.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
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


def listen_url(url: str, language: str | None, interim: bool = False) -> str:
    """``/v1/listen`` with this client's audio format (and language, and interim results) as
    query parameters."""
    params: dict[str, Any] = {"encoding": "linear16", "sample_rate": SAMPLE_RATE}
    if language:
        params["language"] = language
    if interim:
        params["interim_results"] = "true"
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _keep(result: ReplayResult, msg: dict[str, Any], sent_at: list[tuple[float, float]]) -> bool:
    """File an error or a final; whether it was a final."""
    if msg.get("type") == "error":
        result.errors.append(msg)
        return False
    if msg.get("type") in ("ignored", "partial"):
        return False
    result.finals.append(msg)
    end = float(msg.get("end", 0.0))
    for audio_s, t in sent_at:
        if audio_s >= end:
            result.final_latencies.append(time.monotonic() - t)
            break
    return True


def _message(raw: str | bytes, listen: bool) -> dict[str, Any]:
    """A final, a partial or an error as this client keeps it (the rest of /v1/listen is
    ``ignored``)."""
    if not listen:
        return dict(json.loads(raw))
    msg = flatten(json.loads(raw))
    return msg if msg.get("type") in ("final", "partial", "error") else {"type": "ignored"}


async def stream_pcm(
    url: str,
    pcm: bytes,
    *,
    speed: float = 1.0,
    chunk_ms: int = 100,
    language: str | None = None,
    send_config: bool = True,
    timeout: float = 300.0,
    headers: dict[str, str] | None = None,
    on_final: Callable[[dict[str, Any]], None] = lambda _msg: None,
    on_sent: Callable[[float], None] = lambda _audio_s: None,
    on_partial: Callable[[dict[str, Any]], None] | None = None,
) -> ReplayResult:
    """Stream 16 kHz PCM16 mono to ``url`` and collect what comes back; ``on_final`` sees each
    final as it arrives, ``on_sent`` the seconds of audio sent so far after each frame, and
    ``on_partial`` (on ``/v1/listen``, which is then asked for interim results) each partial."""
    result = ReplayResult(audio_seconds=len(pcm) / 2 / SAMPLE_RATE)
    listen = is_listen(url)
    if listen:  # Deepgram's protocol: the settings are query parameters, not a config frame
        url, send_config = listen_url(url, language, interim=on_partial is not None), False
    chunk = SAMPLE_RATE * 2 * chunk_ms // 1000
    sent_at: list[tuple[float, float]] = []  # (audio seconds sent so far, monotonic time)
    started = time.monotonic()
    async with websockets.connect(
        url, max_size=None, open_timeout=30, additional_headers=headers
    ) as ws:

        async def receive() -> None:
            async for raw in ws:
                msg = _message(raw, listen)
                if _keep(result, msg, sent_at):
                    on_final(msg)
                elif msg.get("type") == "partial" and on_partial is not None:
                    on_partial(msg)

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
            on_sent(audio_s)
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


def progress_line(name: str, sent_s: float, total_s: float, finals: int, width: int = 24) -> str:
    """``name [#######.....]  42%  12.6/30.0 s  3 finals`` (pure)."""
    share = min(1.0, sent_s / total_s) if total_s > 0 else 1.0
    filled = int(share * width)
    bar = "#" * filled + "." * (width - filled)
    return f"{name} [{bar}] {share:4.0%} {sent_s:6.1f}/{total_s:.1f} s  {finals} finals"


class LiveOutput:
    """What the user sees while files stream: finals as text on ``out`` as they arrive (unless
    ``out`` is where a document goes at the end), and, if ``err`` is a terminal, a line redrawn
    in place (at most every ``redraw_s``): the progress bar and the interim text of the
    utterance in progress, which its final then replaces."""

    def __init__(
        self, out: TextIO, err: TextIO, live_text: bool, progress: bool, redraw_s: float = 0.2
    ) -> None:
        self.out, self.err = out, err
        self.live_text, self.progress = live_text, progress
        self.redraw_s = redraw_s
        self.name, self.total_s, self.sent_s, self.finals = "", 0.0, 0.0, 0
        self._drawn_at = 0.0
        self._bar_shown = False
        self.interim = ""

    def start(self, path: Path, total_s: float) -> None:
        self.name, self.total_s, self.sent_s, self.finals = path.name, total_s, 0.0, 0
        self._draw(force=True)

    def sent(self, audio_s: float) -> None:
        self.sent_s = audio_s
        self._draw()

    def partial(self, msg: dict[str, Any]) -> None:
        self.interim = " ".join(str(msg.get("text", "")).split())
        self._draw(force=True)

    def final(self, msg: dict[str, Any]) -> None:
        self.finals += 1
        self.interim = ""
        text = str(msg.get("text", "")).strip()
        if self.live_text and text:
            self._clear()
            self.out.write(text + "\n")
            self.out.flush()
        self._draw(force=True)

    def note(self, line: str) -> None:
        """A line on stderr (a file's summary, an error), below the bar."""
        self._clear()
        self.err.write(line + "\n")
        self.err.flush()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.progress or (not force and now - self._drawn_at < self.redraw_s):
            return
        self._drawn_at = now
        line = progress_line(self.name, self.sent_s, self.total_s, self.finals)
        if self.interim:  # the newest words, in grey, as much as fits an 80-column line
            room = max(10, 78 - len(line))
            shown = self.interim if len(self.interim) <= room else "…" + self.interim[-room + 1 :]
            line += "  \x1b[2m" + shown + "\x1b[0m"
        self.err.write("\r\x1b[2K" + line)
        self.err.flush()
        self._bar_shown = True

    def _clear(self) -> None:
        if self._bar_shown:
            self.err.write("\r\x1b[2K")
            self.err.flush()
            self._bar_shown = False


def auth_headers(args: argparse.Namespace) -> dict[str, str] | None:
    """``Authorization: Bearer`` from ``--api-key`` or ``--token`` (a session token)."""
    credential = getattr(args, "token", None) or getattr(args, "api_key", None)
    return {"Authorization": f"Bearer {credential}"} if credential else None


async def _replay_all(
    urls_files: list[tuple[str, Path]],
    args: argparse.Namespace,
    live: LiveOutput,
    done: Callable[[Path, ReplayResult], None],
) -> None:
    for url, path in urls_files:
        pcm = await asyncio.to_thread(load_pcm, path)
        live.start(path, len(pcm) / 2 / SAMPLE_RATE)
        result = await stream_pcm(
            url, pcm, speed=args.speed, chunk_ms=args.chunk_ms, language=args.language,
            timeout=args.timeout, headers=auth_headers(args), on_final=live.final,
            on_sent=live.sent, on_partial=live.partial if live.progress else None,
        )  # fmt: skip
        done(path, result)


def run_replay(settings: Settings, args: argparse.Namespace) -> int:
    url = args.url or f"ws://{settings.host}:{settings.port}/v1/listen"
    files = [Path(f) for f in args.files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    out_dir = Path(args.output) if args.output and len(files) > 1 else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    # stdout shows the text live unless a document (srt, vtt, json) is to be written there
    document_on_stdout = not args.output and args.format != "txt"
    live = LiveOutput(sys.stdout, sys.stderr, not document_on_stdout, sys.stderr.isatty())
    code = 0
    everything: list[dict[str, Any]] = []

    def done(path: Path, res: ReplayResult) -> None:
        nonlocal code
        for err in res.errors:
            live.note(f"{path}: server error {err.get('code')}: {err.get('message')}")
            code = 1
        text = render(args.format, res.finals)
        if out_dir:
            (out_dir / f"{path.stem}.{args.format}").write_text(text)
        elif document_on_stdout:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            everything.extend(res.finals)
        live.note(
            f"{path}: {res.audio_seconds:.1f}s audio in {res.wall_seconds:.1f}s, "
            f"{len(res.finals)} finals"
        )

    asyncio.run(_replay_all([(url, f) for f in files], args, live, done))
    if args.output and not out_dir:  # one input, one output file, written when it is done
        Path(args.output).write_text(render(args.format, everything))
    return code
