"""Speculative finals: a segment is transcribed while its endpoint is still being confirmed.

A pause that reaches ``VAD_SPEECH_PAD_END_MS`` fixes the segment's audio, *if* the pause lasts
until the endpoint (``VAD_MIN_SILENCE_MS``): the segmenter says so with a
:class:`~workers.segmenter.Tentative`. The VAD worker puts that audio on ``asr:jobs:{pool}`` at once as a
``speculative`` job with revision *r* (:func:`should_speculate` first checks that no final is
waiting for a worker: speculation uses idle capacity, it never queues ahead of real finals). Then:

- the pause reaches the endpoint: the VAD worker **commits** revision *r* (:meth:`Speculation.commit`);
- speech resumes, or the segment is cut another way: revision *r* is **void**
  (:meth:`Speculation.void`), the segment goes on, and its final comes from a later revision or
  from an ordinary job.

The ASR worker skips a job already void or done (:meth:`Speculation.wanted`), transcribes the
others and **stores** the result (:meth:`Speculation.store`). Whichever of store and commit comes
second publishes the final, in the same Lua script that checks the other half: the final is
published exactly once, whatever the order and however often the job is redelivered (a VAD
takeover may re-cut the segment as an ordinary job; the gateway drops a second final).
Everything lives in one hash per session (``spec:{session}``, with the session TTL), fields
``{segment}:{letter}``: ``r`` the stored revision, ``t`` its transcript (msgpack), ``p`` the prompt
it leaves for the next segment, ``c`` the committed revision, ``v`` the highest void revision,
``d`` done.

The final's audio is exactly the tentative's (the segment closes at the same sample), so its text
is what the ordinary path would have produced; only the waiting is shorter: the endpointing
silence and the transcription now overlap.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.keys import ASR_GROUP, STREAM_DATA_FIELD, Keys
from shared.session_state import SET_PROMPT_LUA, Field, SpecField, spec_field

SPECULATE_MAX_LAG = 0
"""Speculate only while at most this many final jobs wait undelivered on the pool's stream."""

# The start of the store and commit scripts: ``publish`` appends the final to the transcript
# stream, publishes it, leaves its text as the session's prompt and marks the segment done; a
# segment already done ends the script at once (returns 0).
_PRELUDE = (
    SET_PROMPT_LUA
    + f"""
local function field(seg, name, default)
  return tonumber(redis.call('HGET', KEYS[1], seg .. ':' .. name) or default)
end
local function publish(seg, payload, prompt)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', '{STREAM_DATA_FIELD.decode()}', payload)
  redis.call('EXPIRE', KEYS[2], ARGV[6])
  redis.call('PUBLISH', ARGV[4], payload)
  if prompt ~= '' then set_prompt(KEYS[3], seg, prompt) end
  redis.call('EXPIRE', KEYS[3], ARGV[6])
  redis.call('HDEL', KEYS[1], seg .. ':{SpecField.REV}', seg .. ':{SpecField.TEXT}', seg .. ':{SpecField.PROMPT}', seg .. ':{SpecField.COMMITTED}', seg .. ':{SpecField.VOID}', seg .. ':{SpecField.EAGER}')
  redis.call('HSET', KEYS[1], seg .. ':{SpecField.DONE}', '1')
  redis.call('EXPIRE', KEYS[1], ARGV[6])
end
local seg, rev = ARGV[1], tonumber(ARGV[2])
if redis.call('HEXISTS', KEYS[1], seg .. ':{SpecField.DONE}') == 1 then return 0 end
"""
)

# KEYS: spec hash, transcript stream, session hash, audio stream.
# ARGV: segment, revision, payload, channel, maxlen, ttl, prompt, eager event ('' for none: it is
# published, in the same step, when this revision is stored and not yet committed), nudge (''
# for none: an ``AudioControl`` ``speculated`` put on the session's audio stream, if it still
# exists, when the result waits for its commit: the VAD worker decides the end of turn at once).
# Returns 1 published, 2 stored (waiting for the commit), 0 done already, -1 void.
_STORE = (
    _PRELUDE
    + f"""
if field(seg, '{SpecField.COMMITTED}', '0') == rev then
  publish(seg, ARGV[3], ARGV[7])
  return 1
end
if rev <= field(seg, '{SpecField.VOID}', '0') then return -1 end
if rev > field(seg, '{SpecField.REV}', '0') then
  redis.call('HSET', KEYS[1], seg .. ':{SpecField.REV}', rev, seg .. ':{SpecField.TEXT}', ARGV[3], seg .. ':{SpecField.PROMPT}', ARGV[7])
  if ARGV[8] ~= '' then
    redis.call('PUBLISH', ARGV[4], ARGV[8])
    redis.call('HSET', KEYS[1], seg .. ':{SpecField.EAGER}', rev)
  end
  if ARGV[9] ~= '' and redis.call('EXISTS', KEYS[4]) == 1 then
    redis.call('XADD', KEYS[4], '*', '{STREAM_DATA_FIELD.decode()}', ARGV[9])
  end
  redis.call('EXPIRE', KEYS[1], ARGV[6])
end
return 2
"""
)

# KEYS: as above. ARGV: segment, revision, (unused), channel, maxlen, ttl.
# Returns 1 published, 2 committed (waiting for the result), 0 done already.
# The segment is final from here on: its partial jobs are stale (``final_seg``).
_COMMIT = (
    _PRELUDE
    + f"""
if tonumber(seg) > tonumber(redis.call('HGET', KEYS[3], '{Field.FINAL_SEG}') or '-1') then
  redis.call('HSET', KEYS[3], '{Field.FINAL_SEG}', seg)
  redis.call('EXPIRE', KEYS[3], ARGV[6])
end
if field(seg, '{SpecField.REV}', '0') == rev then
  publish(seg, redis.call('HGET', KEYS[1], seg .. ':{SpecField.TEXT}'), redis.call('HGET', KEYS[1], seg .. ':{SpecField.PROMPT}'))
  return 1
end
redis.call('HSET', KEYS[1], seg .. ':{SpecField.COMMITTED}', rev)
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 2
"""
)

# KEYS: spec hash. ARGV: segment, revision, ttl, turn_resumed event, channel. Frees a stored
# result of that revision or older; if an eager end of turn went out for one, publishes the event.
_VOID = f"""
local seg, rev = ARGV[1], tonumber(ARGV[2])
if redis.call('HEXISTS', KEYS[1], seg .. ':{SpecField.DONE}') == 1 then return 0 end
redis.call('HSET', KEYS[1], seg .. ':{SpecField.VOID}', rev)
local eager = tonumber(redis.call('HGET', KEYS[1], seg .. ':{SpecField.EAGER}') or '0')
if eager > 0 and eager <= rev then
  redis.call('HDEL', KEYS[1], seg .. ':{SpecField.EAGER}')
  if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[4]) end
end
if tonumber(redis.call('HGET', KEYS[1], seg .. ':{SpecField.REV}') or '0') <= rev then
  redis.call('HDEL', KEYS[1], seg .. ':{SpecField.REV}', seg .. ':{SpecField.TEXT}', seg .. ':{SpecField.PROMPT}')
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

PUBLISHED, WAITING, DONE, VOID = 1, 2, 0, -1


class Speculation:
    """The three atomic steps of a speculative final, and the ASR worker's pre-check."""

    def __init__(self, r: aioredis.Redis, keys: Keys, transcript_maxlen: int, ttl_s: int) -> None:
        self.r = r
        self.keys = keys
        self._maxlen = transcript_maxlen
        self._ttl = ttl_s
        self._store = r.register_script(_STORE)
        self._commit = r.register_script(_COMMIT)
        self._void = r.register_script(_VOID)

    def _keys(self, session_id: str) -> list[str]:
        k = self.keys
        return [k.speculative(session_id), k.transcript(session_id), k.session(session_id)]

    async def store(
        self,
        session_id: str,
        segment: int,
        rev: int,
        payload: bytes,
        prompt: str,
        eager: bytes = b"",
        nudge: bytes = b"",
    ) -> int:
        """The ASR worker's half: ``payload`` is the encoded final :class:`Transcript`; ``prompt``
        the text to condition the next segment on ('' for none); ``eager`` an encoded
        :class:`~shared.schemas.TurnEvent` to publish if the result waits for its commit (the
        session asked for ``end_of_turn_eager``); ``nudge`` an encoded ``AudioControl``
        ``speculated`` for the session's audio stream (its VAD worker decides the end of turn on
        this result: workers/vad_jobs.py)."""
        args = [segment, rev, payload, self.keys.results(session_id), self._maxlen, self._ttl]
        keys = [*self._keys(session_id), self.keys.audio(session_id)]
        return int(await self._store(keys=keys, args=[*args, prompt, eager, nudge]))

    async def commit(self, session_id: str, segment: int, rev: int) -> int:
        """The VAD worker's half: the endpoint confirmed revision ``rev``."""
        args = [segment, rev, b"", self.keys.results(session_id), self._maxlen, self._ttl]
        return int(await self._commit(keys=self._keys(session_id), args=args))

    async def void(self, session_id: str, segment: int, rev: int, resumed: bytes = b"") -> None:
        """Revision ``rev`` (and any older one) of ``segment`` will never be committed; if an
        eager end of turn was published for it, ``resumed`` (an encoded ``turn_resumed``
        :class:`~shared.schemas.TurnEvent`) is published, in the same step."""
        args = [segment, rev, self._ttl, resumed, self.keys.results(session_id)]
        await self._void(keys=[self.keys.speculative(session_id)], args=args)

    async def stored_text(self, session_id: str, segment: int, rev: int) -> bytes | None:
        """The stored speculative final of revision ``rev`` (encoded), if that is what is
        stored."""
        stored, payload = await self.r.hmget(
            self.keys.speculative(session_id),
            [spec_field(segment, SpecField.REV), spec_field(segment, SpecField.TEXT)],
        )
        if stored is None or payload is None or int(stored) != rev:
            return None
        return bytes(payload)

    async def wanted(self, session_id: str, segment: int, rev: int) -> bool:
        """Whether a speculative job is still worth transcribing (not void, not done)."""
        done, void = await self.r.hmget(
            self.keys.speculative(session_id),
            [spec_field(segment, SpecField.DONE), spec_field(segment, SpecField.VOID)],
        )
        return done is None and (void is None or int(void) < rev)


async def should_speculate(r: aioredis.Redis, keys: Keys, pool: str) -> bool:
    """True while no final job waits undelivered on the pool's ``asr:jobs:{pool}`` (the group's
    ``lag``; Redis 7). Under a backlog a speculative job would only add to the queue it is meant
    to skip."""
    for group in await r.xinfo_groups(keys.asr_jobs(pool)):
        name = group.get("name")
        if name in (ASR_GROUP, ASR_GROUP.encode()):
            lag = group.get("lag")
            return lag is not None and int(lag) <= SPECULATE_MAX_LAG
    return True
