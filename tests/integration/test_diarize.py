"""Speaker labels against a real Redis: the ASR worker's hook with a fake embedding model."""

from __future__ import annotations

import asyncio

import numpy as np
import redis.asyncio as aioredis

from shared.audio import float32_to_pcm16
from shared.keys import Keys
from shared.schemas import AsrJob, Transcript, Word
from shared.settings import Settings
from workers.diarize import SpeakerLabeler


def fake_embedder(audio: np.ndarray) -> np.ndarray:
    """A 'voice' is the sign of the first sample: two voices, two orthogonal directions."""
    return np.array([1.0, 0.0]) if audio[0] > 0 else np.array([0.0, 1.0])


def job_and_result(sid: str, segment: int, voice: float, diarize: bool = True):
    pcm = float32_to_pcm16(np.full(32_000, voice, dtype=np.float32))
    job = AsrJob(session_id=sid, segment=segment, start=0, end=2, pcm=pcm, diarize=diarize)
    words = [Word(word=" a", start=0, end=1, probability=1.0)]
    return job, Transcript(session_id=sid, segment=segment, start=0, end=2, text="a", words=words)


async def test_two_workers_share_a_session_speakers(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    settings = Settings(key_prefix=key_prefix)
    keys = Keys(key_prefix)
    workers = [
        SpeakerLabeler(settings, redis_client, keys, load=lambda: fake_embedder) for _ in range(2)
    ]
    pairs = [job_and_result("sess", i, v) for i, v in enumerate([0.5, -0.5, 0.5, -0.5, 0.5, 0.5])]
    # alternate workers, and label some concurrently (WATCH/MULTI keeps every update)
    await workers[0].label(*pairs[0])
    await asyncio.gather(*(workers[i % 2].label(*p) for i, p in enumerate(pairs[1:])))
    labels = [r.speaker for _j, r in pairs]
    assert labels == ["S0", "S1", "S0", "S1", "S0", "S0"]
    assert all(w.speaker == r.speaker for _j, r in pairs for w in r.words)
    assert await redis_client.ttl(keys.speakers("sess")) > 0


async def test_no_label_without_diarize_or_model(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    settings = Settings(key_prefix=key_prefix)
    keys = Keys(key_prefix)
    job, result = job_and_result("s2", 0, 0.5, diarize=False)
    await SpeakerLabeler(settings, redis_client, keys, load=lambda: fake_embedder).label(
        job, result
    )
    assert result.speaker is None

    def broken():
        raise RuntimeError("no weights here")

    labeler = SpeakerLabeler(settings, redis_client, keys, load=broken)
    job, result = job_and_result("s2", 1, 0.5)
    await labeler.label(job, result)  # logged once, never raised
    assert result.speaker is None and not await redis_client.exists(keys.speakers("s2"))
