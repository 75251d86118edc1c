"""Model pools end to end: real worker processes of two pools (tiny.en for English, the bundled
multilingual base for the rest), a real Redis, real recordings. Each session's jobs go to its
pool's stream and are transcribed only by that pool's workers; a multilingual worker killed with
a job in hand is replaced by another of its pool, never by the English one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis
import websockets

from shared.audio import float32_to_pcm16
from shared.keys import ASR_GROUP, EN_POOL, MULTI_POOL, Keys
from shared.schemas import Transcript, decode_as
from shared.session_state import Field
from tests.conftest import Service, librispeech, running_service, wait_reclaimed
from tests.e2e.test_native import receive_all, stream
from whisper_streaming.evaluation import wer
from whisper_streaming.listen import CLOSE_STREAM
from whisper_streaming.replay import load_pcm

pytestmark = pytest.mark.e2e

GERMAN = "de_picovoice.wav"
ENGLISH_UTT = "8455-210777-0068"
GERMAN_MAX_WER = 0.5
"""The bundled base model on this one sentence; the language tests bound it per language."""


@contextmanager
def pools_service(
    redis_server: Any, tmp_path: Path, multi: int = 1, **env: str
) -> Iterator[tuple[Service, dict[str, Any]]]:
    """One tiny.en worker (pool ``en``), ``multi`` base workers (pool ``multi``), a VAD worker
    and a gateway; the workers derive their pool from their model (ASR_POOL unset). The
    service, and its ASR workers by consumer name."""
    asr = [{"CONSUMER_NAME": "asr-en-0"} | env] + [
        {"CONSUMER_NAME": f"asr-multi-{i}", "ASR_MODEL": "base"} | env for i in range(multi)
    ]
    with running_service(redis_server, tmp_path, asr, prefix="pools") as svc:
        yield svc, {a["CONSUMER_NAME"]: p for a, p in zip(asr, svc.procs, strict=False)}


async def wait_pools(r: aioredis.Redis, keys: Keys, workers: int) -> None:
    """Until ``workers`` ASR workers have announced (readiness counts heartbeats only)."""
    deadline = time.monotonic() + 120
    while len(await r.keys(keys.capabilities("asr", "*"))) < workers:
        assert time.monotonic() < deadline, "the ASR workers did not announce"
        await asyncio.sleep(0.2)


def padded(pcm: bytes) -> bytes:
    """A recording with a second of silence after it (the endpoint closes the utterance)."""
    return pcm + float32_to_pcm16(np.zeros(16000, dtype=np.float32))


async def session(url: str, pcm: bytes, query: str, speed: float = 2.0) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    listen = f"{url}/v1/listen?interim_results=false&session_started=true&{query}"
    async with websockets.connect(listen) as ws:
        rx = asyncio.create_task(receive_all(ws, msgs))
        await stream(ws, pcm, speed=speed)
        await ws.send(CLOSE_STREAM)
        await asyncio.wait_for(rx, 180)
    assert msgs and msgs[-1]["type"] == "closed", msgs[-1:]
    return msgs


def text_of(msgs: list[dict[str, Any]]) -> str:
    return " ".join(m["text"] for m in msgs if m["type"] == "final")


def session_id(msgs: list[dict[str, Any]]) -> str:
    assert msgs[0]["type"] == "session", msgs[0]
    return str(msgs[0]["session_id"])


async def transcribed_by(r: aioredis.Redis, keys: Keys, sid: str) -> set[str]:
    """The workers that wrote the session's finals (``transcript:{session}``)."""
    entries = await r.xrange(keys.transcript(sid))
    return {decode_as(f[b"d"], Transcript).worker for _id, f in entries}


async def jobs_added(r: aioredis.Redis, keys: Keys, pool: str) -> int:
    """Entries ever added to the pool's job stream (they are deleted once transcribed)."""
    return int((await r.xinfo_stream(keys.asr_jobs(pool)))["entries-added"])


async def test_each_session_goes_to_its_pools_stream_and_workers(
    redis_server, redis_client: aioredis.Redis, tmp_path: Path, corpus: Path
) -> None:
    with pools_service(redis_server, tmp_path) as (svc, _workers):
        await routed_by_language(svc, redis_client, corpus)


async def routed_by_language(svc: Service, redis_client: aioredis.Redis, corpus: Path) -> None:
    keys, url = Keys(svc.key_prefix), svc.ws
    await wait_pools(redis_client, keys, 2)
    german = padded(load_pcm(corpus / "other-languages" / GERMAN))
    utt = next(u for u in librispeech() if u.utt_id == ENGLISH_UTT)
    before = {p: await jobs_added(redis_client, keys, p) for p in (EN_POOL, MULTI_POOL)}

    de, en = await asyncio.gather(
        session(url, german, "language=de"), session(url, padded(load_pcm(utt.path)), "language=en")
    )
    after = {p: await jobs_added(redis_client, keys, p) for p in (EN_POOL, MULTI_POOL)}
    de_finals = [m for m in de if m["type"] == "final"]
    en_finals = [m for m in en if m["type"] == "final"]
    assert de_finals and en_finals
    # each pool's stream got its session's jobs (a speculative final may add one more each)
    assert after[MULTI_POOL] - before[MULTI_POOL] >= len(de_finals)
    assert after[EN_POOL] - before[EN_POOL] >= len(en_finals)
    # ... and each session was transcribed by its pool's workers only, in its language
    assert await transcribed_by(redis_client, keys, session_id(de)) == {"asr-multi-0"}
    assert await transcribed_by(redis_client, keys, session_id(en)) == {"asr-en-0"}
    for msgs, pool in ((de, MULTI_POOL), (en, EN_POOL)):
        stored = await redis_client.hget(keys.session(session_id(msgs)), str(Field.POOL))
        assert stored == pool.encode()
    reference = (corpus / "other-languages" / GERMAN.replace(".wav", ".txt")).read_text()
    assert wer([(reference, text_of(de))]).wer <= GERMAN_MAX_WER, text_of(de)
    assert wer([(utt.reference, text_of(en))]).wer <= 0.2, text_of(en)

    # detection (no language) goes to the multilingual pool, which finds German
    detected = await session(url, german, "")
    assert await transcribed_by(redis_client, keys, session_id(detected)) == {"asr-multi-0"}
    assert {m["language"] for m in detected if m["type"] == "final"} == {"de"}


async def test_a_killed_multilingual_workers_job_goes_to_another_of_its_pool_only(
    redis_server, redis_client: aioredis.Redis, tmp_path: Path, corpus: Path
) -> None:
    with pools_service(redis_server, tmp_path, multi=2, ASR_CLAIM_IDLE_MS="2000") as (svc, procs):
        await reclaimed_within_the_pool(svc, procs, redis_client, corpus)


async def reclaimed_within_the_pool(
    svc: Service, procs: dict[str, Any], redis_client: aioredis.Redis, corpus: Path
) -> None:
    keys, url = Keys(svc.key_prefix), svc.ws
    await wait_pools(redis_client, keys, 3)
    german = padded(load_pcm(corpus / "other-languages" / GERMAN))
    killed: list[str] = []

    async def kill_busy_multi_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pending = await redis_client.xpending_range(
                keys.asr_jobs(MULTI_POOL), ASR_GROUP, "-", "+", 5
            )
            if pending:
                name = pending[0]["consumer"].decode()
                procs[name].kill()  # SIGKILL: the job stays pending in the pool's group
                killed.append(name)
                return
            await asyncio.sleep(0.005)
        raise TimeoutError("never caught a multilingual worker with a job in hand")

    hunter = asyncio.create_task(kill_busy_multi_worker())
    msgs = await session(url, german, "language=de", speed=1.5)
    await hunter
    (victim,) = killed
    survivor = "asr-multi-1" if victim == "asr-multi-0" else "asr-multi-0"
    finals = [m for m in msgs if m["type"] == "final"]
    assert [f["segment"] for f in finals] == list(range(len(finals))) and finals
    reference = (corpus / "other-languages" / GERMAN.replace(".wav", ".txt")).read_text()
    assert wer([(reference, text_of(msgs))]).wer <= GERMAN_MAX_WER, text_of(msgs)
    assert await transcribed_by(redis_client, keys, session_id(msgs)) == {survivor}
    # The job the victim held may be a speculative decode whose final came from the segment's
    # ordinary job (SPECULATIVE_FINALS): then the session can end before the survivor's next
    # claim round (ASR_CLAIM_IDLE_MS after the kill), and the reclaim follows it.
    await wait_reclaimed(procs[survivor], redis_client, keys.asr_jobs(MULTI_POOL), victim)
    # the English worker never saw the multilingual pool's stream
    assert "reclaimed job" not in procs["asr-en-0"].log()
    consumers = await redis_client.xinfo_consumers(keys.asr_jobs(MULTI_POOL), ASR_GROUP)
    assert "asr-en-0" not in {c["name"].decode() for c in consumers}
    assert await redis_client.xlen(keys.asr_dead(MULTI_POOL)) == 0
