"""The ASR worker as a real process against a real redis-server, with the bundled model."""

from __future__ import annotations

import asyncio
import time

import msgpack
import redis.asyncio as aioredis

from shared.audio import decode_file, float32_to_pcm16
from shared.keys import ASR_GROUP, EN_POOL, Keys
from shared.redis_util import entry, entry_data
from shared.schemas import AsrJob, Transcript, decode_as, encode
from shared.session_state import Field, mapping
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
    await redis_client.xadd(keys.asr_jobs(EN_POOL), entry(encode(job)))

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
    pending = await redis_client.xpending(keys.asr_jobs(EN_POOL), ASR_GROUP)
    assert pending["pending"] == 0
    assert await redis_client.xlen(keys.asr_jobs(EN_POOL)) == 0
    await pubsub.aclose()
    assert worker.alive()


async def test_poison_jobs_go_to_dead_letter_and_worker_carries_on(
    spawn, redis_client: aioredis.Redis, key_prefix: str, corpus
) -> None:
    keys = Keys(key_prefix)
    worker = spawn("asr-worker")
    await redis_client.xadd(keys.asr_jobs(EN_POOL), {b"d": b"\xc1\xc1 not msgpack"})
    await redis_client.xadd(
        keys.asr_jobs(EN_POOL), {b"d": msgpack.packb({"type": "asr_job", "v": 1})}
    )
    await redis_client.xadd(keys.asr_jobs(EN_POOL), {b"other": b"field"})
    audio = decode_file(corpus / "librispeech" / "1089-134691-0000.flac")
    good = AsrJob(
        session_id="s2", segment=0, start=0, end=len(audio) / 16000, pcm=float32_to_pcm16(audio),
        language="en",
    )  # fmt: skip
    await redis_client.xadd(keys.asr_jobs(EN_POOL), entry(encode(good)))

    async def transcribed():
        return await redis_client.xrange(keys.transcript("s2"))

    kept = await wait_for(transcribed, 90)
    assert "wait no longer" in decode_as(entry_data(kept[0][1]), Transcript).text.lower()
    dead = await redis_client.xrange(keys.asr_dead(EN_POOL))
    assert len(dead) == 3
    assert all(b"schema" in fields[b"error"] for _id, fields in dead)
    assert (await redis_client.xpending(keys.asr_jobs(EN_POOL), ASR_GROUP))["pending"] == 0
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
        await redis_client.xadd(keys.asr_jobs(EN_POOL), entry(encode(job)))

    async def both():
        got = await redis_client.xrange(keys.transcript("s3"))
        return got if len(got) == 2 else None

    results = [decode_as(entry_data(f), Transcript) for _id, f in await wait_for(both, 90)]
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
        await redis_client.xadd(keys.asr_partials(EN_POOL), entry(encode(job)))
    marks = mapping({Field.PARTIAL_SEG: 1, Field.PARTIAL_REV: 30})
    await redis_client.hset(keys.session("f"), mapping=marks)
    final = AsrJob(session_id="f", segment=0, start=0, end=end, pcm=pcm, enqueued_at=time.time())
    await redis_client.xadd(keys.asr_jobs(EN_POOL), entry(encode(final)))
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
        return await redis_client.xlen(keys.asr_partials(EN_POOL)) == 0

    await wait_for(drained, 30)
    assert (await redis_client.xpending(keys.asr_partials(EN_POOL), ASR_GROUP))["pending"] == 0
    # a partial of a segment whose final is out is stale too
    await redis_client.hset(keys.session("f"), str(Field.FINAL_SEG), 1)
    late = AsrJob(session_id="f", segment=1, start=0, end=end, pcm=pcm, final=False, rev=31)
    await redis_client.xadd(keys.asr_partials(EN_POOL), entry(encode(late)))
    await wait_for(drained, 30)
    assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0) is None
    await pubsub.aclose()


async def test_partials_read_together_keep_only_the_newest_and_a_new_final_goes_first(
    spawn, redis_client: aioredis.Redis, key_prefix: str, corpus
) -> None:
    """No marks in the session hash: the worker reads three revisions of one open segment
    together and decodes only the newest (the older ones are dropped unread); a final that
    arrives while that partial is decoded is published before the next session's partial."""
    keys = Keys(key_prefix)
    worker = spawn("asr-worker")
    await wait_for(lambda: _logged(worker, "ready on"), 90)
    audio = decode_file(corpus / "librispeech" / "1089-134686-0000.flac")  # 10 s
    pcm, end = float32_to_pcm16(audio), len(audio) / 16000
    pubsub = redis_client.pubsub()
    await pubsub.psubscribe(keys.results("*"))

    def job(sid: str, rev: int, final: bool = False) -> bytes:
        return encode(
            AsrJob(session_id=sid, segment=1, start=0, end=end, pcm=pcm, final=final, rev=rev)
        )

    async with redis_client.pipeline(transaction=True) as pipe:  # arrive together
        for rev in (1, 2, 3):
            pipe.xadd(keys.asr_partials(EN_POOL), entry(job("p", rev)))
        await pipe.execute()

    async def one() -> Transcript:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg:
                return decode_as(msg["data"], Transcript)
        raise TimeoutError("no result")

    async def dropped() -> bool:  # rev 3 stays on the stream until it is decoded
        return await redis_client.xlen(keys.asr_partials(EN_POOL)) == 1

    await wait_for(dropped, 30, interval=0.01)
    await redis_client.xadd(keys.asr_partials(EN_POOL), entry(job("q", 1)))
    await redis_client.xadd(keys.asr_jobs(EN_POOL), entry(job("f", 0, final=True)))
    got = [await one() for _ in range(3)]
    assert [(t.session_id, t.final, t.rev) for t in got] == [
        ("p", False, 3),
        ("f", True, 0),
        ("q", False, 1),
    ]
    assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0) is None
    assert (await redis_client.xpending(keys.asr_partials(EN_POOL), ASR_GROUP))["pending"] == 0
    await pubsub.aclose()
    assert worker.alive()


async def _logged(worker, text: str) -> bool:
    return text in worker.log()
