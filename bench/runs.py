"""The measured runs, shared by ``bench`` and ``bench.latency``: N streams at real-time pace, and
a pool of sessions at full speed, each with the service's CPU and memory."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.client import StreamRun, stream
from bench.corpus import Stream, to_pcm16
from bench.stack import BenchStack, Sampler
from bench.stats import (
    SendLog,
    after,
    first_after_end,
    mid_turn_splits,
    region_latencies,
    summary,
)
from whisper_streaming.evaluation import wer

DRAIN_TIMEOUT_S = 240.0


def wait_idle(stack: BenchStack, timeout: float = 300.0) -> float:
    """Until every pool's asr:jobs and asr:partials are empty (the previous run's work would skew
    the next run); returns how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout and stack.backlog() > 0:
        time.sleep(0.25)
    return round(time.monotonic() - started, 1)


def realtime(
    stack: BenchStack,
    streams: list[Stream],
    *,
    interim: bool = True,
    chunk_ms: int = 20,
    stagger_s: float = 0.25,
    options: dict[str, str] | None = None,
    finalize_after_s: float | None = None,
) -> dict[str, Any]:
    """All ``streams`` at once at real-time pace (stream i starts ``i × stagger_s`` late).
    ``options``: more query parameters of every session (``endpointing``, ``eager_eot``);
    ``finalize_after_s``: each client sends ``finalize`` this long after every true end of
    speech (a voice agent's own VAD)."""
    idle_wait = wait_idle(stack)
    pcms = [to_pcm16(s.pcm) for s in streams]

    def finalize_at(s: Stream) -> list[float] | None:
        if finalize_after_s is None:
            return None
        return [r.end + finalize_after_s for r in s.regions]

    async def go() -> list[StreamRun]:
        return await asyncio.gather(
            *(
                stream(
                    stack.ws_url, s.name, pcm, speed=1.0, chunk_ms=chunk_ms, interim=interim,
                    delay=i * stagger_s, timeout=DRAIN_TIMEOUT_S, extra=options,
                    finalize_at=finalize_at(s),
                )
                for i, (s, pcm) in enumerate(zip(streams, pcms, strict=True))
            )
        )  # fmt: skip

    with Sampler(stack) as sampler:
        runs = asyncio.run(go())
    return summarize_realtime(streams, runs) | {
        "options": options or {},
        "finalize_after_s": finalize_after_s,
        "interim": interim,
        "resources": sampler.result(),
        "waited_for_idle_s": idle_wait,
    }


def summarize_realtime(streams: list[Stream], runs: list[StreamRun]) -> dict[str, Any]:
    partial, first, final = [], [], []
    regions = no_partial = missed = 0
    per_region = []
    for s, run in zip(streams, runs, strict=True):
        for lat in region_latencies(s.regions, run.messages, SendLog(run.sent)):
            regions += 1
            per_region.append(
                [s.name, round(lat.region.start, 2), round(lat.region.end, 2)]
                + [None if x is None else round(x, 3) for x in (lat.first_partial, lat.final)]
            )
            if lat.first_partial is not None:
                partial.append(lat.first_partial)
            else:
                no_partial += 1
            if lat.first_text is not None:
                first.append(lat.first_text)
            if lat.final is not None:
                final.append(lat.final)
            else:
                missed += 1
    w = wer((s.reference, r.text) for s, r in zip(streams, runs, strict=True))
    pairs = list(zip(streams, runs, strict=True))
    after_finalize = [x for s, r in pairs for x in after(r.finalized, r.messages, s.regions)]
    eager = [x for s, r in pairs for x in first_after_end(s.regions, r.eager, SendLog(r.sent))]
    turns = sum(len(s.turns) for s in streams)
    splits = sum(mid_turn_splits(s.turns, r.finals) for s, r in pairs)
    return {
        "after_finalize_s": summary(after_finalize),
        "eager_s": summary(eager),
        "turns": turns,
        "mid_turn_splits": splits,
        "splits_per_100_turns": round(100 * splits / turns, 1) if turns else None,
        "turns_resumed": sum(r.resumed for r in runs),
        "streams": len(streams),
        "audio_s": round(sum(s.seconds for s in streams), 1),
        "regions": regions,
        "first_partial_s": summary(partial),
        "first_text_s": summary(first),
        "final_s": summary(final),
        "regions_without_partial": no_partial,
        "regions_without_final": missed,
        "partials": sum(1 for r in runs for m in r.messages if m.type == "partial"),
        "asr_final_busy_s": round(sum(m.processing_time for r in runs for m in r.finals), 2),
        "finals": sum(1 for r in runs for m in r.messages if m.type == "final"),
        "finals_from_finalize": sum(1 for r in runs for m in r.finals if m.from_finalize),
        "wer": round(w.wer * 100, 2),
        "wer_errors": w.errors,
        "wer_words": w.words,
        "client_max_send_lag_s": round(max(r.max_send_lag_s for r in runs), 3),
        "errors": [e for r in runs for e in r.errors],
        "texts": {r.name: r.text for r in runs},
        "per_region": per_region,
        "finals_by_stream": {
            r.name: [
                [m.segment, m.start, m.end, round(m.received - r.started, 2)] for m in r.finals
            ]
            for r in runs
        },
    }


def full_speed(
    stack: BenchStack,
    items: list[tuple[str, bytes]],
    *,
    concurrency: int = 4,
    chunk_ms: int = 1000,
    interim: bool = False,
) -> tuple[dict[str, Any], dict[str, StreamRun]]:
    """Every (name, pcm) as its own session, ``concurrency`` at a time, as fast as it goes."""
    wait_idle(stack)
    queue = list(items)

    async def worker(out: dict[str, StreamRun]) -> None:
        while queue:
            name, pcm = queue.pop(0)
            out[name] = await stream(
                stack.ws_url, name, pcm, speed=0, chunk_ms=chunk_ms, interim=interim,
                timeout=DRAIN_TIMEOUT_S,
            )  # fmt: skip

    async def go() -> dict[str, StreamRun]:
        out: dict[str, StreamRun] = {}
        await asyncio.gather(*(worker(out) for _ in range(concurrency)))
        return out

    with Sampler(stack) as sampler:
        runs = asyncio.run(go())
    audio = sum(len(p) / 32000 for _, p in items)
    finals = [m for r in runs.values() for m in r.finals]
    res = sampler.result()
    return {
        "sessions": len(items),
        "concurrency": concurrency,
        "audio_s": round(audio, 1),
        "wall_s": res["wall_s"],
        "audio_s_per_s": round(audio / res["wall_s"], 2),
        "finals": len(finals),
        "asr_busy_s": round(sum(m.processing_time for m in finals), 2),
        "errors": [e for r in runs.values() for e in r.errors],
        "resources": res,
    }, runs
