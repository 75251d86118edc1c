"""Speculative finals' Lua steps against a real redis-server: the final is published exactly once,
whichever of store (ASR) and commit (VAD) comes second, never for a void revision, and never twice
however often a job is redelivered."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from shared.keys import ASR_GROUP, EN_POOL, Keys
from shared.redis_util import ensure_group, entry, entry_data
from shared.schemas import AsrJob, Transcript, decode_as, encode
from shared.session_state import SpecField, read, spec_field
from workers.speculation import DONE, PUBLISHED, VOID, WAITING, Speculation, should_speculate

SID = "s1"


def final(segment: int, text: str) -> bytes:
    return encode(Transcript(session_id=SID, segment=segment, start=0.0, end=1.0, text=text))


@pytest.fixture
async def spec(redis_client: aioredis.Redis, key_prefix: str) -> Speculation:
    return Speculation(redis_client, Keys(key_prefix), transcript_maxlen=100, ttl_s=60)


async def published(r: aioredis.Redis, keys: Keys) -> list[Transcript]:
    return [decode_as(entry_data(f), Transcript) for _id, f in await r.xrange(keys.transcript(SID))]


async def test_store_then_commit_publishes_once(spec: Speculation, redis_client) -> None:
    keys = spec.keys
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(keys.results(SID))
    assert await spec.store(SID, 0, 1, final(0, "hello world"), "hello world") == WAITING
    assert await published(redis_client, keys) == []
    assert await spec.commit(SID, 0, 1) == PUBLISHED
    out = await published(redis_client, keys)
    assert [(t.segment, t.text) for t in out] == [(0, "hello world")]
    msg = None
    for _ in range(20):  # the first call may only consume the subscribe confirmation
        msg = msg or await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
    assert msg is not None
    assert decode_as(msg["data"], Transcript).text == "hello world"
    # later calls (a redelivered job, a replayed commit) change nothing
    assert await spec.store(SID, 0, 1, final(0, "again"), "again") == DONE
    assert await spec.commit(SID, 0, 1) == DONE
    assert len(await published(redis_client, keys)) == 1
    session = await read(redis_client, keys.session(SID))
    assert session.prompt == "hello world" and session.final_seg == 0
    assert 0 < await redis_client.ttl(keys.speculative(SID)) <= 60
    assert 0 < await redis_client.ttl(keys.transcript(SID)) <= 60
    await pubsub.aclose()


async def test_commit_then_store_publishes_once(spec: Speculation, redis_client) -> None:
    assert await spec.commit(SID, 3, 2) == WAITING
    assert await spec.store(SID, 3, 1, final(3, "older revision"), "") == WAITING
    assert await published(redis_client, spec.keys) == []
    assert await spec.store(SID, 3, 2, final(3, "the one committed"), "") == PUBLISHED
    assert await spec.store(SID, 3, 2, final(3, "the one committed"), "") == DONE
    assert [t.text for t in await published(redis_client, spec.keys)] == ["the one committed"]
    # the stored text of the other revision was freed with the rest
    assert await redis_client.hkeys(spec.keys.speculative(SID)) == [
        spec_field(3, SpecField.DONE).encode()
    ]


async def test_void_revision_is_never_published(spec: Speculation, redis_client) -> None:
    assert await spec.store(SID, 0, 1, final(0, "cut short"), "") == WAITING
    await spec.void(SID, 0, 1)
    assert not await spec.wanted(SID, 0, 1)
    assert await spec.wanted(SID, 0, 2)
    assert await spec.store(SID, 0, 1, final(0, "cut short"), "") == VOID
    assert await spec.commit(SID, 0, 2) == WAITING
    assert await spec.store(SID, 0, 2, final(0, "the whole of it"), "") == PUBLISHED
    assert [t.text for t in await published(redis_client, spec.keys)] == ["the whole of it"]
    assert not await spec.wanted(SID, 0, 2)  # done


async def test_racing_store_and_commit_publish_exactly_once(spec: Speculation, redis_client):
    for seg in range(30):
        results = await asyncio.gather(
            spec.commit(SID, seg, 1), spec.store(SID, seg, 1, final(seg, f"s{seg}"), "")
        )
        assert sorted(results) == [PUBLISHED, WAITING]
    out = await published(redis_client, spec.keys)
    assert [t.segment for t in out] == list(range(30))


async def test_speculate_only_while_no_final_waits(redis_client, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    await ensure_group(redis_client, keys.asr_jobs(EN_POOL), ASR_GROUP)
    assert await should_speculate(redis_client, keys, EN_POOL)
    job = AsrJob(session_id=SID, segment=0, start=0.0, end=1.0, pcm=b"\0\0")
    await redis_client.xadd(keys.asr_jobs(EN_POOL), entry(encode(job)))
    assert not await should_speculate(redis_client, keys, EN_POOL)
    await redis_client.xreadgroup(ASR_GROUP, "w1", {keys.asr_jobs(EN_POOL): ">"}, count=1)
    assert await should_speculate(redis_client, keys, EN_POOL)  # delivered: a worker has it


async def _messages(pubsub) -> list[bytes]:
    out = []
    for _ in range(20):
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if msg is not None:
            out.append(msg["data"])
    return out


def turn_event(kind: str, segment: int, rev: int, text: str = "") -> bytes:
    from shared.schemas import TurnEvent

    return encode(TurnEvent(session_id=SID, kind=kind, segment=segment, rev=rev, text=text))


async def test_eager_event_then_final_in_order(spec: Speculation, redis_client) -> None:
    """The store publishes the eager event in the same step; the commit's final follows it."""
    from shared.schemas import TurnEvent, decode

    pubsub = redis_client.pubsub()
    await pubsub.subscribe(spec.keys.results(SID))
    eager = turn_event("end_of_turn_eager", 0, 1, "yes")
    assert await spec.store(SID, 0, 1, final(0, "yes"), "yes", eager) == WAITING
    assert await spec.commit(SID, 0, 1) == PUBLISHED
    got = [decode(m) for m in await _messages(pubsub)]
    assert [type(m) for m in got] == [TurnEvent, Transcript]
    assert got[0].kind == "end_of_turn_eager" and got[1].text == "yes"
    # voiding after the final (a late void) sends no turn_resumed
    await spec.void(SID, 0, 1, turn_event("turn_resumed", 0, 1))
    assert await _messages(pubsub) == []
    await pubsub.aclose()


async def test_void_after_an_eager_event_sends_turn_resumed_once(
    spec: Speculation, redis_client
) -> None:
    from shared.schemas import TurnEvent, decode

    pubsub = redis_client.pubsub()
    await pubsub.subscribe(spec.keys.results(SID))
    resumed = turn_event("turn_resumed", 2, 1)
    await spec.store(
        SID, 2, 1, final(2, "and the"), "and the", turn_event("end_of_turn_eager", 2, 1)
    )
    await spec.void(SID, 2, 1, resumed)
    await spec.void(SID, 2, 1, resumed)  # replayed: nothing more
    # a revision voided before it was stored sent no eager event: no turn_resumed either
    await spec.void(SID, 2, 2, resumed)
    assert (
        await spec.store(SID, 2, 2, final(2, "x"), "x", turn_event("end_of_turn_eager", 2, 2))
        == VOID
    )
    got = [decode(m) for m in await _messages(pubsub)]
    assert [(type(m), m.kind) for m in got if isinstance(m, TurnEvent)] == [
        (TurnEvent, "end_of_turn_eager"), (TurnEvent, "turn_resumed"),
    ]  # fmt: skip
    assert len(got) == 2
    await pubsub.aclose()


async def test_no_eager_event_once_committed(spec: Speculation, redis_client) -> None:
    """Commit first (a finalize, the end of turn): the store publishes the final, no eager."""
    from shared.schemas import decode

    pubsub = redis_client.pubsub()
    await pubsub.subscribe(spec.keys.results(SID))
    assert await spec.commit(SID, 5, 1) == WAITING
    assert (
        await spec.store(SID, 5, 1, final(5, "ok"), "ok", turn_event("end_of_turn_eager", 5, 1))
        == PUBLISHED
    )
    got = [decode(m) for m in await _messages(pubsub)]
    assert [type(m) for m in got] == [Transcript]
    await pubsub.aclose()
