"""The Redis Streams under the workers, hardened: groups lost to a FLUSHALL, a DEL or a restart
without persistence are made again; job and session streams are never trimmed; a decode longer
than the claim idle time is not decoded twice; dead workers' consumers and pending partials are
removed. Real redis-servers of their own, real worker processes, the bundled model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import numpy as np
import pytest
import redis.asyncio as aioredis

from shared.audio import decode_file, float32_to_pcm16
from shared.keys import ASR_GROUP, EN_POOL, VAD_GROUP, Keys
from shared.redis_util import entry, entry_data
from shared.schemas import AsrJob, AudioChunk, AudioEnd, SessionStart, Transcript, decode_as, encode
from tests.integration.test_asr_worker import wait_for
from tests.integration.test_vad_worker import stream_session, wait_done
from whisper_streaming.up import EmbeddedRedis

FAST = {"ASR_CPU_THREADS": "1", "ASR_DEVICE": "cpu"}
"""One CPU thread, even where a GPU is visible: the slow decode of the claim test stays slow."""


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own (without persistence): it is flushed and restarted."""
    server = EmbeddedRedis(extra_args=["--stream-node-max-entries", "4"])
    server.start()
    yield server
    server.stop()


def restart_empty(server: EmbeddedRedis) -> EmbeddedRedis:
    """Restart on the same port with nothing kept (no persistence): every stream is gone."""
    server.stop()
    fresh = EmbeddedRedis(port=server.port, extra_args=server.extra_args)
    fresh.start()
    return fresh


def job_of(corpus, sid: str, name: str = "1089-134691-0001.flac", **kw) -> AsrJob:
    audio = decode_file(corpus / "librispeech" / name)
    return AsrJob(
        session_id=sid, segment=0, start=0.0, end=len(audio) / 16000,
        pcm=float32_to_pcm16(audio), language="en", enqueued_at=time.time(), **kw,
    )  # fmt: skip


def long_job(corpus, sid: str, seconds: float = 30.0, **kw) -> AsrJob:
    """A segment long enough that its decode takes seconds on one CPU thread."""
    sonnet = decode_file(corpus / "long" / "sonnet001_librivox.wav")  # 53 s
    audio = np.concatenate([sonnet] * 4)[: int(seconds * 16000)]
    return AsrJob(
        session_id=sid, segment=0, start=0.0, end=len(audio) / 16000,
        pcm=float32_to_pcm16(audio), language="en", enqueued_at=time.time(), **kw,
    )  # fmt: skip


async def transcribed(r: aioredis.Redis, keys: Keys, sid: str, timeout: float = 90) -> Transcript:
    async def kept():
        return await r.xrange(keys.transcript(sid))

    got = await wait_for(kept, timeout)
    return decode_as(entry_data(got[0][1]), Transcript)


async def consumers(r: aioredis.Redis, stream: str, group: str) -> set[str]:
    return {c["name"].decode() for c in await r.xinfo_consumers(stream, group)}


async def test_asr_worker_recreates_its_groups_after_del_flushall_and_a_restart(
    spawn, own_redis: EmbeddedRedis, key_prefix: str, corpus
) -> None:
    keys = Keys(key_prefix)
    server = own_redis
    worker = spawn("asr-worker", REDIS_URL=server.url, **FAST)
    r = aioredis.Redis.from_url(server.url)
    try:
        await r.xadd(keys.asr_jobs(EN_POOL), entry(encode(job_of(corpus, "a1"))))
        assert "wait no longer" in (await transcribed(r, keys, "a1")).text.lower()

        await r.delete(keys.asr_jobs(EN_POOL), keys.asr_partials(EN_POOL))  # an operator's DEL
        await r.xadd(keys.asr_jobs(EN_POOL), entry(encode(job_of(corpus, "a2"))))
        assert "wait no longer" in (await transcribed(r, keys, "a2", 60)).text.lower()

        await r.flushall()
        await r.xadd(keys.asr_jobs(EN_POOL), entry(encode(job_of(corpus, "a3"))))
        assert "wait no longer" in (await transcribed(r, keys, "a3", 60)).text.lower()

        await r.aclose()
        server = restart_empty(server)
        r = aioredis.Redis.from_url(server.url)
        await r.xadd(keys.asr_jobs(EN_POOL), entry(encode(job_of(corpus, "a4"))))
        assert "wait no longer" in (await transcribed(r, keys, "a4", 60)).text.lower()
        assert worker.alive(), worker.log()[-3000:]
        losses = worker.log().count("consumer groups lost")
        assert 3 <= losses <= 6, worker.log()[-3000:]  # once per loss, not once per read
    finally:
        await r.aclose()
        worker.stop()
        server.stop()


async def test_vad_worker_recreates_its_group_after_del_flushall_and_a_restart(
    spawn, own_redis: EmbeddedRedis, key_prefix: str, corpus
) -> None:
    keys = Keys(key_prefix)
    server = own_redis
    worker = spawn("vad-worker", REDIS_URL=server.url)
    pcm = float32_to_pcm16(decode_file(corpus / "long" / "jfk.flac"))
    r = aioredis.Redis.from_url(server.url)

    async def serves(sid: str) -> None:
        done = asyncio.create_task(wait_done(r, keys, sid, 60))
        await asyncio.sleep(0.2)
        await stream_session(r, keys, sid, pcm)
        assert (await done).segments >= 2
        assert await r.xlen(keys.asr_jobs(EN_POOL)) >= 2

    try:
        await serves("v1")
        await r.delete(keys.sessions)
        await serves("v2")
        await r.flushall()
        await serves("v3")
        await r.aclose()
        server = restart_empty(server)
        r = aioredis.Redis.from_url(server.url)
        await serves("v4")
        # the pools' ASR groups were made again too (KEDA reads their lag)
        assert ASR_GROUP.encode() in [g["name"] for g in await r.xinfo_groups(keys.asr_jobs("en"))]
        assert worker.alive(), worker.log()[-3000:]
        assert 3 <= worker.log().count("consumer groups lost") <= 6, worker.log()[-3000:]
    finally:
        await r.aclose()
        worker.stop()
        server.stop()


async def test_an_asr_outage_longer_than_the_old_maxlen_loses_no_job(
    spawn, own_redis: EmbeddedRedis, key_prefix: str, corpus
) -> None:
    """No ASR worker: a session's utterances pile up on its pool's stream, well past the
    smallest old JOBS_STREAM_MAXLEN (100), and none is trimmed away."""
    keys = Keys(key_prefix)
    r = aioredis.Redis.from_url(own_redis.url)
    spawn(
        "vad-worker", REDIS_URL=own_redis.url, JOBS_STREAM_MAXLEN="100", VAD_MAX_SEGMENT_S="2",
        VAD_MIN_SILENCE_MS="100",
    )  # fmt: skip
    speech = decode_file(corpus / "long" / "sonnet001_librivox.wav")
    pcm = float32_to_pcm16(np.concatenate([speech] * 5))
    try:
        done = asyncio.create_task(wait_done(r, keys, "out", 240))
        await asyncio.sleep(0.2)
        await stream_session(r, keys, "out", pcm, chunk=16000)
        total = (await done).segments
        assert total > 120, total
        jobs = [decode_as(entry_data(f), AsrJob) for _i, f in await r.xrange(keys.asr_jobs("en"))]
        assert [j.segment for j in jobs] == list(range(total))
    finally:
        await r.aclose()


async def test_a_decode_longer_than_the_claim_idle_time_is_not_decoded_twice(
    spawn, redis_client: aioredis.Redis, key_prefix: str, corpus
) -> None:
    keys = Keys(key_prefix)
    workers = [spawn("asr-worker", ASR_CLAIM_IDLE_MS="1000", **FAST) for _ in range(2)]
    for w in workers:
        await wait_for(lambda w=w: _logged(w, "ready on"), 90)
    await redis_client.xadd(keys.asr_jobs(EN_POOL), entry(encode(long_job(corpus, "slow", 160))))
    result = await transcribed(redis_client, keys, "slow", 120)
    assert result.processing_time > 3.0, result.processing_time  # 3 x the claim idle time
    for w in workers:
        assert "reclaimed job" not in w.log(), w.log()[-3000:]
    assert len(await redis_client.xrange(keys.transcript("slow"))) == 1


async def test_a_killed_asr_workers_partial_and_consumer_are_reclaimed_and_removed(
    spawn, redis_client: aioredis.Redis, key_prefix: str, corpus
) -> None:
    """SIGKILL mid-decode of a partial: a peer reclaims and drops the partial left pending (it
    is stale by now), and the dead worker's consumer leaves both groups; the peer serves on."""
    keys = Keys(key_prefix)
    jobs, partials = keys.asr_jobs(EN_POOL), keys.asr_partials(EN_POOL)
    env = {"ASR_CLAIM_IDLE_MS": "1000"} | FAST
    victim = spawn("asr-worker", CONSUMER_NAME="asr-victim", **env)
    await wait_for(lambda: _logged(victim, "ready on"), 90)
    await redis_client.xadd(partials, entry(encode(long_job(corpus, "k", 40, final=False, rev=1))))

    async def holds() -> bool:
        return bool(
            await redis_client.xpending_range(
                partials, ASR_GROUP, "-", "+", 10, consumername="asr-victim"
            )
        )

    await wait_for(holds, 60, interval=0.01)
    victim.kill()
    heir = spawn("asr-worker", CONSUMER_NAME="asr-heir", **env)
    await redis_client.xadd(jobs, entry(encode(job_of(corpus, "k2"))))
    assert "wait no longer" in (await transcribed(redis_client, keys, "k2", 120)).text.lower()

    async def cleaned() -> bool:
        if (await redis_client.xpending(partials, ASR_GROUP))["pending"]:
            return False
        names = await consumers(redis_client, jobs, ASR_GROUP)
        names |= await consumers(redis_client, partials, ASR_GROUP)
        return "asr-victim" not in names

    await wait_for(cleaned, 60)
    assert await redis_client.xlen(partials) == 0
    assert "asr-heir" in await consumers(redis_client, jobs, ASR_GROUP)  # a live one stays
    assert heir.alive()


async def test_a_killed_vad_workers_consumer_is_removed_after_its_session_is_taken_over(
    spawn, redis_client: aioredis.Redis, key_prefix: str, corpus
) -> None:
    keys = Keys(key_prefix)
    victim = spawn("vad-worker", CONSUMER_NAME="vad-victim", VAD_CLAIM_IDLE_MS="2000")
    await wait_for(lambda: _logged(victim, "ready on"), 60)
    pcm = float32_to_pcm16(decode_file(corpus / "long" / "jfk.flac"))
    half = len(pcm) // 2 // 2 * 2
    seq = await stream_session(
        redis_client, keys, "t", pcm[:half], start=SessionStart(session_id="t"), end=False
    )

    async def owned() -> bool:
        return bool(await redis_client.xpending_range(keys.sessions, VAD_GROUP, "-", "+", 5))

    await wait_for(owned, 60)
    victim.kill()
    heir = spawn("vad-worker", CONSUMER_NAME="vad-heir", VAD_CLAIM_IDLE_MS="2000")
    done = asyncio.create_task(wait_done(redis_client, keys, "t", 90))
    await asyncio.sleep(0.2)
    await stream_session(redis_client, keys, "t", pcm[half:], seq=seq)
    assert (await done).segments >= 2

    async def removed() -> bool:
        return "vad-victim" not in await consumers(redis_client, keys.sessions, VAD_GROUP)

    await wait_for(removed, 60)
    assert "vad-heir" in await consumers(redis_client, keys.sessions, VAD_GROUP)
    assert heir.alive()


async def _logged(worker, text: str) -> bool:
    return text in worker.log()


async def _drop_clients(r: aioredis.Redis) -> None:
    """Close every other client's connection, as a dropped network or a restart would."""
    await r.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")


async def test_a_job_whose_delivery_was_lost_is_decoded_when_the_worker_reconnects(
    spawn, own_redis: EmbeddedRedis, key_prefix: str, corpus
) -> None:
    """Redis served a worker's XREADGROUP and the reply never reached it (the connection
    dropped): the job is pending to the worker, which never saw it. Once the worker is back on
    Redis it decodes the job at once, not after ASR_CLAIM_IDLE_MS (10 minutes here) in the
    claim round. The lost reply is made exactly: the job is added and delivered to the worker's
    consumer name in one transaction, then the worker's connections are closed."""
    keys = Keys(key_prefix)
    jobs = keys.asr_jobs(EN_POOL)
    worker = spawn(
        "asr-worker", REDIS_URL=own_redis.url, CONSUMER_NAME="asr-0",
        ASR_CLAIM_IDLE_MS="600000", **FAST,
    )  # fmt: skip
    r = aioredis.Redis.from_url(own_redis.url)
    try:
        await wait_for(lambda: _logged(worker, "ready on"), 90)
        async with r.pipeline(transaction=True) as pipe:
            pipe.xadd(jobs, entry(encode(job_of(corpus, "lost"))))
            pipe.xreadgroup(ASR_GROUP, "asr-0", {jobs: ">"}, count=1)
            _id, delivered = await pipe.execute()
        assert delivered and delivered[0][1], delivered  # the worker's consumer holds it now
        await asyncio.sleep(0.5)
        assert not await r.xrange(keys.transcript("lost"))  # the worker never saw it
        await _drop_clients(r)
        result = await transcribed(r, keys, "lost", 60)
        assert "wait no longer" in result.text.lower(), result.text
        assert "resumed job" in worker.log(), worker.log()[-3000:]
        assert (await r.xpending(jobs, ASR_GROUP))["pending"] == 0
        assert worker.alive()
    finally:
        await r.aclose()


async def test_a_restarted_worker_decodes_the_jobs_its_name_held_at_once(
    spawn, own_redis: EmbeddedRedis, key_prefix: str, corpus
) -> None:
    """A worker comes back under the same consumer name (a StatefulSet pod, a restarted
    container) while its earlier process held a job: the job is decoded as it starts, not after
    ASR_CLAIM_IDLE_MS."""
    keys = Keys(key_prefix)
    jobs = keys.asr_jobs(EN_POOL)
    r = aioredis.Redis.from_url(own_redis.url)
    try:
        await r.xgroup_create(jobs, ASR_GROUP, id="0", mkstream=True)
        await r.xadd(jobs, entry(encode(job_of(corpus, "held"))))
        assert await r.xreadgroup(ASR_GROUP, "asr-0", {jobs: ">"}, count=1)
        worker = spawn(
            "asr-worker", REDIS_URL=own_redis.url, CONSUMER_NAME="asr-0",
            ASR_CLAIM_IDLE_MS="600000", **FAST,
        )  # fmt: skip
        result = await transcribed(r, keys, "held", 90)
        assert "wait no longer" in result.text.lower(), result.text
        assert "resumed job" in worker.log(), worker.log()[-3000:]
    finally:
        await r.aclose()


async def test_a_session_whose_delivery_was_lost_is_owned_when_the_vad_worker_reconnects(
    spawn, own_redis: EmbeddedRedis, key_prefix: str, corpus
) -> None:
    """The same lost reply for a VAD worker's read of a new session: the worker owns the
    session once it is back on Redis, not after VAD_CLAIM_IDLE_MS (10 minutes here)."""
    keys = Keys(key_prefix)
    vad = spawn(
        "vad-worker", REDIS_URL=own_redis.url, CONSUMER_NAME="vad-0",
        VAD_CLAIM_IDLE_MS="600000",
    )  # fmt: skip
    r = aioredis.Redis.from_url(own_redis.url)
    try:
        await wait_for(lambda: _logged(vad, "ready on"), 90)
        start = SessionStart(session_id="lostsess", language="en")
        async with r.pipeline(transaction=True) as pipe:
            pipe.xadd(keys.sessions, entry(encode(start)))
            pipe.xreadgroup(VAD_GROUP, "vad-0", {keys.sessions: ">"}, count=1)
            _id, delivered = await pipe.execute()
        assert delivered and delivered[0][1], delivered
        await _drop_clients(r)
        pcm = float32_to_pcm16(decode_file(corpus / "long" / "jfk.flac"))
        done = asyncio.create_task(wait_done(r, keys, "lostsess", 90))
        await asyncio.sleep(0.2)  # subscribed
        seq = 0
        for i in range(0, len(pcm), 32000):
            seq += 1
            chunk = AudioChunk(session_id="lostsess", seq=seq, pcm=pcm[i : i + 32000])
            await r.xadd(keys.audio("lostsess"), entry(encode(chunk)))
        await r.xadd(
            keys.audio("lostsess"), entry(encode(AudioEnd(session_id="lostsess", seq=seq + 1)))
        )
        assert (await done).segments >= 1
        assert "resumed session entry" in vad.log(), vad.log()[-3000:]
        assert vad.alive()
    finally:
        await r.aclose()
