"""Cross-session batching in the ASR worker, with the real model."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from shared.audio import decode_file, float32_to_pcm16
from shared.keys import ASR_GROUP, EN_POOL, Keys
from shared.redis_util import entry
from shared.schemas import AsrJob, Transcript, decode_as, encode
from shared.settings import Settings
from tests.conftest import librispeech
from whisper_streaming.evaluation import wer
from workers.asr import DecodeOptions, Transcriber, load_model
from workers.batching import BatchTranscriber


def jobs_for(utts, start: float = 5.0) -> list[AsrJob]:
    return [
        AsrJob(
            session_id=f"b{i}", segment=0, start=start, end=start + 1,
            pcm=float32_to_pcm16(decode_file(u.path)), language="en", enqueued_at=time.time(),
        )
        for i, u in enumerate(utts)
    ]  # fmt: skip


def test_batched_results_match_one_by_one() -> None:
    # batching is on by default only on CUDA, where the beam is 5 (ASR_BEAM_SIZE auto); greedy
    # decoding flips words on the batch's padding numerics more easily than a beam does
    settings = Settings(asr_beam_size=5)
    model = load_model(settings)
    opts = DecodeOptions.from_settings(settings)
    utts = [u for u in librispeech(held_out_only=True)][:4]
    jobs = jobs_for(utts)
    prompts = [None, "He hoped there would be stew.", None, "Concord."]
    batched = BatchTranscriber(model, opts).transcribe(jobs, prompts)
    single = [Transcriber(model, opts).transcribe(j, p) for j, p in zip(jobs, prompts, strict=True)]
    for b, s, u in zip(batched, single, utts, strict=True):
        assert b.session_id == s.session_id and b.segment == s.segment
        assert wer([(u.reference, b.text)]).wer <= wer([(u.reference, s.text)]).wer + 0.05
        assert b.words and b.words[0].start >= 5.0  # session time
        assert [w.word for w in b.words] == b.text.split(" ") or b.words


async def test_worker_batches_jobs_waiting_together(
    spawn, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    utts = [u for u in librispeech(held_out_only=True)][4:8]
    for job in jobs_for(utts):
        await redis_client.xadd(keys.asr_jobs(EN_POOL), entry(encode(job)))
    worker = spawn("asr-worker", ASR_BATCH_SIZE="4")

    async def all_done() -> bool:
        return all([await redis_client.exists(keys.transcript(f"b{i}")) for i in range(4)])

    deadline = time.monotonic() + 120
    while not await all_done():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    for i, u in enumerate(utts):
        ((_id, fields),) = await redis_client.xrange(keys.transcript(f"b{i}"))
        assert wer([(u.reference, decode_as(fields[b"d"], Transcript).text)]).wer <= 0.25
    assert "batch of 4" in worker.log()
    assert (await redis_client.xpending(keys.asr_jobs(EN_POOL), ASR_GROUP))["pending"] == 0
