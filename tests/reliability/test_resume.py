"""Resuming a session while its old socket is still there: one socket per session (a resume
replaces the older socket, which is told ``session_replaced`` and closed 4409), admission and the
key's limit apply to resumes, and a half-open old socket (packets dropped, no FIN, no RST) cannot
take the new socket's finals when it is finally torn down. Real gateway, workers and Redis."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
import websockets

from shared.keys import Keys
from shared.session_state import Field, State
from tests.e2e.test_native import receive_all, stream, three_utterances
from tests.reliability.test_crash_recovery import start_stack
from tests.reliability.test_security import KEYS, expect_refused, first_message
from whisper_streaming.evaluation import wer
from whisper_streaming.listen import CLOSE_STREAM, FINALIZE, flatten

pytestmark = pytest.mark.e2e

REPLACED = 4409
SILENCE = b"\x00\x00" * 1600  # 100 ms


async def wait_until(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def finals(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in msgs if m["type"] == "final"]


async def start_session(url: str, query: str = "") -> tuple[Any, list[dict[str, Any]], str]:
    """A live /v1/listen session with some audio sent (it exists in Redis): socket, messages
    (received in the background), session id."""
    ws = await websockets.connect(f"{url}/v1/listen?session_started=true{query}")
    hello = await first_message(ws)
    msgs: list[dict[str, Any]] = [hello]
    ws.rx = asyncio.create_task(receive_all(ws, msgs))  # type: ignore[attr-defined]
    for _ in range(3):
        await ws.send(SILENCE)
    return ws, msgs, hello["session_id"]


async def session_state(r: aioredis.Redis, keys: Keys, sid: str) -> bytes | None:
    value: bytes | None = await r.hget(keys.session(sid), str(Field.STATE))
    return value


async def test_concurrent_resumers_leave_exactly_one_socket_attached(
    spawn, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """20 sockets resume one live session at once: every one but one is told
    ``session_replaced`` and closed 4409 (the original too); the one left gets the rest of the
    session, every final exactly once. (Before: all 21 stayed attached and shared the finals.)"""
    _, (url,) = start_stack(spawn, asr=1)
    pcm, reference, offsets = three_utterances()
    cut = (offsets[1] + (offsets[2] - offsets[1]) // 2) // 2 * 2  # inside the second utterance
    first: list[dict[str, Any]] = []
    ws = await websockets.connect(f"{url}/v1/listen?session_started=true")
    rx = asyncio.create_task(receive_all(ws, first))
    await stream(ws, pcm, speed=2.0, stop_at=cut)
    await wait_until(lambda: asyncio.sleep(0, bool(finals(first))), "no first final")
    sid = first[0]["session_id"]
    last = max(f["segment"] for f in finals(first))

    async def resume() -> tuple[Any, list[dict[str, Any]]]:
        sock = await websockets.connect(
            f"{url}/v1/listen?session_id={sid}&last_segment={last}&session_started=true"
        )
        got = [await first_message(sock)]
        sock.rx = asyncio.create_task(receive_all(sock, got))  # type: ignore[attr-defined]
        return sock, got

    resumers = await asyncio.gather(*(resume() for _ in range(20)))
    assert all(got[0]["type"] == "session" and got[0]["resumed"] for _, got in resumers)

    async def settled() -> bool:
        return sum(1 for sock, _ in resumers if sock.close_code is None) <= 1

    await wait_until(settled, "more than one socket still attached", timeout=60)
    await asyncio.wait_for(rx, 30)
    assert ws.close_code == REPLACED and first[-1]["code"] == "session_replaced"
    alive = [(sock, got) for sock, got in resumers if sock.close_code is None]
    assert len(alive) == 1
    for sock, got in resumers:
        if sock.close_code is not None:
            assert sock.close_code == REPLACED, sock.close_code
            assert got[-1]["type"] == "error" and got[-1]["code"] == "session_replaced"
    sock, got = alive[0]
    conn = await redis_client.hget(Keys(key_prefix).session(sid), str(Field.CONN))
    assert conn is not None and conn.decode().startswith("gw-0/")
    await stream(sock, pcm[cut:], speed=2.0)
    await sock.send(CLOSE_STREAM)
    await asyncio.wait_for(sock.rx, 90)
    assert sock.close_code == 1000 and got[-1]["type"] == "closed"
    mine = [f["segment"] for f in finals(got)]
    assert mine == sorted(set(mine)) and all(s > last for s in mine)
    segments = [f["segment"] for f in finals(first)] + mine
    assert segments == list(range(got[-1]["segments"])), segments  # each exactly once
    text = " ".join(f["text"] for f in finals(first) + finals(got))
    assert wer([(reference, text)]).wer <= 0.2


KEY_AUTH = {"AUTH_ENABLED": "true", "API_KEYS": KEYS, "READY_REQUIRE_ASR": "false"}


async def test_resume_of_a_live_session_keeps_its_one_key_slot(
    spawn, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """Key limit 1: a resume of the key's live session is let in (same session, same slot) and
    replaces the old socket; the old socket's teardown must not free the slot the resumed one
    holds (before, it did, and the key could open a second session)."""
    _, (url,) = start_stack(spawn, asr=0, API_KEY_MAX_SESSIONS="1", **KEY_AUTH)
    keys = Keys(key_prefix)
    slots = keys.api_key_sessions("alice")
    old, old_msgs, sid = await start_session(url, "&token=alices-secret")
    await wait_until(
        lambda: session_state(redis_client, keys, sid), "the session was never announced"
    )
    new = await websockets.connect(
        f"{url}/v1/listen?token=alices-secret&session_id={sid}&last_segment=-1&session_started=true"
    )
    assert (await first_message(new))["resumed"] is True
    await new.send(SILENCE)
    try:
        await asyncio.wait_for(old.rx, 5)
    finally:
        old.transport.abort()  # whatever the server did, the old socket is gone now
    await asyncio.wait_for(old.rx, 10)
    assert old_msgs[-1].get("code") == "session_replaced" and old.close_code == REPLACED
    await asyncio.sleep(0.5)  # the old socket's teardown has run on the gateway
    assert await redis_client.zscore(slots, sid) is not None  # the resumed socket's slot
    await expect_refused(f"{url}/v1/listen?token=alices-secret", 429, "TOO_MANY_REQUESTS")
    await new.send(CLOSE_STREAM)
    async for _ in new:
        pass
    assert await redis_client.zcard(slots) == 0  # released once, by its holder
    fresh = await websockets.connect(f"{url}/v1/listen?token=alices-secret&session_started=true")
    assert (await first_message(fresh))["type"] == "session"
    await fresh.close()


async def test_resume_is_refused_by_admission_like_a_new_session(
    spawn, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """A gateway serving ``MAX_SESSIONS`` already refuses a resume too (429 before the upgrade),
    and takes it once it has room: a resume is a socket like any other."""
    _, (url,) = start_stack(spawn, asr=0, MAX_SESSIONS="1", READY_REQUIRE_ASR="false")
    keys = Keys(key_prefix)
    dropped, _, sid = await start_session(url)
    await wait_until(
        lambda: session_state(redis_client, keys, sid), "the session was never announced"
    )
    dropped.transport.abort()

    async def detached() -> bool:
        return await session_state(redis_client, keys, sid) == State.DETACHED.encode()

    await wait_until(detached, "the gateway never saw the drop")
    other = None
    deadline = time.monotonic() + 10
    while other is None:  # the dropped socket's slot is free once its teardown is done
        try:
            other, _, _ = await start_session(url)  # the gateway is full again
        except websockets.InvalidStatus:
            assert time.monotonic() < deadline, "the dropped socket's slot was never freed"
            await asyncio.sleep(0.1)
    resume = f"{url}/v1/listen?session_id={sid}&last_segment=-1&session_started=true"
    await expect_refused(resume, 429, "TOO_MANY_REQUESTS")
    await other.send(CLOSE_STREAM)
    await asyncio.wait_for(other.rx, 30)
    again = await websockets.connect(resume)
    assert (await first_message(again))["resumed"] is True
    await again.close()


class BlackHoleProxy:
    """A TCP proxy between client and gateway that, on :meth:`black_hole`, drops every byte in
    both directions without closing anything: the gateway's connection stays open, unanswered
    (a phone that changed networks). :meth:`cut` finally resets both sides."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.holed = False
        self.upstream_closed = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        ureader, uwriter = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [cwriter, uwriter]
        await asyncio.gather(
            self._pump(creader, uwriter),
            self._pump(ureader, cwriter, self.upstream_closed),
            return_exceptions=True,
        )

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, eof: Any = None
    ) -> None:
        while data := await reader.read(65536):
            if not self.holed:
                writer.write(data)
                await writer.drain()
        if eof is not None:
            eof.set()
        if not self.holed:
            writer.close()

    def black_hole(self) -> None:
        self.holed = True

    async def cut(self) -> None:
        for w in self._writers:
            w.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_resume_while_the_old_socket_is_half_open_loses_no_final(spawn) -> None:
    """The mobile case: the old socket's packets are dropped (no FIN, no RST), so its gateway
    still holds it open when the client resumes on a new connection. The resume takes the session
    at once; when the old connection is finally torn down, its cleanup must not remove the new
    socket's results queue (before, it did: the new socket got no live final after that)."""
    procs, (url,) = start_stack(spawn, asr=1, EOF_TIMEOUT_S="120")
    port = int(url.rsplit(":", 1)[1])
    proxy = BlackHoleProxy(port)
    await proxy.start()
    pcm, reference, offsets = three_utterances()
    drop_at = (offsets[1] + (offsets[2] - offsets[1]) // 2) // 2 * 2
    first: list[dict[str, Any]] = []
    old = await websockets.connect(
        f"ws://127.0.0.1:{proxy.port}/v1/listen?session_started=true", ping_interval=None
    )
    rx = asyncio.create_task(receive_all(old, first))
    await stream(old, pcm, speed=2.0, stop_at=drop_at)
    await wait_until(lambda: asyncio.sleep(0, bool(finals(first))), "no first final")
    proxy.black_hole()
    await asyncio.sleep(1.0)  # whatever was in flight is in the hole now
    sid = first[0]["session_id"]
    last = max(f["segment"] for f in finals(first))
    assert not proxy.upstream_closed.is_set()  # the gateway still holds the old socket open

    second: list[dict[str, Any]] = []
    resume = f"{url}/v1/listen?session_id={sid}&last_segment={last}&session_started=true"
    async with websockets.connect(resume) as new:
        hello = flatten(json.loads(await asyncio.wait_for(new.recv(), 30)))
        assert hello["resumed"] is True
        second.append(hello)
        rx2 = asyncio.create_task(receive_all(new, second))
        rest = pcm[drop_at:]
        half = len(rest) // 4 * 2
        await stream(new, rest, speed=2.0, stop_at=half)
        await proxy.cut()  # the old connection is torn down now, with the new one live
        await asyncio.wait_for(rx, 10)
        await stream(new, rest[half:], speed=2.0)
        last_start = offsets[2] / 32000

        async def all_live() -> bool:  # live, before any end-of-stream catch-up could help
            return any(f["end"] > last_start + 1 for f in finals(second))

        await asyncio.sleep(1.0)
        await new.send(FINALIZE)  # the last utterance's final now, on the live path
        await wait_until(all_live, "the last utterance's final never arrived live", 60)
        await new.send(CLOSE_STREAM)
        await asyncio.wait_for(rx2, 60)
        assert new.close_code == 1000
    got = finals(first) + finals(second)
    segments = [f["segment"] for f in got]
    assert segments == list(range(second[-1]["segments"])), segments  # each exactly once
    assert all(f["segment"] > last for f in finals(second))
    assert wer([(reference, " ".join(f["text"] for f in got))]).wer <= 0.2
    assert "socket replaced by a resume" in procs["gw-0"].log()
