"""Interim (partial) decodes in a child process that the ASR worker suspends while finals run.

``ASR_PARTIALS_YIELD`` keeps a worker that shares CPU cores with finals-only workers from
*starting* a partial while a final is decoded; a partial already under way still takes the
cores from the final for the rest of its decode (up to a second on a busy CPU). With
``ASR_PARTIALS_PREEMPT`` the worker decodes its partials in a child process with its own copy of
the model and stops it (SIGSTOP) whenever a final is in progress in the pool, continuing it
(SIGCONT) when none is: finals never share the CPU with a partial. The worker's own final decodes
stay in the worker process.

The child dies with the worker (PR_SET_PDEATHSIG, SIGKILL: a stopped process would hold a
SIGTERM until continued); if it dies first (killed, out of memory), the
partial fails and the next one starts a new child. Requests are numbered, so that the answer
to one the worker stopped waiting for (an error while it checked Redis) is skipped, not taken for
the next one's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from shared.schemas import AsrJob, Transcript, decode_as, encode
from shared.settings import Settings

log = logging.getLogger(__name__)

HOLD_POLL_S = 0.05
"""How often the worker asks whether the decode must hold (a final is in progress)."""


class PartialDecodeError(RuntimeError):
    """The child could not transcribe the job (its error), or it died."""


def _child_main(settings: Settings, conn: Connection) -> None:
    """The child: load the model, then transcribe ``(job, prompt, beam)`` requests until EOF."""
    from whisper_streaming.procs import set_pdeathsig
    from workers.asr import DecodeOptions, Transcriber, load_model

    set_pdeathsig(signal.SIGKILL)  # SIGTERM would wait while the child is stopped
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the worker's to handle
    transcriber = Transcriber(
        load_model(settings), DecodeOptions.from_settings(settings), settings.consumer_name
    )
    conn.send((0, "ready", b""))
    while True:
        try:
            seq, raw, prompt, beam = conn.recv()
        except (EOFError, OSError):
            return
        try:
            result = transcriber.transcribe(decode_as(raw, AsrJob), prompt, beam)
            conn.send((seq, "ok", encode(result)))
        except Exception as exc:  # one bad job never ends the child
            conn.send((seq, "error", f"{type(exc).__name__}: {exc}".encode()))


class PartialDecoder:
    """The worker's side: start the child, send it jobs, hold it while ``hold()`` says so."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._seq = 0
        """Numbers the requests: an answer to an earlier one (whose wait was cut short by an
        error) is skipped, never taken for the current one's."""

    async def start(self) -> None:
        """Start the child and wait until its model is loaded."""
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with model threads
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_child_main, args=(self.s, child), name="partial-decoder", daemon=True
        )
        proc.start()
        child.close()
        self._proc, self._conn, self._seq = proc, parent, 0
        kind, _ = await self._receive(None)
        if kind != "ready":
            raise PartialDecodeError(f"partial decoder did not start: {kind}")
        log.info("partial decoder ready (pid %s)", proc.pid)

    async def transcribe(
        self,
        job: AsrJob,
        prompt: str | None,
        beam_size: int | None,
        hold: Callable[[], Awaitable[bool]],
        while_held: Callable[[], Awaitable[None]] | None = None,
    ) -> Transcript:
        """Transcribe in the child; while ``hold()`` is true the child is stopped, and
        ``while_held()`` may use the CPU it leaves (the worker decodes a final that waits)."""
        if self._proc is None or not self._proc.is_alive():
            await self.close()
            await self.start()
        assert self._conn is not None
        self._seq += 1
        try:
            self._conn.send((self._seq, encode(job), prompt, beam_size))
        except OSError as exc:  # it died since the last job
            raise PartialDecodeError(f"partial decoder died: {exc}") from exc
        kind, data = await self._receive(hold, while_held)
        if kind != "ok":
            raise PartialDecodeError(data.decode("utf-8", "replace"))
        return decode_as(data, Transcript)

    async def _receive(
        self,
        hold: Callable[[], Awaitable[bool]] | None,
        while_held: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[str, bytes]:
        """The child's answer to the current request (kind, data); meanwhile, every
        ``HOLD_POLL_S``, stop or continue it."""
        assert self._conn is not None and self._proc is not None
        conn, pid = self._conn, self._proc.pid
        assert pid is not None
        stopped = False
        try:
            while True:
                while not conn.poll():
                    if not self._proc.is_alive():
                        raise PartialDecodeError("partial decoder died")
                    if hold is not None:
                        want = await hold()
                        if want != stopped:
                            os.kill(pid, signal.SIGSTOP if want else signal.SIGCONT)
                            stopped = want
                        if stopped and while_held is not None:
                            await while_held()
                    await self._readable(conn, HOLD_POLL_S)
                seq, kind, data = conn.recv()
                if seq == self._seq:
                    return kind, data
                log.info("skipped the partial decoder's answer to an earlier request")
        except (EOFError, OSError) as exc:
            raise PartialDecodeError(f"partial decoder died: {exc}") from exc
        finally:
            if stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    @staticmethod
    async def _readable(conn: Connection, timeout: float) -> None:
        """Wait until ``conn`` has data, at most ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(conn.fileno(), ready.set)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), timeout)
        finally:
            loop.remove_reader(conn.fileno())

    async def close(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()  # the child sees EOF and returns
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                if proc.pid is not None:
                    os.kill(proc.pid, signal.SIGCONT)
            await asyncio.to_thread(proc.join, 5.0)
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join, 5.0)
