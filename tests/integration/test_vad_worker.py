"""The VAD worker as a real process against a real redis-server, on real recordings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from shared.audio import decode_file, float32_to_pcm16
from shared.keys import EN_POOL, VAD_GROUP, Keys
from shared.redis_util import entry
from shared.schemas import (
    AsrJob,
    AudioChunk,
    AudioControl,
    AudioEnd,
    SessionDone,
    SessionStart,
    decode,
    decode_as,
    encode,
)


async def stream_session(
    r: aioredis.Redis,
    keys: Keys,
    sid: str,
    pcm: bytes,
    chunk: int = 3200,
    start: SessionStart | None = None,
    end: bool = True,
    seq: int = 0,
    controls: dict[int, AudioControl] | None = None,
) -> int:
    """The session's entries as the gateway writes them: ``session_start`` (unless continuing
    after a first call: pass its ``seq``), the audio (``controls`` go before audio byte n), and
    ``audio_end`` if ``end``; the last sequence number."""
    if seq == 0:
        start = start or SessionStart(session_id=sid, language="en")
        await r.xadd(keys.sessions, entry(encode(start)))
    for i in range(0, len(pcm), chunk):
        seq += 1
        if controls and i in controls:
            controls[i].seq = seq
            await r.xadd(keys.audio(sid), entry(encode(controls[i])))
            seq += 1
        await r.xadd(
            keys.audio(sid),
            entry(encode(AudioChunk(session_id=sid, seq=seq, pcm=pcm[i : i + chunk]))),
        )
    if end:
        seq += 1
        await r.xadd(keys.audio(sid), entry(encode(AudioEnd(session_id=sid, seq=seq))))
    return seq


async def wait_done(r: aioredis.Redis, keys: Keys, sid: str, timeout: float = 60) -> SessionDone:
    """The session's ``session_done`` (subscribe before the audio ends)."""
    pubsub = r.pubsub()
    await pubsub.subscribe(keys.results(sid))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg and isinstance(done := decode(msg["data"]), SessionDone):
                return done
        raise TimeoutError(f"no session_done for {sid}")
    finally:
        await pubsub.aclose()


async def test_a_sessions_jobs_go_to_its_pool_and_stay_there_after_a_takeover(
    spawn, redis_client: aioredis.Redis, key_prefix: str, corpus
) -> None:
    """The pool chosen by the gateway (``session_start.pool``) survives the owner's death: the
    new owner reads the same pending entry and queues the rest on the same stream."""
    keys = Keys(key_prefix)
    vads = {f"vad-{i}": spawn("vad-worker", CONSUMER_NAME=f"vad-{i}", VAD_CLAIM_IDLE_MS="2000")
            for i in range(2)}  # fmt: skip
    pcm = float32_to_pcm16(decode_file(corpus / "long" / "jfk.flac"))
    half = len(pcm) // 2 // 2 * 2
    start = SessionStart(session_id="de1", language="de", pool="multi")
    seq = await stream_session(redis_client, keys, "de1", pcm[:half], start=start, end=False)
    deadline = time.monotonic() + 60
    while await redis_client.xlen(keys.asr_jobs("multi")) == 0:
        assert time.monotonic() < deadline, "no job on the session's pool"
        await asyncio.sleep(0.1)
    (owner,) = await redis_client.xpending_range(keys.sessions, VAD_GROUP, "-", "+", 5)
    victim = owner["consumer"].decode()
    vads[victim].kill()
    done = asyncio.create_task(wait_done(redis_client, keys, "de1", 90))
    await asyncio.sleep(0.2)
    await stream_session(redis_client, keys, "de1", pcm[half:], seq=seq)
    total = (await done).segments
    jobs = [
        decode_as(f[b"d"], AsrJob) for _id, f in await redis_client.xrange(keys.asr_jobs("multi"))
    ]
    assert {j.segment for j in jobs} == set(range(total)) and total >= 2
    assert all(j.language == "de" for j in jobs)
    assert await redis_client.xlen(keys.asr_jobs(EN_POOL)) == 0  # nothing on the English pool
    (survivor,) = [p for name, p in vads.items() if name != victim]
    assert "taken over" in survivor.log() and "jobs to pool multi" in survivor.log()


async def test_segments_cover_the_speech_and_session_is_released(
    spawn, redis_client: aioredis.Redis, key_prefix: str, corpus
) -> None:
    keys = Keys(key_prefix)
    spawn("vad-worker")
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(keys.results("jfk"))
    audio = decode_file(corpus / "long" / "jfk.flac")  # 44.1 kHz stereo, decoded to 16 kHz mono
    await stream_session(redis_client, keys, "jfk", float32_to_pcm16(audio))

    done = None
    deadline = time.monotonic() + 60
    while done is None and time.monotonic() < deadline:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if msg:
            done = decode(msg["data"])
    assert isinstance(done, SessionDone)
    assert abs(done.audio_seconds - 11.0) < 0.05

    jobs = [
        decode_as(f[b"d"], AsrJob) for _id, f in await redis_client.xrange(keys.asr_jobs(EN_POOL))
    ]
    assert len(jobs) == done.segments >= 2
    assert [j.segment for j in jobs] == list(range(len(jobs)))
    for a, b in zip(jobs, jobs[1:], strict=False):
        assert a.end <= b.start
    for j in jobs:
        assert len(j.pcm) == round((j.end - j.start) * 16000) * 2
        assert j.language == "en"
    speech = sum(j.end - j.start for j in jobs)
    assert 6.0 < speech <= 11.0  # JFK speaks for most of the 11 s, with pauses
    assert jobs[0].start < 1.0 and jobs[-1].end > 10.0

    # the session entry was acked and deleted; the audio is freed at once
    assert (await redis_client.xpending(keys.sessions, VAD_GROUP))["pending"] == 0
    assert await redis_client.xlen(keys.sessions) == 0
    assert not await redis_client.exists(keys.audio("jfk"))
    await pubsub.aclose()


async def test_key_terms_go_on_every_job_and_change_in_order_with_the_audio(
    spawn, redis_client: aioredis.Redis, key_prefix: str, corpus
) -> None:
    keys = Keys(key_prefix)
    spawn("vad-worker")
    pcm = float32_to_pcm16(decode_file(corpus / "long" / "jfk.flac"))
    start = SessionStart(session_id="kt", language="en", keyterms=["Kennedy"])
    change = AudioControl(session_id="kt", seq=0, kind="keyterms", keyterms=["Americans"])
    at = 6 * 32000  # after the first utterance, before the last
    await stream_session(redis_client, keys, "kt", pcm, start=start, controls={at: change})
    jobs: list[AsrJob] = []
    deadline = time.monotonic() + 60
    while not (jobs and jobs[-1].end > 10.0) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        jobs = [
            decode_as(f[b"d"], AsrJob)
            for _id, f in await redis_client.xrange(keys.asr_jobs(EN_POOL))
        ]
    assert jobs[0].end < 6.0 and jobs[0].keyterms == ["Kennedy"]
    assert jobs[-1].start > 6.0 and jobs[-1].keyterms == ["Americans"]


async def test_session_is_pending_while_owned_and_bad_entries_are_skipped(
    spawn, redis_client: aioredis.Redis, key_prefix: str, corpus
) -> None:
    keys = Keys(key_prefix)
    worker = spawn("vad-worker")
    await redis_client.xadd(keys.sessions, {b"d": b"garbage"})
    await redis_client.xadd(keys.sessions, entry(encode(SessionStart(session_id="live"))))
    await redis_client.xadd(keys.audio("live"), {b"d": b"\x00\x01 bad"})
    audio = decode_file(corpus / "librispeech" / "1089-134691-0000.flac")
    await redis_client.xadd(
        keys.audio("live"),
        entry(encode(AudioChunk(session_id="live", seq=1, pcm=float32_to_pcm16(audio)))),
    )

    async def owned():
        try:
            info = await redis_client.xpending(keys.sessions, VAD_GROUP)
        except ResponseError:  # the worker has not created its group yet
            return False
        return info["pending"] == 1 and await redis_client.xlen(keys.sessions) == 1

    deadline = time.monotonic() + 30
    while not await owned():
        assert time.monotonic() < deadline, "session was not taken"
        await asyncio.sleep(0.1)
    # the open utterance is only cut at the end of the session
    await redis_client.xadd(keys.audio("live"), entry(encode(AudioEnd(session_id="live", seq=2))))
    deadline = time.monotonic() + 30
    while await redis_client.xlen(keys.asr_jobs(EN_POOL)) < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert worker.alive()
    dead = await redis_client.xrange(keys.vad_dead)
    assert [f[b"stream"] for _i, f in dead] == [keys.sessions.encode(), keys.audio("live").encode()]
    assert all(f[b"error"] for _i, f in dead)


async def test_an_entry_that_cannot_be_processed_is_dead_lettered_and_the_worker_goes_on(
    spawn, redis_client: aioredis.Redis, key_prefix: str, corpus
) -> None:
    """A well-formed chunk whose PCM has an odd number of bytes cannot be read as 16-bit samples:
    it goes to ``vad:dead``; the worker, its other session and the rest of this one go on."""
    keys = Keys(key_prefix)
    worker = spawn("vad-worker")
    pcm = float32_to_pcm16(decode_file(corpus / "librispeech" / "1089-134691-0000.flac"))
    for sid in ("odd", "other"):
        await redis_client.xadd(keys.sessions, entry(encode(SessionStart(session_id=sid))))
    poison = AudioChunk(session_id="odd", seq=1, pcm=b"\x01\x02\x03")
    await redis_client.xadd(keys.audio("odd"), entry(encode(poison)))
    for sid, first in (("odd", 2), ("other", 1)):
        await redis_client.xadd(
            keys.audio(sid), entry(encode(AudioChunk(session_id=sid, seq=first, pcm=pcm)))
        )
        await redis_client.xadd(
            keys.audio(sid), entry(encode(AudioEnd(session_id=sid, seq=first + 1)))
        )
    deadline = time.monotonic() + 60
    while await redis_client.xlen(keys.sessions) > 0:  # both sessions finished
        assert worker.alive(), worker.log()[-3000:]
        assert time.monotonic() < deadline, "sessions were not finished"
        await asyncio.sleep(0.1)
    assert worker.alive()
    dead = await redis_client.xrange(keys.vad_dead)
    assert [f[b"stream"] for _i, f in dead] == [keys.audio("odd").encode()]
    assert b"ValueError" in dead[0][1][b"error"]
    assert decode_as(dead[0][1][b"d"], AudioChunk).pcm == b"\x01\x02\x03"
    jobs = [
        decode_as(f[b"d"], AsrJob) for _id, f in await redis_client.xrange(keys.asr_jobs(EN_POOL))
    ]
    cuts: dict[str, dict[int, tuple[float, float]]] = {"odd": {}, "other": {}}
    for j in jobs:  # per segment, the last job cut (a speculative one may come before it)
        cuts[j.session_id][j.segment] = (j.start, j.end)
    assert cuts["odd"]
    # the good audio after the bad entry was all cut, as in the session without one
    assert cuts["odd"] == cuts["other"]


async def _speech_then(
    r: aioredis.Redis, keys: Keys, sid: str, pcm: bytes, start: SessionStart | None = None
) -> None:
    """Announce ``sid`` (unless ``start`` was) and put ``pcm`` on its audio stream."""
    if start is not None:
        await r.xadd(keys.sessions, entry(encode(start)))
    seq = int(await r.hget(keys.session(sid), "t_seq") or 0)
    for i in range(0, len(pcm), 3200):
        seq += 1
        chunk = AudioChunk(session_id=sid, seq=seq, pcm=pcm[i : i + 3200])
        await r.xadd(keys.audio(sid), entry(encode(chunk)))
    await r.hset(keys.session(sid), "t_seq", seq)


async def _final_within(pubsub, seconds: float):
    from shared.schemas import Transcript

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if msg and isinstance(got := decode(msg["data"]), Transcript) and got.final:
            return got
    return None


@pytest.mark.parametrize(
    ("smart", "text", "early"),
    [
        (True, "Stuff it into you, his belly counselled him.", True),
        (True, "Stuff it into you, his belly and the", False),  # unfinished: waits
        (False, "Stuff it into you, his belly counselled him.", False),  # fixed endpointing
    ],
)
async def test_smart_endpointing_ends_the_turn_when_the_stored_text_looks_finished(
    spawn, redis_client: aioredis.Redis, key_prefix: str, smart: bool, text: str, early: bool
) -> None:
    """The VAD worker, told by the ASR half's store that the speculative final is there, ends a
    finished-looking utterance mid-pause (300 ms of silence, short of the 500 ms endpoint) and
    the commit publishes it; an unfinished text, or fixed endpointing, waits for the endpoint."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from shared.keys import ASR_GROUP
    from shared.redis_util import ensure_group
    from shared.schemas import Transcript
    from shared.settings import Settings
    from tests.conftest import librispeech
    from workers.asr_publish import FinalPublisher
    from workers.speculation import Speculation

    keys = Keys(key_prefix)
    await ensure_group(redis_client, keys.asr_jobs(EN_POOL), ASR_GROUP)
    spawn("vad-worker")
    utt = next(u for u in librispeech() if u.utt_id == "1089-134686-0001")
    audio = decode_file(utt.path)
    opts = VadOptions(speech_pad_ms=0, min_silence_duration_ms=100)
    end = get_speech_timestamps(audio, opts)[-1]["end"]  # where the speech stops
    silence = np.zeros(int(16000 * 0.3), dtype=np.float32)
    sid = f"turn-{smart}-{early}"
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(keys.results(sid))
    start = SessionStart(session_id=sid, language="en", smart_endpointing=smart)
    await _speech_then(redis_client, keys, sid, float32_to_pcm16(np.concatenate([audio[:end], silence])), start)  # fmt: skip
    # the ASR worker's half: take the speculative job of the final pause (an earlier pause in
    # the utterance had one too, void since), store its "transcript"
    got, job = None, None
    deadline = time.monotonic() + 60
    while (job is None or job.end < end / 16000) and time.monotonic() < deadline:
        resp = await redis_client.xreadgroup(
            ASR_GROUP, "t", {keys.asr_jobs(EN_POOL): ">"}, count=1, block=500
        )
        for _s, entries in resp or []:
            got = entries[0]
            job = decode_as(got[1][b"d"], AsrJob)
    assert got is not None and job is not None and job.end >= end / 16000, "no speculative job"
    assert job.speculative and job.turn is smart
    spec = Speculation(redis_client, keys, 100, 60)
    out = FinalPublisher(Settings(key_prefix=key_prefix), redis_client, keys, spec, EN_POOL)
    result = Transcript(
        session_id=sid, segment=job.segment, start=job.start, end=job.end, text=text
    )
    await out.publish_and_ack(got[0], result, job.rev, turn=job.turn)
    final = await _final_within(pubsub, 10 if early else 3)
    if early:
        assert final is not None and final.text == text and final.end == job.end
    else:
        assert final is None  # still in the pause: the endpoint decides
        await _speech_then(redis_client, keys, sid, float32_to_pcm16(silence))
        final = await _final_within(pubsub, 20)
        assert final is not None and final.text == text and final.end == job.end
    await pubsub.aclose()


@pytest.mark.parametrize("announced", [True, False], ids=["gpu-pool", "cpu-pool"])
async def test_the_segment_after_a_committed_speculative_final_carries_it_as_context(
    spawn, redis_client: aioredis.Redis, key_prefix: str, announced: bool
) -> None:
    """An early commit, and the speaker goes on: the next segment's jobs carry the committed
    final's words of its last 3 s and the audio from just before the first of them
    (workers/continuation.py), read before the commit's publish cleared them; with
    ``ASR_CONTINUATION`` unset, only where the pool's live worker announces that it decodes them
    (a CUDA worker), not for a pool of CPU workers, which would drop them."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from shared.keys import ASR_GROUP
    from shared.redis_util import ensure_group
    from shared.schemas import Transcript, Word, WorkerCapabilities, encode_capabilities
    from shared.settings import Settings
    from tests.conftest import librispeech
    from workers.asr_publish import FinalPublisher
    from workers.continuation import WORD_LEAD_S
    from workers.speculation import Speculation

    keys = Keys(key_prefix)
    await ensure_group(redis_client, keys.asr_jobs(EN_POOL), ASR_GROUP)
    caps = WorkerCapabilities(worker="asr-x", pool=EN_POOL, languages=["en"], continuation=announced)  # fmt: skip
    await redis_client.zadd(keys.heartbeats("asr"), {"asr-x": time.time() + 600})
    await redis_client.set(keys.capabilities("asr", "asr-x"), encode_capabilities(caps))
    spawn("vad-worker")
    audio = decode_file(next(u for u in librispeech() if u.utt_id == "1089-134686-0001").path)
    end = get_speech_timestamps(audio, VadOptions(speech_pad_ms=0, min_silence_duration_ms=100))[-1]["end"]  # fmt: skip
    speech = float32_to_pcm16(np.concatenate([audio[:end], np.zeros(4800, np.float32)]))
    sid = "continues"
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(keys.results(sid))
    await _speech_then(redis_client, keys, sid, speech, SessionStart(session_id=sid, language="en", smart_endpointing=True))  # fmt: skip

    async def jobs_until(done: Callable[[AsrJob], bool]) -> tuple[bytes, AsrJob]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            resp = await redis_client.xreadgroup(
                ASR_GROUP, "t", {keys.asr_jobs(EN_POOL): ">"}, count=1, block=500
            )
            for _s, entries in resp or []:
                if done(job := decode_as(entries[0][1][b"d"], AsrJob)):
                    return entries[0][0], job
        raise AssertionError("no such job")

    entry_id, job = await jobs_until(lambda j: j.speculative and j.end >= end / 16000)
    assert not job.context_words  # the first segment continues nothing
    words = [
        Word(word=" belly", start=round(job.end - 4.0, 3), end=round(job.end - 3.6, 3), probability=0.9),
        Word(word=" counselled", start=round(job.end - 1.5, 3), end=round(job.end - 1.0, 3), probability=0.9),
        Word(word=" him.", start=round(job.end - 0.9, 3), end=round(job.end - 0.4, 3), probability=0.9),
    ]  # fmt: skip
    result = Transcript(session_id=sid, segment=job.segment, start=job.start, end=job.end,
                        text="Stuff it into you, his belly counselled him.", words=words)  # fmt: skip
    spec = Speculation(redis_client, keys, 100, 60)
    out = FinalPublisher(Settings(key_prefix=key_prefix), redis_client, keys, spec, EN_POOL)
    await out.publish_and_ack(entry_id, result, job.rev, turn=job.turn)
    final = await _final_within(pubsub, 10)
    assert final is not None and final.end == job.end  # committed mid-pause
    await _speech_then(redis_client, keys, sid, speech)  # the speaker goes on
    _id, nxt = await jobs_until(lambda j: j.segment == job.segment + 1 and j.final)
    assert nxt.start - job.end <= 1.0
    if not announced:
        assert not nxt.context_words and not nxt.context_pcm
        await pubsub.aclose()
        return
    assert [w.word for w in nxt.context_words] == [" counselled", " him."]  # its last 3 s
    assert nxt.context_start == round(words[1].start - WORD_LEAD_S, 3)
    assert abs(len(nxt.context_pcm) // 2 - (job.end - nxt.context_start) * 16000) <= 2
    assert nxt.start - job.end <= 1.0
    await pubsub.aclose()


async def _last_speculative_job(
    r: aioredis.Redis, keys: Keys, sid: str, pcm: bytes, timeout: float = 60
) -> AsrJob:
    """Stream ``pcm`` as session ``sid`` to its end and consume the pool's jobs as an ASR worker
    would (speculation waits for an empty queue); the last speculative job of the session."""
    from shared.keys import ASR_GROUP

    done = asyncio.create_task(wait_done(r, keys, sid, timeout))
    await asyncio.sleep(0.2)  # subscribed before the audio ends
    await stream_session(r, keys, sid, pcm)
    jobs: list[AsrJob] = []
    while not done.done():
        resp = await r.xreadgroup(ASR_GROUP, "t", {keys.asr_jobs(EN_POOL): ">"}, block=200)
        jobs += [decode_as(f[b"d"], AsrJob) for _s, entries in resp or [] for _i, f in entries]
    await done
    resp = await r.xreadgroup(ASR_GROUP, "t", {keys.asr_jobs(EN_POOL): ">"}, block=200)
    jobs += [decode_as(f[b"d"], AsrJob) for _s, entries in resp or [] for _i, f in entries]
    spec = [j for j in jobs if j.session_id == sid and j.speculative]
    assert spec, f"no speculative job for {sid}"
    return spec[-1]


async def test_a_quiet_pause_starts_its_speculative_final_86_ms_sooner(
    spawn, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """A real utterance cut where its speech stops, then digital silence: the VAD worker's
    speculative job for that pause ends 64 ms into it (``VAD_QUIET_PAD_END_MS``), not 150 ms:
    the same audio through a worker with it off gives a job 86 ms longer, from the same start.
    (This recording's own room noise after the speech is not quiet enough: it keeps 150 ms.)"""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from shared.keys import ASR_GROUP
    from shared.redis_util import ensure_group
    from tests.conftest import librispeech

    keys = Keys(key_prefix)
    await ensure_group(redis_client, keys.asr_jobs(EN_POOL), ASR_GROUP)
    utt = next(u for u in librispeech() if u.utt_id == "1089-134686-0001")
    speech = decode_file(utt.path)
    opts = VadOptions(speech_pad_ms=0, min_silence_duration_ms=100)
    end = get_speech_timestamps(speech, opts)[-1]["end"]
    audio = np.concatenate([speech[:end], np.zeros(16000 * 3 // 10, np.float32)])
    pcm = float32_to_pcm16(audio)
    jobs = {}
    for quiet in ("64", "0"):
        worker = spawn("vad-worker", VAD_QUIET_PAD_END_MS=quiet)
        jobs[quiet] = await _last_speculative_job(redis_client, keys, f"quiet-{quiet}", pcm)
        worker.stop()
    early, usual = jobs["64"], jobs["0"]
    assert early.start == usual.start
    assert usual.end - early.end == pytest.approx(0.086, abs=0.0015)
    assert len(early.pcm) == len(usual.pcm) - 86 * 32  # 86 ms of 16-bit samples fewer
