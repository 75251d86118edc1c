"""KEDA's view of the real pipeline: what its redis-streams scaler reads (XINFO GROUPS lag and
XPENDING on Redis 7) while VAD and ASR worker processes run against a real redis-server.

With the ASR pool at zero and audio flowing, the lag on asr:jobs rises (and KEDA's formula asks
for workers); with workers running it drains back to zero (and the formula goes back to zero).
The same pieces make up `make autoscale-demo` (deploy/autoscale_demo.py)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import time

import redis.asyncio as aioredis

from shared.keys import ASR_GROUP, EN_POOL, Keys
from shared.schemas import SessionDone, decode
from tests.deploy.conftest import DEPLOY, REPO

_spec = importlib.util.spec_from_file_location("autoscale_demo", DEPLOY / "autoscale_demo.py")
assert _spec and _spec.loader
demo = importlib.util.module_from_spec(_spec)
sys.modules["autoscale_demo"] = demo
_spec.loader.exec_module(demo)

WORKER_ENV = {"ASR_BEAM_SIZE": "1", "ASR_CPU_THREADS": "1"}


async def wait_for(predicate, timeout: float, what: str, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            assert p.alive(), f"{p.role} exited:\n{p.log()[-3000:]}"
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def probe(redis_url: str, prefix: str, consumer: str, role: str) -> int:
    env = dict(os.environ) | {
        "REDIS_URL": redis_url,
        "KEY_PREFIX": prefix,
        "CONSUMER_NAME": consumer,
        "HEARTBEAT_TTL_S": "3",
        "HEARTBEAT_INTERVAL_S": "0.5",
    }
    cmd = [sys.executable, str(DEPLOY / "docker" / "heartbeat_probe.py"), role]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, timeout=30).returncode


async def test_lag_rises_without_asr_workers_and_drains_with_them(
    spawn, redis_server, redis_client: aioredis.Redis, key_prefix: str, corpus
) -> None:
    keys = Keys(key_prefix)

    # A fresh deployment: the first ASR pod creates the group, then KEDA scales the pool to zero
    # (SIGTERM: the worker leaves cleanly).
    first = spawn("asr-worker", **WORKER_ENV)

    async def first_ready() -> bool:
        return await redis_client.zscore(keys.heartbeats("asr"), "asr-worker-0") is not None

    await wait_for(first_ready, 90, "the first ASR worker's heartbeat", [first])
    assert probe(redis_server.url, key_prefix, "asr-worker-0", "asr") == 0  # readiness probe
    assert first.stop() == 0
    assert probe(redis_server.url, key_prefix, "asr-worker-0", "asr") == 1  # gone: not ready
    idle = await demo.scaler_view(redis_client, keys.asr_jobs(EN_POOL), ASR_GROUP)
    assert (idle.lag, idle.pending, idle.length) == (0, 0, 0)
    policy = demo.ScalePolicy(lag_count=2, max_replicas=2, cooldown_s=1.0, scale_down_window_s=0)
    formula = demo.KedaFormula(policy)
    assert formula.desired(idle, current=0, now=0.0) == 0  # nothing waiting: stays at zero

    # Audio flows through the VAD worker; no ASR worker runs.
    vad = spawn("vad-worker")
    audio = demo.burst_audio(sessions=2, utterances_per_session=2)
    sids = [f"burst-{i}" for i in range(len(audio))]
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(*(keys.results(s) for s in sids))
    feeding = asyncio.gather(
        *(demo.feed_session(redis_client, keys, s, a) for s, a in zip(sids, audio, strict=True))
    )
    done: dict[str, int] = {}
    lags: list[int] = []
    deadline = time.monotonic() + 90
    while len(done) < len(sids):
        assert time.monotonic() < deadline, f"VAD did not finish: {done}\n{vad.log()[-3000:]}"
        assert vad.alive(), vad.log()[-3000:]
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if msg:
            event = decode(msg["data"])
            if isinstance(event, SessionDone):
                done[event.session_id] = event.segments
        view = await demo.scaler_view(redis_client, keys.asr_jobs(EN_POOL), ASR_GROUP)
        assert view.lag is not None and view.pending == 0  # nobody reads: lag is exact
        lags.append(view.lag)
    await feeding
    await pubsub.aclose()
    segments = sum(done.values())
    backlog = await demo.scaler_view(redis_client, keys.asr_jobs(EN_POOL), ASR_GROUP)
    # every segment is a job; a speculative job cut before the pace was judged, and made void
    # since, may add one (the ASR worker drops it unread, docs/architecture.md)
    assert segments >= 4 and backlog.pending == 0
    assert backlog.lag == backlog.length and segments <= backlog.length <= segments + 2
    assert lags == sorted(lags) and lags[-1] <= backlog.length  # the lag only rises...
    assert len(set(lags)) >= 2  # ...and it did rise while the audio flowed
    wanted = formula.desired(backlog, current=0, now=1.0)
    assert wanted == min(policy.max_replicas, -(-backlog.lag // policy.lag_count)) >= 1

    # The pool wakes: the backlog drains to zero, every job acknowledged and removed.
    workers = [spawn("asr-worker", **WORKER_ENV) for _ in range(wanted)]
    seen: list[demo.ScalerView] = []

    async def drained() -> bool:
        view = await demo.scaler_view(redis_client, keys.asr_jobs(EN_POOL), ASR_GROUP)
        seen.append(view)
        return view.lag == 0 and view.pending == 0 and view.length == 0

    await wait_for(drained, 150, "asr:jobs to drain", workers)
    assert any((v.lag or 0) < segments for v in seen)
    assert await redis_client.xlen(keys.asr_dead(EN_POOL)) == 0
    finals = sum([await redis_client.xlen(keys.transcript(s)) for s in sids])
    assert 1 <= finals <= segments
    # KEDA's formula: held up during the cooldown after the last activity, then zero.
    assert formula.desired(seen[-1], current=wanted, now=1.5) >= 1  # within the cooldown
    assert formula.desired(seen[-1], current=wanted, now=5.0) == 0


def test_keda_formula() -> None:
    policy = demo.ScalePolicy(
        lag_count=5,
        pending_entries_count=1,
        min_replicas=0,
        max_replicas=4,
        cooldown_s=10,
        scale_down_window_s=30,
    )
    f = demo.KedaFormula(policy)
    view = demo.ScalerView
    assert f.desired(view(lag=0, pending=0, length=0), current=0, now=0) == 0
    assert f.desired(view(lag=1, pending=0, length=1), current=0, now=1) == 1  # activation
    assert f.desired(view(lag=12, pending=1, length=13), current=1, now=2) == 3  # ceil(12/5)
    assert f.desired(view(lag=100, pending=3, length=103), current=3, now=3) == 4  # max replicas
    assert f.desired(view(lag=0, pending=2, length=2), current=4, now=10) == 4  # stabilization
    assert f.desired(view(lag=0, pending=2, length=2), current=4, now=40) == 2  # in-flight trigger
    assert (
        f.desired(view(lag=0, pending=0, length=0), current=2, now=45) == 2
    )  # cooling, stabilized
    assert f.desired(view(lag=0, pending=0, length=0), current=1, now=51) == 0  # cooldown passed
    assert (
        f.desired(view(lag=None, pending=0, length=3), current=0, now=52) == 0
    )  # NULL lag reads 0
    assert not demo.succeeded([])
