"""The per-session state in Redis, declared once: every field of the ``session:{id}`` hash and of
the ``spec:{id}`` hash, who writes it, who reads it, and typed helpers to do both.

No other file spells a field name: code uses :class:`Field` (a ``str`` enum, so a member is
accepted wherever redis-py takes a field name), reads through :class:`SessionView` or
:func:`read_ints`, and the Lua scripts are built from the same names (:data:`SET_PROMPT_LUA`,
:func:`spec_field`). Key names themselves are in :mod:`shared.keys`.

All session keys carry the session TTL (``SESSION_TTL_S``): every writer refreshes it, so nothing
stays behind when every process of a session dies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Field(StrEnum):
    """The fields of ``session:{id}`` (see :data:`FIELDS` for who writes and reads each)."""

    STATE = "state"
    ATTACH = "attach"
    CONN = "conn"
    ENDPOINT = "endpoint"
    OWNER = "owner"
    POOL = "pool"
    SAMPLES = "samples"
    SEQ = "seq"
    VAD_SEQ = "vad_seq"
    VAD_CKPT = "vad_ckpt"
    SEGMENTS = "segments"
    AUDIO_SECONDS = "audio_seconds"
    FINAL_SEG = "final_seg"
    PARTIAL_SEG = "partial_seg"
    PARTIAL_REV = "partial_rev"
    PROMPT = "prompt"
    PROMPT_SEG = "prompt_seg"
    LANGUAGE = "lang"


class State(StrEnum):
    """Values of :attr:`Field.STATE`."""

    ATTACHED = "attached"
    """A socket is connected to the session."""
    DETACHED = "detached"
    """The socket dropped; the session can be resumed within ``RESUME_GRACE_S``."""
    ENDED = "ended"
    """The audio has ended (eof, close, abandoned); finals may still be on their way."""


@dataclass(frozen=True)
class FieldDoc:
    type: str
    writer: str
    reader: str
    meaning: str


FIELDS: dict[Field, FieldDoc] = {
    Field.STATE: FieldDoc("str", "gateway", "gateway", "attached / detached / ended (:class:`State`)"),
    Field.ATTACH: FieldDoc("int", "gateway", "gateway", "how many sockets attached so far (a resume increments it; for operators)"),
    Field.CONN: FieldDoc("str", "gateway", "gateway", "the token of the one socket attached to the session: only it may write the session's audio; a resume replaces it (gateway/attachment.py)"),
    Field.ENDPOINT: FieldDoc("str", "gateway", "operators", "the endpoint the session was opened on"),
    Field.OWNER: FieldDoc("str", "gateway", "gateway", "the API key's name: only the same key may resume"),
    Field.POOL: FieldDoc("str", "gateway", "gateway (resume), operators", "the model pool the session's jobs go to (asr:jobs:{pool}), chosen at its first audio"),
    Field.SAMPLES: FieldDoc("int", "gateway", "gateway", "16 kHz samples received, saved with each audio entry (resume)"),
    Field.SEQ: FieldDoc("int", "gateway", "gateway", "last audio-stream sequence number, saved with each audio entry (resume)"),
    Field.VAD_SEQ: FieldDoc("int", "VAD worker", "gateway", "last audio-stream sequence number the VAD worker processed (back-pressure)"),
    Field.VAD_CKPT: FieldDoc("msgpack", "VAD worker", "VAD worker", "segmenter and VAD state between utterances, for a takeover"),
    Field.SEGMENTS: FieldDoc("int", "VAD worker", "gateway", "number of segments, once the audio has ended"),
    Field.AUDIO_SECONDS: FieldDoc("float", "VAD worker", "gateway", "seconds of audio, once the audio has ended"),
    Field.FINAL_SEG: FieldDoc("int", "VAD worker", "ASR worker", "highest segment whose final job exists: its partials are stale"),
    Field.PARTIAL_SEG: FieldDoc("int", "VAD worker", "ASR worker", "segment of the newest partial job"),
    Field.PARTIAL_REV: FieldDoc("int", "VAD worker", "ASR worker", "revision of the newest partial job: older ones are stale"),
    Field.PROMPT: FieldDoc("str", "ASR worker, gateway (file prompt)", "ASR worker", "the latest final text, the next segment's prompt"),
    Field.PROMPT_SEG: FieldDoc("int", "ASR worker, gateway (-1)", "ASR worker", "segment that left the prompt: an older one never overwrites it"),
    Field.LANGUAGE: FieldDoc("str", "ASR worker", "ASR worker", "language of the latest final of a detecting session: kept unless another is confidently detected (workers/detection.py)"),
}  # fmt: skip


Value = str | int | float | bytes


def mapping(values: Mapping[Field, Value]) -> dict[str, Value]:
    """An HSET mapping of session fields (plain ``str`` names, as redis-py wants them)."""
    return {str(f): v for f, v in values.items()}


def _int(raw: bytes | None) -> int | None:
    return None if raw is None else int(raw)


def _float(raw: bytes | None) -> float | None:
    return None if raw is None else float(raw)


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")


def _raw(raw: bytes | None) -> bytes | None:
    return raw


_PARSE: dict[str, Callable[[bytes | None], Any]] = {
    "int": _int,
    "float": _float,
    "str": _text,
    "msgpack": _raw,
}
"""How a field of each declared type is read back."""

_STATES = frozenset(s.value for s in State)


@dataclass(frozen=True)
class SessionView:
    """A decoded ``HGETALL session:{id}``; absent fields are ``None``."""

    state: State | None = None
    attach: int | None = None
    conn: str | None = None
    endpoint: str | None = None
    owner: str | None = None
    pool: str | None = None
    samples: int | None = None
    seq: int | None = None
    vad_seq: int | None = None
    vad_ckpt: bytes | None = None
    segments: int | None = None
    audio_seconds: float | None = None
    final_seg: int | None = None
    partial_seg: int | None = None
    partial_rev: int | None = None
    prompt: str | None = None
    prompt_seg: int | None = None
    lang: str | None = None

    @classmethod
    def parse(cls, raw: Mapping[bytes, bytes]) -> SessionView:
        """Each field decoded by its declared type (:data:`FIELDS`); an unknown ``state`` is
        ``None``, as if absent."""
        values: dict[str, Any] = {
            f.value: _PARSE[doc.type](raw.get(f.value.encode())) for f, doc in FIELDS.items()
        }
        state = values[Field.STATE.value]
        values[Field.STATE.value] = State(state) if state in _STATES else None
        return cls(**values)

    @property
    def exists(self) -> bool:
        """The gateway announced the session (a hash with only a worker's fields is not one)."""
        return self.state is not None


async def read(r: Any, key: str) -> SessionView:
    """``HGETALL`` of one session hash (``r``: a redis-py asyncio client)."""
    return SessionView.parse(await r.hgetall(key))


async def read_ints(r: Any, key: str, *fields: Field) -> list[int | None]:
    """``HMGET`` of integer fields, in order; absent ones are ``None``."""
    return [_int(v) for v in await r.hmget(key, [str(f) for f in fields])]


async def read_float(r: Any, key: str, field: Field) -> float | None:
    return _float(await r.hget(key, str(field)))


async def read_text(r: Any, key: str, field: Field) -> str | None:
    return _text(await r.hget(key, str(field)))


async def read_totals(r: Any, key: str) -> tuple[int | None, float | None]:
    """``segments`` and ``audio_seconds`` (``HMGET``), set by the VAD worker once the audio
    ended; ``(None, None)`` before."""
    segments, seconds = await r.hmget(key, [str(Field.SEGMENTS), str(Field.AUDIO_SECONDS)])
    return _int(segments), _float(seconds)


async def read_bytes(r: Any, key: str, field: Field) -> bytes | None:
    value: bytes | None = await r.hget(key, str(field))
    return value


def write(pipe: Any, key: str, values: Mapping[Field, Value], ttl_s: int | None = None) -> None:
    """Queue ``HSET key values`` (and the session TTL) on a pipeline, or call it on a client
    (then await the result: prefer a pipeline)."""
    pipe.hset(key, mapping=mapping(values))
    if ttl_s is not None:
        pipe.expire(key, ttl_s)


# -- Lua, built from the same names ----------------------------------------------------------

SET_PROMPT_LUA = f"""
local function set_prompt(session, seg, prompt)
  local cur = tonumber(redis.call('HGET', session, '{Field.PROMPT_SEG}') or '-1')
  if tonumber(seg) > cur then
    redis.call('HSET', session, '{Field.PROMPT_SEG}', seg, '{Field.PROMPT}', prompt)
  end
end
"""
"""Lua: leave ``prompt`` as the session's prompt unless a later segment's already is (the ASR
worker's ordinary publish and the speculative store and commit share it)."""


# -- spec:{id}: speculative finals (workers/speculation.py) ----------------------------------


class SpecField(StrEnum):
    """The per-segment fields of ``spec:{id}``, stored as ``{segment}:{letter}``."""

    REV = "r"
    """the stored revision"""
    TEXT = "t"
    """its transcript (msgpack)"""
    PROMPT = "p"
    """the prompt it leaves for the next segment"""
    COMMITTED = "c"
    """the committed revision"""
    VOID = "v"
    """the highest void revision"""
    DONE = "d"
    """the segment's final was published"""
    EAGER = "x"
    """the revision an ``end_of_turn_eager`` event went out for (``turn_resumed`` if void)"""


def spec_field(segment: int, field: SpecField) -> str:
    return f"{segment}:{field}"
