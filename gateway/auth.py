"""Authentication and authorisation at the gateway.

- **API keys** come from ``API_KEYS`` (comma-separated) and/or ``API_KEYS_FILE`` (one a line; a
  Kubernetes Secret mounted as a file). Each is ``name:key`` (or a bare key, named by its hash) or
  ``name:sha256:<hex>`` so that plain keys need not be stored at all. Only SHA-256 digests are
  kept in memory, and a presented key is compared with every digest in constant time.
- **Session tokens**: ``POST /v1/auth/token`` with an API key returns a short-lived signed token
  (HMAC-SHA256, ``AUTH_TOKEN_TTL_S``) that a web page can use, so a long-lived key never reaches
  it. The signing secret is ``AUTH_TOKEN_SECRET`` or, when unset, derived from the key set (so
  every gateway replica with the same keys accepts the same tokens).
- Credentials travel as ``Authorization: Bearer <key or token>`` (or Deepgram's ``Token <key>``)
  or, since browsers cannot set headers on WebSockets, a ``token`` query parameter or the
  ``Sec-WebSocket-Protocol`` pair ``token, <key>`` that Deepgram's browser SDK sends.
  ``POST /v1/auth/grant`` is Deepgram's name for the token exchange (``access_token``).
- **Origins**: with ``ALLOWED_ORIGINS`` set, a browser connection from any other Origin is refused.
- **Limits**: at most ``API_KEY_MAX_SESSIONS`` concurrent sessions per key, across all gateways
  (a sorted set per key in Redis, each entry expiring with the longest possible session).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from gateway.protocol import CLOSE_POLICY, ProtocolError
from shared.keys import Keys
from shared.logs import clip
from shared.settings import Settings

TOKEN_PREFIX = "wst1."


class AuthConfigError(ValueError):
    """The gateway cannot start with this authentication configuration."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes


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


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.auth_enabled
        self.keys = load_keys(settings)
        if self.enabled and not self.keys:
            raise AuthConfigError(
                "authentication is on but no API key is configured: set API_KEYS or "
                "API_KEYS_FILE (or AUTH_ENABLED=false for local development only)"
            )
        secret = settings.auth_token_secret.encode()
        if not secret:  # same keys -> same secret on every replica
            material = b"".join(sorted(k.digest for k in self.keys))
            secret = hmac.new(b"whisper-streaming-token", material, hashlib.sha256).digest()
        self._secret = secret
        self.token_ttl = settings.auth_token_ttl_s
        self.failures = FailedAttempts(settings.auth_max_failures, settings.auth_failure_window_s)
        self.origins = {
            o.strip().rstrip("/") for o in settings.allowed_origins.split(",") if o.strip()
        }

    def check_key(self, presented: str) -> str | None:
        digest = _digest(presented)
        found = None
        for key in self.keys:  # no early exit: the time taken does not say which key matched
            if hmac.compare_digest(key.digest, digest):
                found = key.name
        return found

    def mint(self, name: str, now: float | None = None, ttl: int | None = None) -> tuple[str, int]:
        """A token for ``name`` and its lifetime: ``ttl`` seconds, at most ``AUTH_TOKEN_TTL_S``."""
        ttl = self.token_ttl if ttl is None else max(1, min(ttl, self.token_ttl))
        exp = int((now or time.time()) + ttl)
        payload = _b64(json.dumps({"sub": name, "exp": exp}, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())
        return f"{TOKEN_PREFIX}{payload}.{sig}", ttl

    def check_token(self, token: str, now: float | None = None) -> str | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        payload, _, sig = token[len(TOKEN_PREFIX) :].partition(".")
        expected = _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())
        # bytes, not str: compare_digest raises TypeError on a non-ASCII str (an unhandled 500)
        if not hmac.compare_digest(expected.encode(), _utf8(sig)):
            return None
        try:
            claims = json.loads(_unb64(payload))
            if float(claims["exp"]) < (now or time.time()):
                return None
            return str(claims["sub"])
        except (ValueError, KeyError, TypeError):
            return None

    def authenticate(self, credential: str | None) -> Principal:
        """The caller, or a ProtocolError (``unauthorized``, close 1008)."""
        if not self.enabled:
            return Principal("dev", "open")
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
    """Concurrent sessions per API key, across all gateways."""

    def __init__(self, r: aioredis.Redis, keys: Keys, settings: Settings) -> None:
        self._r = r
        self._keys = keys
        self._limit = settings.api_key_max_sessions
        self._longest = settings.max_session_s + settings.resume_grace_s + 60

    def _key(self, name: str) -> str:
        return self._keys.api_key_sessions(name)

    async def acquire(self, principal: Principal, session_id: str) -> None:
        if principal.via == "open":
            return
        key, now = self._key(principal.name), time.time()
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zadd(key, {session_id: now + self._longest})
            pipe.zcard(key)
            pipe.expire(key, int(self._longest))
            _, _, count, _ = await pipe.execute()
        if count > self._limit:
            await self._r.zrem(key, session_id)
            raise ProtocolError(
                "key_session_limit",
                f"this key already has {self._limit} sessions open",
                CLOSE_POLICY,
            )

    async def release(self, principal: Principal, session_id: str) -> None:
        if principal.via != "open":
            await self._r.zrem(self._key(principal.name), session_id)
