"""Soak test: N concurrent sessions for M minutes while workers, gateways and Redis fail.

``make soak`` (or ``python -m whisper_streaming.soak --sessions 4 --minutes 3``) starts its own
embedded Redis (AOF, ``appendfsync everysec`` as ``up`` runs it), two gateways, two VAD and two
ASR workers, streams held-out LibriSpeech utterances (three per session, 1.5 s apart) at
real-time pace over /v1/listen, and on a schedule (whisper_streaming/soak_faults.py) SIGKILLs a
random worker every ``--kill-every`` seconds, a gateway every ``--kill-gateway-every`` seconds
(its clients resume on the other one: whisper_streaming/soak_client.py), and Redis every
``--restart-redis-every`` seconds (restarted on the same port and data directory after
``--redis-down-s``). Each process killed is started again a second later. It reports sessions,
segments cut, finals lost (cut but never received) and duplicated (received twice), each by the
fault it followed, resumes, audio lost, WER, and Redis and process memory over time, as JSON and
as a Markdown section of docs/reliability.md (``--doc ''``: not written).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from shared.audio import decode_file, float32_to_pcm16
from whisper_streaming.corpus import librispeech
from whisper_streaming.evaluation import wer
from whisper_streaming.procs import ServiceProcess, process_tree, spawn, stop_all
from whisper_streaming.soak_client import ResumingClient, SessionFailed
from whisper_streaming.soak_faults import (
    GATEWAY,
    REDIS,
    WORKER,
    Fault,
    by_cause,
    merge,
    per_cause,
    schedule,
)
from whisper_streaming.up import EmbeddedRedis, free_port

REPO = Path(__file__).resolve().parents[1]
ASR_WORKERS = 2
GATEWAYS = 2
SLOW_SESSION_S = 30.0
"""A session that ends this much later than its audio is noted among the errors, with its
sockets' history (a stall; not a failure)."""
MARK_BEGIN = "<!-- soak:begin -->"
MARK_END = "<!-- soak:end -->"


@dataclass
class Totals:
    sessions: int = 0
    failed_sessions: int = 0
    segments: int = 0
    finals: int = 0
    lost: dict[str, int] = field(default_factory=dict)
    """Finals cut by the VAD and never received, by the fault blamed (soak_faults.blame)."""
    duplicated: dict[str, int] = field(default_factory=dict)
    """Finals received more than once, by the fault blamed."""
    kills: int = 0
    gateway_kills: int = 0
    redis_restarts: int = 0
    resumes: int = 0
    audio_lost_s: float = 0.0
    victims: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    memory: list[dict[str, float]] = field(default_factory=list)
    per_session: list[dict[str, Any]] = field(default_factory=list)
    """Each session's resumes, audio lost, WER and duration (in the JSON: whether the faults
    cost words)."""
    errors: list[str] = field(default_factory=list)

    def status(self, elapsed_s: float, total_s: float) -> str:
        """The line printed every few seconds while the soak runs."""
        mem = self.memory[-1] if self.memory else {}
        return (
            f"soak {elapsed_s:5.0f}/{total_s:.0f}s: {self.sessions} sessions "
            f"({self.failed_sessions} failed), {self.finals} finals, "
            f"{sum(self.lost.values())} lost, {sum(self.duplicated.values())} duplicated, "
            f"{self.kills} kills, {self.gateway_kills} gateway kills, "
            f"{self.redis_restarts} redis restarts, {self.resumes} resumes, "
            f"redis {mem.get('redis_mb', 0):.1f} MB, "
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
    def __init__(self, redis_url: str, log_dir: Path, log_level: str = "WARNING") -> None:
        self.env = dict(os.environ) | {
            "REDIS_URL": redis_url,
            "AUTH_ENABLED": "false",
            "ASR_CPU_THREADS": "1",
            "HEARTBEAT_INTERVAL_S": "0.5",
            "HEARTBEAT_TTL_S": "3",
            "VAD_CLAIM_IDLE_MS": "3000",
            "ASR_CLAIM_IDLE_MS": "8000",
            "LOG_LEVEL": log_level,
        }
        self.log_dir = log_dir
        self.procs: dict[str, ServiceProcess] = {}
        self.generation = 0

        self.ports: dict[str, int] = {}
        """Gateway name -> its port (kept across restarts: clients reconnect to it)."""

    def start(self, name: str) -> None:
        role = name.rsplit("-", 1)[0]
        self.generation += 1
        env = self.env | {"CONSUMER_NAME": f"{name}-g{self.generation}"}
        if name in self.ports:
            env["PORT"] = str(self.ports[name])
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


async def one_session(
    gateways: list[str], slot: int, pcm: bytes, reference: str, totals: Totals, run: Run
) -> None:
    client = ResumingClient(gateways, slot, pcm, run.clock)
    began = run.clock()
    try:
        await client.run()
    except SessionFailed as exc:
        totals.failed_sessions += 1
        totals.errors.append(f"{exc} (session {client.session_id}: {client.history})")
    took = run.clock() - began
    if took > len(pcm) / 32000 + SLOW_SESSION_S:
        totals.errors.append(f"session {client.session_id} took {took:.0f}s: {client.history}")
    totals.sessions += 1
    totals.resumes += client.resumes
    log = client.log
    totals.finals += len({seg for _t, seg in log.finals})
    merge(totals.duplicated, by_cause(log.duplicated(), run.faults))
    if log.segments is None:
        return
    totals.segments += log.segments
    merge(totals.lost, by_cause(log.lost(), run.faults))
    totals.audio_lost_s += client.audio_lost_s()
    totals.pairs.append((reference, client.transcript()))
    totals.per_session.append(
        {
            "session_id": client.session_id,
            "resumes": client.resumes,
            "audio_lost_s": round(client.audio_lost_s(), 3),
            "wer": round(wer([(reference, client.transcript())]).wer, 4),
            "took_s": round(took, 1),
        }
    )


@dataclass
class Run:
    """The clock of the run and the faults done so far (what losses are blamed on)."""

    started: float = field(default_factory=time.monotonic)
    faults: list[Fault] = field(default_factory=list)

    def clock(self) -> float:
        return time.monotonic() - self.started


class Redis:
    """The soak's redis-server: AOF with ``up``'s ``appendfsync everysec``, in a data directory
    of its own, so a restart on the same port replays what was written."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="soak-redis-"))
        self.port = free_port()
        self.server = self._new()
        self.server.start()

    def _new(self) -> EmbeddedRedis:
        return EmbeddedRedis(port=self.port, appendonly=True, data_dir=self.dir)

    @property
    def url(self) -> str:
        return self.server.url

    def kill(self) -> None:
        """SIGKILL: whatever the last second's fsync had not written is lost (everysec)."""
        if self.server.proc is not None:
            self.server.proc.kill()
            self.server.proc.wait()

    def restart(self) -> None:
        self.server.stop(remove_dir=False)
        self.server = self._new()
        self.server.start(timeout=30)

    def stop(self) -> None:
        self.server.stop(remove_dir=False)
        shutil.rmtree(self.dir, ignore_errors=True)


async def wait_ready(http: list[str]) -> None:
    deadline = time.monotonic() + 90
    for base in http:
        while True:
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                    if json.load(r)["asr_workers"] >= ASR_WORKERS:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("stack not ready")
            await asyncio.sleep(0.3)


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    redis_server = Redis()
    stack = Stack(redis_server.url, log_dir, args.log_level)
    totals = Totals()
    lists = playlists(args.sessions)
    gateways = [f"gateway-{i}" for i in range(GATEWAYS)]
    workers = [f"asr-worker-{i}" for i in range(ASR_WORKERS)] + ["vad-worker-0", "vad-worker-1"]
    stack.ports = {g: free_port() for g in gateways}
    total_s = args.minutes * 60
    plan = schedule(
        total_s,
        worker_every=args.kill_every,
        gateway_every=args.kill_gateway_every,
        redis_every=args.restart_redis_every,
        workers=workers,
        gateways=gateways,
        seed=args.seed,
    )
    run = Run()
    try:
        for n in workers + gateways:
            stack.start(n)
        await wait_ready([f"http://127.0.0.1:{stack.ports[g]}" for g in gateways])
        urls = [f"ws://127.0.0.1:{stack.ports[g]}" for g in gateways]
        r = aioredis.Redis.from_url(redis_server.url)
        run.started = time.monotonic()
        end = run.started + total_s

        async def slot(i: int) -> None:
            while time.monotonic() < end:
                pcm, ref = lists[i]
                await one_session(urls, i, pcm, ref, totals, run)

        async def chaos() -> None:
            for fault in plan:
                await asyncio.sleep(max(0.0, fault.at_s - run.clock()))
                run.faults.append(Fault(round(run.clock(), 3), fault.kind, fault.target))
                totals.victims.append(fault.target)
                if fault.kind == REDIS:
                    redis_server.kill()
                    totals.redis_restarts += 1
                    await asyncio.sleep(args.redis_down_s)
                    await asyncio.to_thread(redis_server.restart)
                    continue
                stack.kill(fault.target)
                totals.kills += fault.kind == WORKER
                totals.gateway_kills += fault.kind == GATEWAY
                await asyncio.sleep(1.0)
                stack.start(fault.target)

        async def sample() -> None:
            while True:
                with contextlib.suppress(aioredis.RedisError, OSError):
                    info = await r.info("memory")
                    totals.memory.append(
                        {
                            "t": round(run.clock(), 1),
                            "redis_mb": round(info["used_memory"] / 2**20, 2),
                            "processes_rss_mb": round(stack.rss_mb(), 1),
                            "keys": await r.dbsize(),
                        }
                    )
                print(totals.status(run.clock(), total_s), file=sys.stderr, flush=True)
                await asyncio.sleep(5)

        sampler = asyncio.create_task(sample())
        await asyncio.gather(chaos(), *(slot(i) for i in range(args.sessions)))
        sampler.cancel()
        await r.aclose()
    finally:
        stack.stop()
        redis_server.stop()
    return result_of(args, totals, run.faults)


def result_of(args: argparse.Namespace, totals: Totals, faults: list[Fault]) -> dict[str, Any]:
    result = wer(totals.pairs)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"make soak SOAK_ARGS='--sessions {args.sessions} --minutes {args.minutes} "
        f"--kill-every {args.kill_every} --kill-gateway-every {args.kill_gateway_every} "
        f"--restart-redis-every {args.restart_redis_every}'",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "sessions": totals.sessions,
        "failed_sessions": totals.failed_sessions,
        "segments_cut": totals.segments,
        "finals_received": totals.finals,
        "lost": sum(totals.lost.values()),
        "lost_by_cause": totals.lost,
        "duplicates": sum(totals.duplicated.values()),
        "duplicates_by_cause": totals.duplicated,
        "workers_killed": totals.kills,
        "gateways_killed": totals.gateway_kills,
        "redis_restarts": totals.redis_restarts,
        "resumes": totals.resumes,
        "audio_lost_s": round(totals.audio_lost_s, 2),
        "victims": totals.victims,
        "faults": [dataclasses.asdict(f) for f in faults],
        "wer": round(result.wer, 4),
        "memory": totals.memory,
        "per_session": totals.per_session,
        "errors": totals.errors[:20],
    }


def markdown(res: dict[str, Any]) -> str:
    mem = res["memory"]
    lines = [
        MARK_BEGIN,
        f"Run on {res['date']}, {res['machine']}: `{res['command']}`.",
        "",
        "| sessions | failed | segments cut | finals received | lost | duplicated "
        "| workers killed | gateways killed | Redis restarts | resumes | audio lost | WER |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {res['sessions']} | {res['failed_sessions']} | {res['segments_cut']} | "
        f"{res['finals_received']} | {per_cause(res['lost_by_cause'])} | "
        f"{per_cause(res['duplicates_by_cause'])} | {res['workers_killed']} | "
        f"{res['gateways_killed']} | {res['redis_restarts']} | {res['resumes']} | "
        f"{res['audio_lost_s']:.1f} s | {res['wer']:.2%} |",
        "",
        "Killed (SIGKILL, in order; `redis-server` restarted on its AOF): "
        + ", ".join(res.get("victims", []))
        + ".",
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
    p.add_argument("--kill-every", type=float, default=20.0, help="SIGKILL a worker (0: never)")
    p.add_argument("--kill-gateway-every", type=float, default=30.0,
                   help="SIGKILL a gateway; its clients resume on the other (0: never)")  # fmt: skip
    p.add_argument("--restart-redis-every", type=float, default=60.0,
                   help="SIGKILL redis-server and restart it on its AOF (0: never)")  # fmt: skip
    p.add_argument("--redis-down-s", type=float, default=2.0, help="how long Redis stays down")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--log-level", default="WARNING", help="of the service processes")
    p.add_argument("--log-dir", default="artifacts/soak")
    p.add_argument("--json", default="artifacts/soak/soak.json")
    p.add_argument("--doc", default="docs/reliability.md", help="'': do not write the doc")
    args = p.parse_args()
    res = asyncio.run(soak(args))
    Path(args.json).write_text(json.dumps(res, indent=2))
    if args.doc:
        write_doc(res, Path(args.doc))
    print(markdown(res))
    ok = res["lost"] == 0 and res["duplicates"] == 0 and res["failed_sessions"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
