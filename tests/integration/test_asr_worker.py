"""The ASR worker as a real process against a real redis-server, with the bundled model."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import msgpack
import redis.asyncio as aioredis

from shared.audio import decode_file, float32_to_pcm16
from shared.keys import ASR_GROUP, Keys
from shared.redis_util import entry
from shared.schemas import AsrJob, Transcript, decode_as, encode
from whisper_streaming.evaluation import wer


async def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(interval)
    raise TimeoutError("condition not met in time")


async def test_job_is_transcribed_published_kept_and_acked(
    spawn, redis_client: aioredis.Redis, key_prefix: str, corpus
) -> None:
    keys = Keys(key_prefix)
    worker = spawn("asr-worker")
    audio = decode_file(corpus / "librispeech" / "1089-134691-0001.flac")
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(keys.results("s1"))
    job = AsrJob(
        session_id="s1", segment=0, start=10.0, end=10.0 + len(audio) / 16000,
        pcm=float32_to_pcm16(audio), language="en", enqueued_at=time.time(),
    )  # fmt: skip
    await redis_client.xadd(keys.asr_jobs, entry(encode(job)))

    async def published():
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        return msg

    msg = await wait_for(published, 90)
    result = decode_as(msg["data"], Transcript)
    ref = "FOR A FULL HOUR HE HAD PACED UP AND DOWN WAITING BUT HE COULD WAIT NO LONGER"
    assert wer([(ref, result.text)]).wer <= 0.15, result.text
    assert result.segment == 0 and result.language == "en"
    # word times are seconds of session audio: shifted by the segment's start
    assert result.words and all(10.0 <= w.start <= w.end <= job.end + 0.5 for w in result.words)
    assert result.processing_time > 0
    kept = await redis_client.xrange(keys.transcript("s1"))
    assert len(kept) == 1
    assert 0 < await redis_client.ttl(keys.transcript("s1"))
    pending = await redis_client.xpending(keys.asr_jobs, ASR_GROUP)
    assert pending["pending"] == 0
    assert await redis_client.xlen(keys.asr_jobs) == 0
    await pubsub.aclose()
    assert worker.alive()


async def test_poison_jobs_go_to_dead_letter_and_worker_carries_on(
    spawn, redis_client: aioredis.Redis, key_prefix: str, corpus
) -> None:
    keys = Keys(key_prefix)
    worker = spawn("asr-worker")
    await redis_client.xadd(keys.asr_jobs, {b"d": b"\xc1\xc1 not msgpack"})
    await redis_client.xadd(keys.asr_jobs, {b"d": msgpack.packb({"type": "asr_job", "v": 1})})
    await redis_client.xadd(keys.asr_jobs, {b"other": b"field"})
    audio = decode_file(corpus / "librispeech" / "1089-134691-0000.flac")
    good = AsrJob(
        session_id="s2", segment=0, start=0, end=len(audio) / 16000, pcm=float32_to_pcm16(audio),
        language="en",
    )  # fmt: skip
    await redis_client.xadd(keys.asr_jobs, entry(encode(good)))

    async def transcribed():
        return await redis_client.xrange(keys.transcript("s2"))

    kept = await wait_for(transcribed, 90)
    assert "wait no longer" in decode_as(kept[0][1][b"d"], Transcript).text.lower()
    dead = await redis_client.xrange(keys.asr_dead)
    assert len(dead) == 3
    assert all(b"schema" in fields[b"error"] for _id, fields in dead)
    assert (await redis_client.xpending(keys.asr_jobs, ASR_GROUP))["pending"] == 0
    assert worker.alive()


async def test_silence_and_noise_give_no_text(
    spawn, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """No "Thank you." hallucinations: silence and white noise come back empty."""
    import numpy as np

    keys = Keys(key_prefix)
    spawn("asr-worker")
    rng = np.random.default_rng(0)
    silence = np.zeros(16000 * 3, dtype=np.float32)
    noise = (rng.standard_normal(16000 * 3) * 0.05).astype(np.float32)
    for i, audio in enumerate([silence, noise]):
        job = AsrJob(
            session_id="s3", segment=i, start=i * 3.0, end=i * 3.0 + 3, pcm=float32_to_pcm16(audio)
        )
        await redis_client.xadd(keys.asr_jobs, entry(encode(job)))

    async def both():
        got = await redis_client.xrange(keys.transcript("s3"))
        return got if len(got) == 2 else None

    results = [decode_as(f[b"d"], Transcript) for _id, f in await wait_for(both, 90)]
    assert [r.text for r in results] == ["", ""], [r.text for r in results]


async def test_finals_go_before_a_flood_of_partials_and_stale_partials_are_dropped(
    spawn, redis_client: aioredis.Redis, key_prefix: str, corpus
) -> None:
    """30 partial jobs wait when a final arrives: the worker takes the final first, and of the
    partials it transcribes only those still current (the newest revision of an open segment)."""
    keys = Keys(key_prefix)
    audio = decode_file(corpus / "librispeech" / "1089-134691-0000.flac")
    pcm = float32_to_pcm16(audio)
    end = len(audio) / 16000
    for rev in range(1, 31):  # segment 1 is still open; its newest revision is 30
        job = AsrJob(session_id="f", segment=1, start=0, end=end, pcm=pcm, final=False, rev=rev)
        await redis_client.xadd(keys.asr_partials, entry(encode(job)))
    await redis_client.hset(keys.session("f"), mapping={"partial_seg": 1, "partial_rev": 30})
    final = AsrJob(session_id="f", segment=0, start=0, end=end, pcm=pcm, enqueued_at=time.time())
    await redis_client.xadd(keys.asr_jobs, entry(encode(final)))
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(keys.results("f"))
    spawn("asr-worker")

    received = []
    deadline = time.monotonic() + 90
    while len(received) < 2 and time.monotonic() < deadline:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if msg:
            received.append(decode_as(msg["data"], Transcript))
    assert [(t.final, t.segment) for t in received] == [(True, 0), (False, 1)]
    assert received[1].rev == 30  # the 29 older revisions were stale: never transcribed
    assert "wait no longer" in received[1].text.lower()

    async def drained():
        return await redis_client.xlen(keys.asr_partials) == 0

    await wait_for(drained, 30)
    assert (await redis_client.xpending(keys.asr_partials, ASR_GROUP))["pending"] == 0
    # a partial of a segment whose final is out is stale too
    await redis_client.hset(keys.session("f"), "final_seg", 1)
    late = AsrJob(session_id="f", segment=1, start=0, end=end, pcm=pcm, final=False, rev=31)
    await redis_client.xadd(keys.asr_partials, entry(encode(late)))
    await wait_for(drained, 30)
    assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0) is None
    await pubsub.aclose()


async def test_a_pool_with_a_finals_only_worker_routes_finals_to_it_and_partials_wait(
    spawn, redis_client: aioredis.Redis, key_prefix: str, corpus
) -> None:
    """As `up --finals-only 1` starts them: a worker that also serves partials
    (ASR_FINALS_POLL_MS, ASR_PARTIALS_YIELD) leaves new finals to the idle finals-only worker,
    takes a final that waits (nothing starves), and starts no partial while a final is decoded."""
    keys = Keys(key_prefix)
    finals = spawn("asr-worker", CONSUMER_NAME="finals", ASR_PARTIALS="false")
    both = spawn(
        "asr-worker", CONSUMER_NAME="both", ASR_FINALS_POLL_MS="100", ASR_PARTIALS_YIELD="true"
    )

    async def ready():
        return all("ready on" in p.log() for p in (finals, both))

    await wait_for(ready, 90)
    await asyncio.sleep(0.5)  # both are waiting on their streams now
    audio = decode_file(corpus / "librispeech" / "1089-134691-0000.flac")
    pcm, end = float32_to_pcm16(audio), len(audio) / 16000
    pubsub = redis_client.pubsub()
    await pubsub.psubscribe(keys.results("*"))

    async def results(n: int) -> list[Transcript]:
        got: list[Transcript] = []
        deadline = time.monotonic() + 90
        while len(got) < n and time.monotonic() < deadline:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg:
                got.append(decode_as(msg["data"], Transcript))
        assert len(got) == n, got
        return got

    def final(sid: str) -> AsrJob:
        return AsrJob(session_id=sid, segment=0, start=0, end=end, pcm=pcm, language="en")

    # one at a time: every final goes to the idle finals-only worker
    for i in range(3):
        await redis_client.xadd(keys.asr_jobs, entry(encode(final(f"one{i}"))))
        (got,) = await results(1)
        assert got.worker == "finals", got.worker
    # two at once: the second waits for no one, the other worker takes it
    for sid in ("two0", "two1"):
        await redis_client.xadd(keys.asr_jobs, entry(encode(final(sid))))
    assert {t.worker for t in await results(2)} == {"finals", "both"}
    # a final and a partial at once: the partial is decoded only when the final is out
    await redis_client.hset(keys.session("p"), mapping={"partial_seg": 1, "partial_rev": 1})
    await redis_client.xadd(keys.asr_jobs, entry(encode(final("f"))))
    partial = AsrJob(
        session_id="p", segment=1, start=0, end=end, pcm=pcm, language="en", final=False, rev=1
    )
    await redis_client.xadd(keys.asr_partials, entry(encode(partial)))
    order = await results(2)
    assert [(t.session_id, t.final, t.worker) for t in order] == [
        ("f", True, "finals"),
        ("p", False, "both"),
    ]
    await pubsub.aclose()
    assert finals.alive() and both.alive()


async def test_a_partial_under_way_is_stopped_while_a_final_is_decoded(
    spawn, redis_client: aioredis.Redis, key_prefix: str, corpus
) -> None:
    """ASR_PARTIALS_PREEMPT: the worker's partials run in a child process that is stopped while
    a final is in progress in the pool, so a partial that started first ends after the finals;
    meanwhile the worker decodes a final that waits; if the child dies, that partial is dropped
    and the next one gets a new child."""
    keys = Keys(key_prefix)
    finals = spawn("asr-worker", CONSUMER_NAME="finals", ASR_PARTIALS="false")
    both = spawn(
        "asr-worker", CONSUMER_NAME="both", LOG_LEVEL="INFO", ASR_FINALS_POLL_MS="100",
        ASR_PARTIALS_YIELD="true", ASR_PARTIALS_PREEMPT="true",
    )  # fmt: skip

    async def ready():
        return all("ready on" in p.log() for p in (finals, both))

    await wait_for(ready, 90)
    assert "partial decoder ready" in both.log()
    audio = decode_file(corpus / "librispeech" / "1089-134686-0000.flac")  # 10 s
    pcm, end = float32_to_pcm16(audio), len(audio) / 16000
    pubsub = redis_client.pubsub()
    await pubsub.psubscribe(keys.results("*"))

    async def partial(rev: int) -> None:
        await redis_client.hset(keys.session("p"), mapping={"partial_seg": 1, "partial_rev": rev})
        job = AsrJob(
            session_id="p", segment=1, start=0, end=end, pcm=pcm, language="en", final=False,
            rev=rev,
        )  # fmt: skip
        await redis_client.xadd(keys.asr_partials, entry(encode(job)))

    def child() -> int:  # the worker's current partial decoder
        return int(both.log().rsplit("partial decoder ready (pid ", 1)[1].split(")")[0])

    async def partial_under_way(rev: int) -> int:
        """Send partial ``rev``; return once the child has spent 50 ms of CPU on it."""
        pid = child()
        before = _cpu_ticks(pid)
        await partial(rev)

        async def busy():
            return _cpu_ticks(pid) >= before + 5

        await wait_for(busy, 30, interval=0.01)
        return pid

    async def next_result() -> Transcript:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg:
                return decode_as(msg["data"], Transcript)
        raise TimeoutError("no result")

    await partial_under_way(1)
    for sid in ("f1", "f2"):  # the second waits: the worker holding its partial takes it
        final = AsrJob(session_id=sid, segment=0, start=0, end=end, pcm=pcm, language="en")
        await redis_client.xadd(keys.asr_jobs, entry(encode(final)))
    got = [await next_result() for _ in range(3)]
    assert {(t.session_id, t.worker) for t in got[:2]} == {("f1", "finals"), ("f2", "both")}
    assert (got[2].session_id, got[2].final, got[2].worker) == ("p", False, "both")
    assert wer([(got[0].text, got[2].text)]).wer <= 0.1  # the same audio, the same words

    # the child dies in the middle of a partial: dropped; the next partial gets a new child
    os.kill(await partial_under_way(2), signal.SIGKILL)

    async def dropped():
        return "partial decoder died" in both.log()

    await wait_for(dropped, 30)
    await partial(3)
    third = await next_result()
    assert (third.session_id, third.rev, third.final) == ("p", 3, False)
    assert both.log().count("partial decoder ready") == 2

    # the worker is killed while its child is stopped: the child does not linger
    pid = await partial_under_way(4)
    final = AsrJob(session_id="f3", segment=0, start=0, end=end, pcm=pcm, language="en")
    await redis_client.xadd(keys.asr_jobs, entry(encode(final)))

    async def stopped():
        return _state(pid) == "T"

    await wait_for(stopped, 30, interval=0.01)
    os.kill(both.pid, signal.SIGKILL)

    async def gone():
        return _state(pid) in (None, "Z")

    await wait_for(gone, 10)
    await pubsub.aclose()
    assert finals.alive()


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, None if the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _state(pid: int) -> str | None:
    """The process state letter (T: stopped, Z: zombie), None if gone."""
    stat = _stat(pid)
    return stat[0] if stat else None


def _cpu_ticks(pid: int) -> int:
    """User + system CPU time of the process, in clock ticks (10 ms)."""
    stat = _stat(pid)
    return int(stat[11]) + int(stat[12]) if stat else 0
