"""``make autoscale-demo``: KEDA's redis-streams scaling, applied by hand to the real pipeline.

A throw-away redis-server on loopback, one VAD worker, and a pool of ASR worker processes that a
small controller sizes the way KEDA (and the HPA it drives) sizes the asr-worker Deployment of
deploy/keda/base/keda.yaml (the English pool's): every poll it reads what KEDA's scaler reads
(XINFO GROUPS ``lag`` and XPENDING on ``asr:jobs:en`` / group ``asr``), computes
``desired = ceil(lag / lagCount)`` (and ``ceil(pending / pendingEntriesCount)`` for the
in-flight trigger), clamps it to min/max replicas, holds scale-downs for a stabilization window, scales to zero after the cooldown, and
starts or SIGTERMs ``whisper-streaming asr-worker`` processes to match. A burst of sessions from
the speech corpus is streamed in meanwhile; one line per poll shows lag, pending and replicas.

It stops by itself: once the burst is transcribed and the pool is back at zero, or at --deadline.
Exit status 0 when the pool scaled up, drained the backlog and came back to zero.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the project's packages importable
    sys.path.insert(0, str(REPO))

import redis.asyncio as aioredis  # noqa: E402

from shared.audio import decode_file, float32_to_pcm16  # noqa: E402
from shared.keys import ASR_GROUP, EN_POOL, Keys  # noqa: E402
from shared.redis_util import ensure_group, entry  # noqa: E402
from shared.schemas import AudioChunk, AudioEnd, SessionStart, encode  # noqa: E402
from whisper_streaming.procs import ServiceProcess, spawn, wait_all  # noqa: E402

SAMPLE_RATE = 16000


# --- what KEDA's redis-streams scaler reads -------------------------------------------------------
@dataclass(frozen=True)
class ScalerView:
    """One poll of a stream and group, as KEDA's redis-streams scaler sees it."""

    lag: int | None
    """XINFO GROUPS ``lag`` (Redis 7): entries not yet delivered to the group. Redis answers NULL
    when it cannot tell (an entry deleted out of order); KEDA's client then reads 0."""
    pending: int
    """XPENDING count: delivered, not yet acknowledged."""
    length: int
    """XLEN, for the record (the ASR worker deletes what it acknowledged)."""


async def scaler_view(r: aioredis.Redis, stream: str, group: str) -> ScalerView:
    groups = await r.xinfo_groups(stream)
    for g in groups:
        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        if name == group:
            pending = (await r.xpending(stream, group))["pending"]
            lag = g.get("lag")
            return ScalerView(
                lag=None if lag is None else int(lag),
                pending=int(pending),
                length=int(await r.xlen(stream)),
            )
    raise LookupError(f"group {group!r} not found on {stream!r}")


# --- what KEDA and the HPA do with it -------------------------------------------------------------
@dataclass(frozen=True)
class ScalePolicy:
    """The knobs of the asr-worker ScaledObject (keda.yaml), shortened for a demo."""

    lag_count: int = 2
    activation_lag_count: int = 0
    pending_entries_count: int = 1
    min_replicas: int = 0
    max_replicas: int = 3
    cooldown_s: float = 6.0
    """KEDA ``cooldownPeriod``: how long all triggers stay inactive before scaling to zero."""
    scale_down_window_s: float = 4.0
    """HPA ``behavior.scaleDown.stabilizationWindowSeconds``."""


@dataclass
class KedaFormula:
    """Replica decisions for one ScaledObject with a lagCount trigger and a pendingEntriesCount
    trigger. Pure: fed with observations and a clock, so it is testable without Redis."""

    policy: ScalePolicy
    _last_active: float | None = None
    _recommendations: deque[tuple[float, int]] = field(default_factory=deque)

    def desired(self, view: ScalerView, current: int, now: float) -> int:
        p = self.policy
        lag = view.lag or 0
        active = lag > p.activation_lag_count or view.pending > 0
        if active:
            self._last_active = now
        # One HPA metric per trigger (AverageValue): ceil(value / target); the largest wins.
        raw = max(math.ceil(lag / p.lag_count), math.ceil(view.pending / p.pending_entries_count))
        if current == 0:
            # KEDA itself activates the workload from zero; the HPA takes over from there.
            return max(1, p.min_replicas, min(raw, p.max_replicas)) if active else p.min_replicas
        if not active and p.min_replicas == 0:
            if self._last_active is None or now - self._last_active >= p.cooldown_s:
                self._recommendations.clear()
                return 0
        hpa_min = max(1, p.min_replicas)  # an HPA never goes below one replica
        self._recommendations.append((now, raw))
        while self._recommendations and now - self._recommendations[0][0] > p.scale_down_window_s:
            self._recommendations.popleft()
        if raw < current:  # scale-down stabilization: the highest recent recommendation
            raw = max(n for _, n in self._recommendations)
        return max(hpa_min, min(raw, p.max_replicas))


# --- the ASR worker pool --------------------------------------------------------------------------
class WorkerPool:
    """``whisper-streaming asr-worker`` processes; scale-downs are SIGTERMs (the worker drains)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self._env = env
        self._log_dir = log_dir
        self._running: list[ServiceProcess] = []
        self._stopping: list[ServiceProcess] = []
        self._started = 0

    @property
    def replicas(self) -> int:
        self._reap()
        return len(self._running)

    def scale_to(self, n: int) -> None:
        self._reap()
        while len(self._running) < n:
            name = f"asr-demo-{self._started}"
            self._started += 1
            env = self._env | {"CONSUMER_NAME": name}
            self._running.append(spawn_role("asr-worker", env, self._log_dir / f"{name}.log"))
        while len(self._running) > n:
            proc = self._running.pop()
            proc.terminate()
            self._stopping.append(proc)

    def _reap(self) -> None:
        self._running = [p for p in self._running if p.alive()]
        self._stopping = [p for p in self._stopping if p.alive()]

    def stop_all(self, timeout: float = 30.0) -> None:
        self.scale_to(0)
        wait_all(self._stopping, timeout)  # already sent SIGTERM: a second one skips the drain
        self._stopping.clear()


def spawn_role(role: str, env: dict[str, str], log_path: Path) -> ServiceProcess:
    """``whisper-streaming ROLE`` with its output in ``log_path``."""
    return spawn(role, env=env, cwd=REPO, log_path=log_path)


# --- load -----------------------------------------------------------------------------------------
async def feed_session(
    r: aioredis.Redis,
    keys: Keys,
    session_id: str,
    pcm: bytes,
    chunk_bytes: int = 3200,
    pace: float = 0.0,
) -> None:
    """Write a session as the gateway does: announce it on ``sessions``, then its audio (100 ms
    entries) on ``audio:{session}``, then the end marker. ``pace`` > 0 sleeps that fraction of
    real time per chunk (1.0 = live speech)."""
    await r.xadd(keys.sessions, entry(encode(SessionStart(session_id=session_id, language="en"))))
    seq = 0
    for i in range(0, len(pcm), chunk_bytes):
        seq += 1
        part = pcm[i : i + chunk_bytes]
        await r.xadd(
            keys.audio(session_id),
            entry(
                encode(
                    AudioChunk(session_id=session_id, seq=seq, pcm=part, received_at=time.time())
                )
            ),
        )
        if pace > 0:
            await asyncio.sleep(pace * len(part) / (2 * SAMPLE_RATE))
    await r.xadd(
        keys.audio(session_id), entry(encode(AudioEnd(session_id=session_id, seq=seq + 1)))
    )


def corpus_dir() -> Path:
    path = Path(os.environ.get("WHISPER_CORPUS", REPO.parent / "shared" / "corpus"))
    if not (path / "librispeech").is_dir():
        raise SystemExit(
            f"speech corpus not found at {path}: set WHISPER_CORPUS to the folder that holds "
            "librispeech/ (../shared/corpus in this project's checkouts)"
        )
    return path


def burst_audio(sessions: int, utterances_per_session: int) -> list[bytes]:
    """Sessions of consecutive LibriSpeech utterances with 2.5 s pauses, so that each one is cut
    into several ASR jobs (a burst arrives faster than real time, and such audio is cut like a
    file: only pauses of 2 s or more end a segment, docs/architecture.md)."""
    files = sorted((corpus_dir() / "librispeech").glob("*.flac"))
    need = sessions * utterances_per_session
    if len(files) < need:
        raise SystemExit(f"need {need} LibriSpeech files, found {len(files)}")
    pause = b"\x00\x00" * int(2.5 * SAMPLE_RATE)
    out = []
    for s in range(sessions):
        chunk = files[s * utterances_per_session : (s + 1) * utterances_per_session]
        out.append(pause.join(float32_to_pcm16(decode_file(f)) for f in chunk) + pause)
    return out


# --- the demo -------------------------------------------------------------------------------------
@dataclass
class Sample:
    t: float
    view: ScalerView
    desired: int
    replicas: int


async def transcripts(r: aioredis.Redis, keys: Keys, session_ids: Sequence[str]) -> int:
    return sum([int(await r.xlen(keys.transcript(sid))) for sid in session_ids])


async def run_demo(
    redis_url: str,
    prefix: str,
    policy: ScalePolicy,
    sessions: int,
    utterances: int,
    deadline_s: float,
    poll_s: float,
    log_dir: Path,
    out=sys.stdout,
) -> list[Sample]:
    keys = Keys(prefix)
    env = dict(os.environ) | {
        "REDIS_URL": redis_url,
        "KEY_PREFIX": prefix,
        "HEARTBEAT_INTERVAL_S": "0.5",
        "HEARTBEAT_TTL_S": "3",
        "ASR_BEAM_SIZE": "1",
        "ASR_CPU_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    r = aioredis.Redis.from_url(redis_url)
    # On a fresh deployment the first ASR pod creates the group before KEDA scales the pool to
    # zero; KEDA's lag trigger needs it to exist. The demo starts at zero, so it makes it here.
    await ensure_group(r, keys.asr_jobs(EN_POOL), ASR_GROUP)
    vad = spawn_role("vad-worker", env | {"CONSUMER_NAME": "vad-demo-0"}, log_dir / "vad.log")
    pool = WorkerPool(env, log_dir)
    formula = KedaFormula(policy)
    samples: list[Sample] = []
    audio = burst_audio(sessions, utterances)
    session_ids = [f"demo-{i}" for i in range(len(audio))]
    started = time.monotonic()
    print(
        f"KEDA formula: desired = ceil(lag / {policy.lag_count}), max(ceil(pending / "
        f"{policy.pending_entries_count})), replicas {policy.min_replicas}..{policy.max_replicas}, "
        f"cooldown {policy.cooldown_s:g}s; burst: {len(audio)} sessions",
        file=out,
    )
    print(
        f"{'t(s)':>6} {'lag':>4} {'pending':>7} {'xlen':>4} {'desired':>7} {'replicas':>8} {'finals':>6}",
        file=out,
    )
    burst = asyncio.gather(
        *(
            feed_session(r, keys, sid, pcm, pace=0.25)
            for sid, pcm in zip(session_ids, audio, strict=True)
        )
    )
    scaled_up = False
    try:
        while time.monotonic() - started < deadline_s:
            if not vad.alive():
                raise RuntimeError(f"the VAD worker exited (see {log_dir / 'vad.log'})")
            now = time.monotonic() - started
            view = await scaler_view(r, keys.asr_jobs(EN_POOL), ASR_GROUP)
            current = pool.replicas
            desired = formula.desired(view, current, now)
            pool.scale_to(desired)
            scaled_up = scaled_up or desired > 0
            finals = await transcripts(r, keys, session_ids)
            samples.append(Sample(now, view, desired, current))
            lag = "null" if view.lag is None else str(view.lag)
            print(
                f"{now:6.1f} {lag:>4} {view.pending:>7} {view.length:>4} {desired:>7} {current:>8} {finals:>6}",
                file=out,
                flush=True,
            )
            drained = burst.done() and view.lag == 0 and view.pending == 0 and view.length == 0
            if scaled_up and drained and current == 0 and desired == 0:
                break
            await asyncio.sleep(poll_s)
    finally:
        if not burst.done():
            burst.cancel()
        await asyncio.gather(burst, return_exceptions=True)
        pool.stop_all()
        vad.stop(30)
        await r.aclose()
    return samples


def succeeded(samples: Sequence[Sample]) -> bool:
    """The pool woke from zero, went above one replica, and ended drained and back at zero."""
    if not samples:
        return False
    last = samples[-1]
    return (
        max(s.desired for s in samples) >= 2
        and last.view.lag == 0
        and last.view.pending == 0
        and last.replicas == 0
        and last.desired == 0
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=4, help="sessions in the burst")
    ap.add_argument("--utterances", type=int, default=3, help="LibriSpeech utterances per session")
    ap.add_argument("--lag-count", type=int, default=2)
    ap.add_argument("--max-replicas", type=int, default=3)
    ap.add_argument("--cooldown", type=float, default=6.0)
    ap.add_argument("--poll", type=float, default=1.0, help="seconds between polls")
    ap.add_argument("--deadline", type=float, default=150.0, help="stop after this many seconds")
    args = ap.parse_args(argv)

    from whisper_streaming.up import EmbeddedRedis  # loopback only, a temporary directory

    policy = ScalePolicy(
        lag_count=args.lag_count, max_replicas=args.max_replicas, cooldown_s=args.cooldown
    )
    server = EmbeddedRedis()
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="autoscale-demo-") as logs:
            samples = asyncio.run(
                run_demo(
                    server.url,
                    "demo:",
                    policy,
                    args.sessions,
                    args.utterances,
                    args.deadline,
                    args.poll,
                    Path(logs),
                )  # fmt: skip
            )
    finally:
        server.stop()
    ok = succeeded(samples)
    peak = max((s.desired for s in samples), default=0)
    print(
        f"{'OK' if ok else 'FAILED'}: peak {peak} replicas, "
        f"{'drained and back at zero' if ok else 'did not drain and return to zero in time'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
