"""The parts of authentication that live in Redis: the shared token secret and per-key leases."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from gateway.auth import Authenticator, KeySessions, Principal
from gateway.protocol import ProtocolError
from shared.keys import Keys
from shared.settings import Settings


def _settings(**kw: object) -> Settings:
    return Settings(**({"auth_enabled": True, "api_keys": "alice:alices-secret"} | kw))


async def test_gateways_share_one_random_secret_through_redis(redis_server, key_prefix) -> None:
    r = aioredis.from_url(redis_server.url)
    keys = Keys(key_prefix)
    try:
        one, two = Authenticator(_settings()), Authenticator(_settings())
        await asyncio.gather(one.load_secret(r, keys.token_secret), two.load_secret(r, keys.token_secret))  # fmt: skip
        stored = await r.get(keys.token_secret)
        assert stored and len(stored) == 32
        token, _ = one.mint("alice")
        assert two.check_token(token) == "alice"  # any gateway accepts any gateway's token
        # another deployment (namespace) has its own secret
        other = Authenticator(_settings())
        await other.load_secret(r, Keys(key_prefix + "other:").token_secret)
        assert other.check_token(token) is None
        # an explicit AUTH_TOKEN_SECRET is used as is and nothing is written
        explicit = Authenticator(_settings(auth_token_secret="mine"))
        await explicit.load_secret(r, keys.token_secret + ":unused")
        assert await r.exists(keys.token_secret + ":unused") == 0
    finally:
        await r.aclose()


async def test_a_dead_gateways_slots_end_with_their_lease(redis_server, key_prefix) -> None:
    r = aioredis.from_url(redis_server.url)
    keys = Keys(key_prefix)
    s = _settings(api_key_max_sessions=1, api_key_lease_s=3)
    alice = Principal("alice", "key")
    try:
        live, dead = KeySessions(r, keys, s), KeySessions(r, keys, s)
        await dead.acquire(alice, "s-dead")
        try:
            await live.acquire(alice, "s-new")
            raise AssertionError("the limit of one was not enforced")
        except ProtocolError as exc:
            assert exc.code == "key_session_limit"
        # "dead" never renews (its gateway is gone); "live" renews its own
        deadline = time.monotonic() + 10
        while True:
            try:
                await live.acquire(alice, "s-new")
                break
            except ProtocolError:
                assert time.monotonic() < deadline, "a dead gateway's slot outlived its lease"
                await asyncio.sleep(0.25)
        # a renewed lease holds past its first term; a released one is not brought back
        stop = asyncio.Event()
        renewing = asyncio.create_task(live.run(stop))
        await asyncio.sleep(4.5)
        try:
            await dead.acquire(alice, "s-other")
            raise AssertionError("a renewed session lost its slot")
        except ProtocolError:
            pass
        await live.release(alice, "s-new")
        await live.renew()
        assert await r.zscore(keys.api_key_sessions("alice"), "s-new") is None
        stop.set()
        await renewing
    finally:
        await r.aclose()
