"""One socket per session, across gateways: the attached socket's token in ``session:{id}``.

Every socket that opens or resumes a session gets a fresh token (:class:`Attachment`). Opening a
session writes it as the session's ``conn`` field; resuming one replaces it (:func:`take_over`)
and, in the same Lua step, publishes :class:`~shared.schemas.SocketAttached` on the session's
results channel, so any older socket, on any gateway, learns it was replaced before it could see
a later result. Everything a socket writes to the session's shared state is conditional on the
token still being its own (:data:`APPEND_LUA`, :data:`DETACH_LUA`, ``KeySessions.release``): a
replaced socket — a half-open one whose gateway still thinks it alive, a second tab — cannot put
audio on the stream, mark the session detached, or free the key's slot that its successor holds.

Why a resume replaces rather than waits: a phone that changed networks leaves its old socket
half-open for as long as the gateway's ping timeout (20–40 s); the resume is that same client
(only the same API key may resume), and it must not wait, nor lose finals meanwhile.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from shared.keys import STREAM_DATA_FIELD
from shared.schemas import SocketAttached, encode
from shared.session_state import Field, State


def new_token(gateway: str = "") -> str:
    """``{gateway}/{random}``: unique per socket; the gateway's name is for operators."""
    return f"{gateway}/{uuid.uuid4().hex[:16]}"


@dataclass
class Attachment:
    """This socket's claim on its session: its token, and whether another socket took the
    session over (``lost``: set by a :class:`SocketAttached` notice, a refused write or a
    resync)."""

    token: str = field(default_factory=new_token)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    taking_over: bool = False
    """A resume's takeover is under way and its own notice has not come back yet: notices
    before it are of older takeovers (published before this socket's), not of newer ones."""

    def notice(self, token: str) -> bool:
        """A :class:`SocketAttached` notice on the session's channel (in order with everything
        else there): another socket's after this one's attachment means replaced."""
        if token == self.token:
            self.taking_over = False
        elif not self.taking_over:
            self.lost.set()
        return self.lost.is_set()

    def replaced_by(self, conn: str | None) -> bool:
        """The session's ``conn``, read after this socket attached, is another socket's."""
        if conn is not None and conn != self.token:
            self.lost.set()
        return self.lost.is_set()


APPEND_LUA = f"""
local cur = redis.call('HGET', KEYS[1], '{Field.CONN}')
if cur and cur ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[2], '*', '{STREAM_DATA_FIELD.decode()}', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], '{Field.SEQ}', ARGV[4], '{Field.SAMPLES}', ARGV[5])
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], '{Field.STATE}', '{State.ENDED}') end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
"""Append one entry to the session's audio stream if this socket is attached (KEYS: session,
audio; ARGV: token, payload, ttl, seq, samples, ended). ``seq`` and ``samples`` are saved with
every entry, so a resume continues exactly after the last entry that was accepted — also when the
old socket never saw its drop. A session without ``conn`` (written by an older gateway) accepts."""

TAKEOVER_LUA = f"""
local state = redis.call('HGET', KEYS[1], '{Field.STATE}')
if state ~= '{State.ATTACHED}' and state ~= '{State.DETACHED}' then return false end
local old = redis.call('HGET', KEYS[1], '{Field.CONN}')
local attach = redis.call('HINCRBY', KEYS[1], '{Field.ATTACH}', 1)
redis.call('HSET', KEYS[1], '{Field.CONN}', ARGV[1], '{Field.STATE}', '{State.ATTACHED}')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[2])
return {{attach, redis.call('HGET', KEYS[1], '{Field.SEQ}') or false,
        redis.call('HGET', KEYS[1], '{Field.SAMPLES}') or false, old or false}}
"""
"""Attach this socket to a live session, replacing whichever was (KEYS: session, results
channel; ARGV: token, encoded notice, ttl). False if the session is not live (it ended)."""

DETACH_LUA = f"""
local cur = redis.call('HGET', KEYS[1], '{Field.CONN}')
if cur and cur ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], '{Field.STATE}', '{State.DETACHED}')
return 1
"""
"""The socket dropped: the session waits for a resume — unless another socket has it already."""

RELEASE_SLOT_LUA = f"""
local cur = redis.call('HGET', KEYS[1], '{Field.CONN}')
if cur and ARGV[1] ~= '' and cur ~= ARGV[1] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""
"""Free the key's slot of a session (KEYS: session, the key's sorted set; ARGV: token or '',
session id) unless another socket is attached to the session now: the slot is its."""


@dataclass(frozen=True)
class TakenOver:
    """What :func:`take_over` found: the attach count and where the audio stream stands."""

    attach: int
    seq: int | None
    samples: int | None
    previous: str | None


async def take_over(
    r: Any, session_key: str, results_channel: str, session_id: str, token: str, ttl_s: int
) -> TakenOver | None:
    """Make ``token`` the session's attached socket (:data:`TAKEOVER_LUA`); None if it ended."""
    notice = encode(SocketAttached(session_id=session_id, token=token))
    out = await r.eval(TAKEOVER_LUA, 2, session_key, results_channel, token, notice, ttl_s)
    if not out:
        return None
    attach, seq, samples, old = out
    return TakenOver(
        int(attach),
        None if seq is None else int(seq),
        None if samples is None else int(samples),
        None if old is None else old.decode(),
    )
