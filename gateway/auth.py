"""Authentication and authorisation at the gateway.

- **API keys** come from ``API_KEYS`` (comma-separated) and/or ``API_KEYS_FILE`` (one a line; a
  Kubernetes Secret mounted as a file). Each is ``name:key`` (or a bare key, named by its hash) or
  ``name:sha256:<hex>`` so that plain keys need not be stored at all. Only SHA-256 digests are
  kept in memory, and a presented key is compared with every digest in constant time.
- **Session tokens**: ``POST /v1/auth/token`` with an API key returns a short-lived signed token
  (HMAC-SHA256, ``AUTH_TOKEN_TTL_S``) that a web page can use, so a long-lived key never reaches
  it. The signing secret is ``AUTH_TOKEN_SECRET`` or, when unset, 32 random bytes created once in
  Redis (``SET NX``) and shared by every gateway: never anything derived from the keys, which a
  reader of a ``name:sha256:`` keys file could recompute. A token names its key and the key's
  fingerprint: once the key is removed from the key set (``API_KEYS_FILE`` is re-read when it
  changes, as a mounted Secret does) or replaced under the same name, its tokens stop working.
- Credentials travel as ``Authorization: Bearer <key or token>`` (or Deepgram's ``Token <key>``)
  or, since browsers cannot set headers on WebSockets, a ``token`` query parameter or the
  ``Sec-WebSocket-Protocol`` pair ``token, <key>`` that Deepgram's browser SDK sends.
  ``POST /v1/auth/grant`` is Deepgram's name for the token exchange (``access_token``).
- **Origins**: with ``ALLOWED_ORIGINS`` set, a browser connection from any other Origin is refused.
- **Limits**: at most ``API_KEY_MAX_SESSIONS`` concurrent sessions per key, across all gateways
  (a sorted set per key in Redis). Each entry is a lease of ``API_KEY_LEASE_S`` that its gateway
  renews while the session is open, so a gateway that dies (SIGKILL, OOM) frees its slots within
  a lease instead of holding them for the longest possible session.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from gateway.attachment import RELEASE_SLOT_LUA
from gateway.protocol import CLOSE_POLICY, ProtocolError
from shared.keys import Keys
from shared.logs import clip
from shared.settings import Settings

log = logging.getLogger(__name__)

TOKEN_PREFIX = "wst1."


class AuthConfigError(ValueError):
    """The gateway cannot start with this authentication configuration."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes

    @property
    def fingerprint(self) -> str:
        """A short, non-secret id of this key (a token carries it: a replaced key's tokens die)."""
        return hashlib.sha256(b"whisper-streaming-kid" + self.digest).hexdigest()[:16]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the API key's name (``dev`` when authentication is off)."""

    name: str
    via: str  # "key", "token" or "open"


def _utf8(text: str) -> bytes:
    """Client text as bytes whatever it holds (a lone surrogate from a query string too)."""
    return text.encode("utf-8", "surrogatepass")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(_utf8(secret)).digest()


def parse_key(spec: str) -> ApiKey:
    spec = spec.strip()
    name, sep, rest = spec.partition(":")
    if not sep:
        return ApiKey(name=hashlib.sha256(spec.encode()).hexdigest()[:8], digest=_digest(spec))
    if rest.startswith("sha256:"):
        hexdigest = rest[len("sha256:") :]
        try:
            digest = bytes.fromhex(hexdigest)
        except ValueError as exc:
            raise AuthConfigError(f"key {name!r}: not a hex digest") from exc
        if len(digest) != 32:
            raise AuthConfigError(f"key {name!r}: a SHA-256 digest has 64 hex digits")
        return ApiKey(name=name, digest=digest)
    if not rest:
        raise AuthConfigError(f"key {name!r} is empty")
    return ApiKey(name=name, digest=_digest(rest))


def load_keys(settings: Settings) -> list[ApiKey]:
    specs = [s for s in settings.api_keys.split(",") if s.strip()]
    if settings.api_keys_file:
        path = Path(settings.api_keys_file)
        if not path.is_file():
            raise AuthConfigError(f"API_KEYS_FILE {path} does not exist")
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                specs.append(line)
    return [parse_key(s) for s in specs]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


KEYS_RECHECK_S = 5.0
"""How often (at most) the gateway looks whether ``API_KEYS_FILE`` changed."""


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.auth_enabled
        self._settings = settings
        self.keys = load_keys(settings)
        if self.enabled and not self.keys:
            raise AuthConfigError(
                "authentication is on but no API key is configured: set API_KEYS or "
                "API_KEYS_FILE (or AUTH_ENABLED=false for local development only)"
            )
        self._keys_stamp = self._file_stamp()
        self._keys_checked = time.monotonic()
        # empty until load_secret: no token validates (nor is minted) before the shared secret
        self._secret = settings.auth_token_secret.encode()
        self.token_ttl = settings.auth_token_ttl_s
        self.failures = FailedAttempts(settings.auth_max_failures, settings.auth_failure_window_s)
        self.origins = {
            o.strip().rstrip("/") for o in settings.allowed_origins.split(",") if o.strip()
        }

    async def load_secret(self, r: aioredis.Redis, key: str) -> None:
        """The token secret shared by every gateway when ``AUTH_TOKEN_SECRET`` is unset: random,
        created by whichever gateway comes first (SET NX), read by the others. (With
        authentication off tokens are still minted, for clients that always exchange a key.)"""
        if self._secret:
            return
        await r.set(key, secrets.token_bytes(32), nx=True)
        stored = await r.get(key)
        if not stored:
            raise AuthConfigError(f"cannot read the token secret from Redis ({key})")
        self._secret = bytes(stored)

    def _file_stamp(self) -> tuple[int, int] | None:
        path = self._settings.api_keys_file
        try:
            st = os.stat(path) if path else None
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size) if st else None

    def refresh_keys(self, now: float | None = None) -> None:
        """Re-read the keys when ``API_KEYS_FILE`` changed (a rotated or revoked key, a mounted
        Secret updated in place); a broken file keeps the keys in force and is logged."""
        now = time.monotonic() if now is None else now
        if not self._settings.api_keys_file or now - self._keys_checked < KEYS_RECHECK_S:
            return
        self._keys_checked = now
        stamp = self._file_stamp()
        if stamp == self._keys_stamp or stamp is None:
            return
        try:
            keys = load_keys(self._settings)
        except AuthConfigError as exc:
            log.error("API_KEYS_FILE changed but cannot be used (the old keys stay): %s", exc)
            return
        self._keys_stamp = stamp
        if self.enabled and not keys:
            log.error("API_KEYS_FILE changed to no keys; the old keys stay in force")
            return
        self.keys = keys
        log.info("API keys reloaded: %d keys", len(keys))

    def _match(self, presented: str) -> ApiKey | None:
        digest = _digest(presented)
        found = None
        for key in self.keys:  # no early exit: the time taken does not say which key matched
            if hmac.compare_digest(key.digest, digest):
                found = key
        return found

    def check_key(self, presented: str) -> str | None:
        key = self._match(presented)
        return key.name if key else None

    def _sign(self, payload: str) -> str:
        if not self._secret:
            raise RuntimeError("no token secret yet (load_secret not awaited)")
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def mint(self, name: str, now: float | None = None, ttl: int | None = None) -> tuple[str, int]:
        """A token for ``name`` and its lifetime: ``ttl`` seconds, at most ``AUTH_TOKEN_TTL_S``."""
        ttl = self.token_ttl if ttl is None else max(1, min(ttl, self.token_ttl))
        key = next((k for k in self.keys if k.name == name), None)
        exp = int((now or time.time()) + ttl)
        claims = {"sub": name, "kid": key.fingerprint if key else "", "exp": exp}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{TOKEN_PREFIX}{payload}.{self._sign(payload)}", ttl

    def check_token(self, token: str, now: float | None = None) -> str | None:
        if not token.startswith(TOKEN_PREFIX) or not self._secret:
            return None
        payload, _, sig = token[len(TOKEN_PREFIX) :].partition(".")
        expected = self._sign(payload)
        # bytes, not str: compare_digest raises TypeError on a non-ASCII str (an unhandled 500)
        if not hmac.compare_digest(expected.encode(), _utf8(sig)):
            return None
        try:
            claims = json.loads(_unb64(payload))
            if float(claims["exp"]) < (now or time.time()):
                return None
            name, kid = str(claims["sub"]), str(claims["kid"])
        except (ValueError, KeyError, TypeError):
            return None
        # the key it was minted with must still be in force (not revoked, not replaced)
        if not any(k.name == name and hmac.compare_digest(k.fingerprint, kid) for k in self.keys):
            return None
        return name

    def authenticate(self, credential: str | None) -> Principal:
        """The caller, or a ProtocolError (``unauthorized``, close 1008)."""
        if not self.enabled:
            return Principal("dev", "open")
        self.refresh_keys()
        if credential:
            name = self.check_token(credential)
            if name is not None:
                return Principal(name, "token")
            name = self.check_key(credential)
            if name is not None:
                return Principal(name, "key")
        raise ProtocolError(
            "unauthorized",
            "a valid API key or session token is required (Authorization: Bearer …, or ?token=)",
            CLOSE_POLICY,
        )

    def check_origin(self, origin: str | None) -> None:
        if origin is None or not self.origins or origin.rstrip("/") in self.origins:
            return
        raise ProtocolError(
            "origin_not_allowed", f"origin {clip(origin)} is not allowed", CLOSE_POLICY
        )


def credential_from(
    headers: dict[str, str], query: dict[str, str], subprotocols: list[str] | None = None
) -> str | None:
    """``Authorization: Bearer <key or token>`` (or Deepgram's ``Token <key>``); else
    ``Sec-WebSocket-Protocol: token, <key>`` (Deepgram's browser SDK; ``bearer, <token>``
    likewise); else the ``token`` query parameter."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "token"):
        return value.strip() or None
    offered = subprotocols or []
    if len(offered) >= 2 and offered[0].lower() in ("token", "bearer"):
        return offered[1] or None
    return query.get("token") or None


class FailedAttempts:
    """Wrong keys per client address in a sliding window (in memory, per gateway process,
    bounded: the least recently failing addresses are forgotten first). Pure: time is passed in.

    Each replica throttles on its own, so N replicas allow N times the limit: still a few
    guesses a minute against 256-bit keys, instead of thousands a second."""

    def __init__(self, limit: int, window_s: float, max_addresses: int = 10_000) -> None:
        self.limit, self.window_s, self.max_addresses = limit, window_s, max_addresses
        self._seen: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, address: str, now: float) -> list[float]:
        times = [t for t in self._seen.get(address, ()) if now - t < self.window_s]
        if times:
            self._seen[address] = times
        else:
            self._seen.pop(address, None)
        return times

    def retry_after(self, address: str, now: float) -> int:
        """Seconds to wait (0: the address may try now)."""
        times = self._recent(address, now)
        if len(times) < self.limit:
            return 0
        return max(1, math.ceil(times[-self.limit] + self.window_s - now))

    def failed(self, address: str, now: float) -> None:
        times = self._recent(address, now)
        times.append(now)
        self._seen[address] = times
        self._seen.move_to_end(address)
        while len(self._seen) > self.max_addresses:
            self._seen.popitem(last=False)


class KeySessions:
    """Concurrent sessions per API key, across all gateways: a sorted set per key of session ids
    scored by their lease's end. This gateway renews the leases of its open sessions every third
    of ``API_KEY_LEASE_S`` (:meth:`renew`, run by the gateway's lifespan); the entries of a gateway
    that died stop being renewed and no longer count once their lease ends."""

    def __init__(self, r: aioredis.Redis, keys: Keys, settings: Settings) -> None:
        self._r = r
        self._keys = keys
        self._limit = settings.api_key_max_sessions
        self.lease_s = settings.api_key_lease_s
        self._held: dict[str, tuple[str, int]] = {}
        """session id -> (key name, sockets): this gateway's open sessions (a resume may overlap
        the socket it replaces on the same gateway)."""

    def _key(self, name: str) -> str:
        return self._keys.api_key_sessions(name)

    async def acquire(self, principal: Principal, session_id: str) -> None:
        if principal.via == "open":
            return
        key, now = self._key(principal.name), time.time()
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zadd(key, {session_id: now + self.lease_s})
            pipe.zcard(key)
            pipe.expire(key, math.ceil(2 * self.lease_s))
            _, _, count, _ = await pipe.execute()
        if count > self._limit:
            await self._r.zrem(key, session_id)
            raise ProtocolError(
                "key_session_limit",
                f"this key already has {self._limit} sessions open",
                CLOSE_POLICY,
            )
        name, sockets = self._held.get(session_id, (principal.name, 0))
        self._held[session_id] = (name, sockets + 1)

    async def hold(self, principal: Principal, session_id: str) -> None:
        """Count ``session_id`` for its key again without a limit check: a resume that took the
        session over, in case the socket it replaced released the slot meanwhile (the same
        session never takes two slots: the set's member is the session id)."""
        if principal.via == "open":
            return
        key = self._key(principal.name)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {session_id: time.time() + self.lease_s})
            pipe.expire(key, math.ceil(2 * self.lease_s))
            await pipe.execute()
        self._held.setdefault(session_id, (principal.name, 1))

    async def release(self, principal: Principal, session_id: str, token: str = "") -> None:
        """Free the session's slot — unless ``token``'s socket was replaced by a resume, whose
        socket holds the slot now (gateway/attachment.py)."""
        if principal.via == "open":
            return
        name, sockets = self._held.pop(session_id, (principal.name, 1))
        if sockets > 1:
            self._held[session_id] = (name, sockets - 1)
        session = self._keys.session(session_id)
        await self._r.eval(
            RELEASE_SLOT_LUA, 2, session, self._key(principal.name), token, session_id
        )

    async def renew(self) -> None:
        """Push the leases of this gateway's open sessions forward (ZADD XX: a released entry is
        not brought back)."""
        if not self._held:
            return
        until = time.time() + self.lease_s
        async with self._r.pipeline(transaction=False) as pipe:
            for session_id, (name, _) in list(self._held.items()):
                pipe.zadd(self._key(name), {session_id: until}, xx=True)
                pipe.expire(self._key(name), math.ceil(2 * self.lease_s))
            await pipe.execute()

    async def run(self, stop: asyncio.Event) -> None:
        """Renew every third of a lease until ``stop``; a Redis error is logged and retried."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.lease_s / 3)
            except TimeoutError:
                try:
                    await self.renew()
                except Exception:  # noqa: BLE001 - a Redis hiccup: try again next round
                    log.warning("renewing per-key session leases failed", exc_info=True)
