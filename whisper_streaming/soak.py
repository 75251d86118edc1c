"""Soak test: N concurrent sessions for M minutes while workers are killed at random.

``make soak`` (or ``python -m whisper_streaming.soak --sessions 4 --minutes 3``) starts its own
embedded Redis, a gateway, two VAD and two ASR workers, streams held-out LibriSpeech utterances
(three per session, 1.5 s apart) at real-time pace over /v1/listen, and every ``--kill-every``
seconds SIGKILLs a random worker and starts a new one. It reports sessions, segments cut, finals
received (must equal the segments), duplicates (must be zero), WER, and Redis and process memory
over time, as JSON and as a Markdown section of docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
import websockets

from shared.audio import decode_file, float32_to_pcm16
from whisper_streaming.corpus import librispeech
from whisper_streaming.evaluation import wer
from whisper_streaming.listen import CLOSE_STREAM, flatten
from whisper_streaming.procs import ServiceProcess, process_tree, spawn, stop_all
from whisper_streaming.up import EmbeddedRedis, free_port

REPO = Path(__file__).resolve().parents[1]
ASR_WORKERS = 2
MARK_BEGIN = "<!-- soak:begin -->"
MARK_END = "<!-- soak:end -->"


@dataclass
class Totals:
    sessions: int = 0
    failed_sessions: int = 0
    segments: int = 0
    finals: int = 0
    duplicates: int = 0
    missing: int = 0
    kills: int = 0
    victims: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    memory: list[dict[str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def status(self, elapsed_s: float, total_s: float) -> str:
        """The line printed every few seconds while the soak runs."""
        mem = self.memory[-1] if self.memory else {}
        return (
            f"soak {elapsed_s:5.0f}/{total_s:.0f}s: {self.sessions} sessions "
            f"({self.failed_sessions} failed), {self.finals} finals, {self.duplicates} duplicates, "
            f"{self.kills} kills, redis {mem.get('redis_mb', 0):.1f} MB, "
            f"processes {mem.get('processes_rss_mb', 0):.0f} MB, {len(self.errors)} errors"
        )


def playlists(n: int) -> list[tuple[bytes, str]]:
    """Three held-out utterances per session, 1.5 s apart, and their reference."""
    held = librispeech(held_out_only=True)
    audio = {u.utt_id: decode_file(u.path) for u in held}
    gap = np.zeros(int(16000 * 1.5), dtype=np.float32)
    out = []
    for i in range(n):
        pick = [held[(3 * i + k) % len(held)] for k in range(3)]
        pcm = float32_to_pcm16(np.concatenate([x for u in pick for x in (audio[u.utt_id], gap)]))
        out.append((pcm, " ".join(u.reference for u in pick)))
    return out


class Stack:
    def __init__(self, redis_url: str, port: int, log_dir: Path) -> None:
        self.env = dict(os.environ) | {
            "REDIS_URL": redis_url,
            "PORT": str(port),
            "AUTH_ENABLED": "false",
            "ASR_CPU_THREADS": "1",
            "HEARTBEAT_INTERVAL_S": "0.5",
            "HEARTBEAT_TTL_S": "3",
            "VAD_CLAIM_IDLE_MS": "3000",
            "ASR_CLAIM_IDLE_MS": "8000",
            "LOG_LEVEL": "WARNING",
        }
        self.log_dir = log_dir
        self.procs: dict[str, ServiceProcess] = {}
        self.generation = 0

    def start(self, name: str) -> None:
        role = name.rsplit("-", 1)[0]
        self.generation += 1
        env = self.env | {"CONSUMER_NAME": f"{name}-g{self.generation}"}
        log = self.log_dir / f"{name}.log"  # appended to: a restarted worker's log follows on
        self.procs[name] = spawn(role, env=env, cwd=REPO, log_path=log, append=True)

    def kill(self, name: str) -> None:
        self.procs[name].kill()

    def stop(self) -> None:
        stop_all(self.procs.values(), 20)

    def rss_mb(self) -> float:
        """RSS of the service processes and their children (a partial decoder)."""
        import psutil  # a dev dependency, as the soak test is

        total = 0
        for p in self.procs.values():
            with contextlib.suppress(psutil.Error):
                total += sum(q.memory_info().rss for q in process_tree(p.pid))
        return total / 2**20


async def one_session(url: str, pcm: bytes, reference: str, totals: Totals) -> None:
    msgs: list[dict[str, Any]] = []
    try:
        async with websockets.connect(f"{url}/v1/listen?interim_results=true") as ws:

            async def rx() -> None:
                async for raw in ws:
                    msgs.append(flatten(json.loads(raw)))

            task = asyncio.create_task(rx())
            t0 = time.monotonic()
            for i in range(0, len(pcm), 3200):
                await ws.send(pcm[i : i + 3200])
                await asyncio.sleep(max(0.0, t0 + (i + 3200) / 32000 - time.monotonic()))
            await ws.send(CLOSE_STREAM)
            await asyncio.wait_for(task, 180)
    except (OSError, websockets.WebSocketException, TimeoutError) as exc:
        totals.failed_sessions += 1
        totals.errors.append(f"{type(exc).__name__}: {exc}")
        return
    finals = [m["segment"] for m in msgs if m.get("type") == "final"]
    closed = next((m for m in msgs if m.get("type") == "closed"), None)
    totals.sessions += 1
    totals.finals += len(set(finals))
    totals.duplicates += len(finals) - len(set(finals))
    if closed is None:
        totals.failed_sessions += 1
        totals.errors.append("session ended without 'closed'")
        return
    # segments with no speech in them produce no final: count what the transcript stream holds
    totals.segments += closed["segments"]
    text = " ".join(m["text"] for m in msgs if m.get("type") == "final")
    totals.pairs.append((reference, text))


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    redis_server = EmbeddedRedis()
    redis_server.start()
    port = free_port()
    stack = Stack(redis_server.url, port, log_dir)
    totals = Totals()
    lists = playlists(args.sessions)
    names = [f"asr-worker-{i}" for i in range(ASR_WORKERS)]
    names += ["vad-worker-0", "vad-worker-1", "gateway-0"]
    try:
        for n in names:
            stack.start(n)
        http = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(http + "/readyz", timeout=2) as r:
                    if json.load(r)["asr_workers"] >= 2:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("stack not ready")
            await asyncio.sleep(0.3)
        r = aioredis.Redis.from_url(redis_server.url)
        end = time.monotonic() + args.minutes * 60
        started = time.monotonic()

        async def slot(i: int) -> None:
            while time.monotonic() < end:
                pcm, ref = lists[i]
                await one_session(f"ws://127.0.0.1:{port}", pcm, ref, totals)

        async def chaos() -> None:
            rng = random.Random(args.seed)
            while time.monotonic() < end - args.kill_every:
                await asyncio.sleep(args.kill_every)
                victim = rng.choice([n for n in names if "worker" in n])
                stack.kill(victim)
                totals.kills += 1
                totals.victims.append(victim)
                await asyncio.sleep(1.0)
                stack.start(victim)

        async def sample() -> None:
            while time.monotonic() < end + 30:
                info = await r.info("memory")
                totals.memory.append(
                    {
                        "t": round(time.monotonic() - started, 1),
                        "redis_mb": round(info["used_memory"] / 2**20, 2),
                        "processes_rss_mb": round(stack.rss_mb(), 1),
                        "keys": await r.dbsize(),
                    }
                )
                elapsed = time.monotonic() - started
                print(totals.status(elapsed, args.minutes * 60), file=sys.stderr, flush=True)
                await asyncio.sleep(5)

        sampler = asyncio.create_task(sample())
        await asyncio.gather(chaos(), *(slot(i) for i in range(args.sessions)))
        sampler.cancel()
        await r.aclose()
    finally:
        stack.stop()
        redis_server.stop()
    result = wer(totals.pairs)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"make soak SOAK_ARGS='--sessions {args.sessions} --minutes {args.minutes} "
        f"--kill-every {args.kill_every}'",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "sessions": totals.sessions,
        "failed_sessions": totals.failed_sessions,
        "segments_cut": totals.segments,
        "finals_received": totals.finals,
        "missing": totals.segments - totals.finals,
        "duplicates": totals.duplicates,
        "workers_killed": totals.kills,
        "victims": totals.victims,
        "wer": round(result.wer, 4),
        "memory": totals.memory,
        "errors": totals.errors[:20],
    }


def markdown(res: dict[str, Any]) -> str:
    mem = res["memory"]
    lines = [
        MARK_BEGIN,
        f"Run on {res['date']}, {res['machine']}: `{res['command']}`.",
        "",
        "| sessions | failed | segments cut | finals received | missing | duplicates | workers killed | WER |",
        "|---|---|---|---|---|---|---|---|",
        f"| {res['sessions']} | {res['failed_sessions']} | {res['segments_cut']} | "
        f"{res['finals_received']} | {res['missing']} | {res['duplicates']} | "
        f"{res['workers_killed']} | {res['wer']:.2%} |",
        "",
        "Killed (SIGKILL, in order): " + ", ".join(res.get("victims", [])) + ".",
        "",
        "Memory over time (every 5 s; Redis `used_memory`, RSS of all service processes, keys):",
        "",
        "| t (s) | Redis MB | processes MB | keys |",
        "|---|---|---|---|",
    ]
    step = max(1, len(mem) // 12)
    lines += [
        f"| {m['t']} | {m['redis_mb']} | {m['processes_rss_mb']} | {m['keys']} |"
        for m in mem[::step]
    ]
    if res["errors"]:
        lines += ["", "Errors seen: " + "; ".join(res["errors"])]
    lines.append(MARK_END)
    return "\n".join(lines)


def write_doc(res: dict[str, Any], path: Path) -> None:
    text = path.read_text() if path.exists() else ""
    block = markdown(res)
    if MARK_BEGIN in text:
        text = text[: text.index(MARK_BEGIN)] + block + text[text.index(MARK_END) + len(MARK_END) :]
    else:
        text += "\n" + block + "\n"
    path.write_text(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--kill-every", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--log-dir", default="artifacts/soak")
    p.add_argument("--json", default="artifacts/soak/soak.json")
    p.add_argument("--doc", default="docs/reliability.md")
    args = p.parse_args()
    res = asyncio.run(soak(args))
    Path(args.json).write_text(json.dumps(res, indent=2))
    write_doc(res, Path(args.doc))
    print(markdown(res))
    ok = res["missing"] == 0 and res["duplicates"] == 0 and res["failed_sessions"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
