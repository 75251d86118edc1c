"""Load test of the predecessor-compatible endpoint, as the predecessor's Locust test ran it.

Each simulated user connects to ``/`` (no config frame), streams every recording of a folder in
250 ms chunks at real-time pace, each followed by 10 s of silence in one 220,500-byte frame, and
reads ``text`` from every message; then it sends eof and waits for the last finals. On top of
what the predecessor reported, every final is reported as a custom Locust event
``WS end_of_speech_to_final`` whose response time is the milliseconds from the end of speech
(the last word's end) to the final's arrival; a failed session is reported as a failure.

    poetry install --with load
    poetry run locust -f locustfile.py --host ws://127.0.0.1:8000 \\
        --headless --users 20 --spawn-rate 2 --run-time 5m

Environment: ``LOAD_AUDIO_DIR`` (default: ``$WHISPER_CORPUS/librispeech`` or
``../shared/corpus/librispeech``), ``LOAD_MAX_FILES`` (0 = all, default 5), ``LOAD_PACE``
(1 = real time), ``LOAD_PATH`` (``/``; ``/ws`` works too). docs/clients.md has more.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import websocket  # websocket-client, as the predecessor's test used
from locust import User, between, events, task

from loadtest.predecessor import Final, Run, load_files

_FILES: list[tuple[str, bytes]] = []


def audio_dir() -> Path:
    if "LOAD_AUDIO_DIR" in os.environ:
        return Path(os.environ["LOAD_AUDIO_DIR"])
    corpus = os.environ.get("WHISPER_CORPUS", str(Path(__file__).parent.parent / "shared/corpus"))
    return Path(corpus) / "librispeech"


@events.init.add_listener
def _load_audio(**_kwargs: object) -> None:
    _FILES[:] = load_files(audio_dir(), int(os.environ.get("LOAD_MAX_FILES", "5")))


class PredecessorClient(User):
    """One browser-like client of the predecessor protocol (see module docstring)."""

    wait_time = between(1, 3)

    def _fire(
        self, name: str, started: float, ms: float, length: int, exc: Exception | None
    ) -> None:
        events.request.fire(
            request_type="WS", name=name, response_time=ms, response_length=length,
            exception=exc, context={}, start_time=started,
        )  # fmt: skip

    def _on_final(self, final: Final) -> None:
        if final.latency is not None:
            self._fire("end_of_speech_to_final", time.time(), final.latency * 1000, len(final.text), None)  # fmt: skip

    @task
    def stream_folder(self) -> None:
        url = self.host.rstrip("/") + os.environ.get("LOAD_PATH", "/")
        started, t0 = time.time(), time.monotonic()
        try:
            conn = websocket.create_connection(url, timeout=120)
        except Exception as exc:  # reported to Locust as a failure
            self._fire("connect", started, (time.monotonic() - t0) * 1000, 0, exc)
            return
        self._fire("connect", started, (time.monotonic() - t0) * 1000, 0, None)
        run = Run(on_final=self._on_final)
        pace = float(os.environ.get("LOAD_PACE", "1"))
        run.stream(conn, [pcm for _name, pcm in _FILES], pace=pace, sleep=time.sleep)
        text = " ".join(f.text for f in run.finals)
        error = RuntimeError("; ".join(run.errors)) if run.errors else None
        if error is None and not run.finals:
            error = RuntimeError("no finals received")
        self._fire("session", started, (time.monotonic() - t0) * 1000, len(text), error)
