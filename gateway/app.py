"""The FastAPI application: WebSocket endpoints, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from gateway import listen_rest, native_protocol, transcriptions
from gateway.auth import AuthConfigError, Authenticator, KeySessions, Principal, credential_from
from gateway.context import GatewayContext, admission_error
from gateway.legacy import LegacySession
from gateway.listen_rest import deepgram_error
from gateway.native import NativeSession
from gateway.native_protocol import parse_options
from gateway.protocol import ProtocolError, parse_legacy_query
from gateway.realtime import RealtimeSession, open_realtime
from gateway.router import ResultRouter
from gateway.web import mount_web
from shared import tracing
from shared.capabilities import read_pool
from shared.keys import Keys
from shared.redis_util import connect, live_workers
from shared.runtime import install_task_dump
from shared.settings import Settings

log = logging.getLogger(__name__)


async def authorize(ws: WebSocket, session_id: str | None = None) -> Principal | None:
    """Origin, credentials and the key's session limit; on failure a clear error and 1008."""
    ctx: GatewayContext = ws.app.state.ctx
    assert ctx.auth is not None and ctx.key_sessions is not None
    try:
        ctx.auth.check_origin(ws.headers.get("origin"))
        principal = ctx.auth.authenticate(credential_from(dict(ws.headers), dict(ws.query_params)))
    except ProtocolError as exc:
        await ws.send_json(exc.frame())
        await ws.close(exc.close_code)
        return None
    return principal


async def run_session(
    ws: WebSocket, session: LegacySession | NativeSession | RealtimeSession, principal: Principal
) -> None:
    ctx: GatewayContext = ws.app.state.ctx
    assert ctx.key_sessions is not None
    session.uplink.owner = principal.name
    try:
        await ctx.key_sessions.acquire(principal, session.session_id)
    except ProtocolError as exc:
        await ws.send_json(session.error_frame(exc))
        await ws.close(*session.close_for(exc))
        return
    try:
        await session.run()
    finally:
        token = (
            session.uplink.attachment.token
        )  # a replaced socket leaves the slot to its successor
        await ctx.key_sessions.release(principal, session.session_id, token)


async def refuse(ws: WebSocket) -> bool:
    """Admission control: a clear error and 1013 when this gateway or the ASR pool is full."""
    error = await admission_error(ws.app.state.ctx)
    if error is None:
        return False
    await ws.send_json(error.frame())
    await ws.close(error.close_code)
    return True


async def readiness(ctx: GatewayContext) -> tuple[dict[str, object], bool]:
    """Redis reachable, results subscription live, a VAD and an ASR worker alive (and, for
    operators and the web page, the languages and tasks the live ASR workers announce, and the
    live workers of each model pool)."""
    detail: dict[str, object] = {"redis": False, "vad_workers": 0, "asr_workers": 0}
    try:
        detail["redis"] = bool(await ctx.redis.ping())
        ttl = ctx.settings.heartbeat_ttl_s
        detail["vad_workers"] = await live_workers(ctx.redis, ctx.keys, "vad", ttl)
        detail["asr_workers"] = await live_workers(ctx.redis, ctx.keys, "asr", ttl)
        live = await read_pool(ctx.redis, ctx.keys, ttl)
        detail["asr_languages"] = live.languages
        detail["asr_tasks"] = sorted({task for c in live.announced for task in c.tasks})
        detail["asr_pools"] = {name: p.workers for name, p in live.pools.items()}
    except (RedisError, OSError) as exc:
        detail["error"] = str(exc)
    detail["results_subscribed"] = ctx.router.connected.is_set()
    ready = bool(
        detail["redis"]
        and detail["vad_workers"]
        and (detail["asr_workers"] or not ctx.settings.ready_require_asr)
        and detail["results_subscribed"]
    )
    detail["status"] = "ready" if ready else "not ready"
    return detail, ready


async def legacy(ws: WebSocket, endpoint: str) -> None:
    await ws.accept()
    principal = await authorize(ws)
    if principal is None:
        return
    try:
        query = parse_legacy_query(dict(ws.query_params))
    except ProtocolError as exc:
        await ws.send_json(exc.frame())
        await ws.close(exc.close_code)
        return
    if await refuse(ws):
        return
    session = LegacySession(ws, ws.app.state.ctx, endpoint, query)
    await run_session(ws, session, principal)


async def legacy_root(ws: WebSocket) -> None:
    await legacy(ws, "/")


async def legacy_ws(ws: WebSocket) -> None:
    await legacy(ws, "/ws")


HANDSHAKE_STATUS = {
    "unauthorized": (401, "INVALID_AUTH"),
    "origin_not_allowed": (403, "FORBIDDEN"),
    "too_many_sessions": (429, "TOO_MANY_REQUESTS"),
    "key_session_limit": (429, "TOO_MANY_REQUESTS"),
    "overloaded": (503, "SERVICE_UNAVAILABLE"),
}
"""Deepgram refuses a live session before the upgrade: an HTTP status and its JSON error."""


def offered_subprotocol(ws: WebSocket) -> str | None:
    """The subprotocol to accept: Deepgram's browser SDK offers ``token, <key>`` (or ``bearer,
    <token>``) and fails the connection unless ``token`` comes back."""
    offered = list(ws.scope.get("subprotocols") or [])
    return offered[0] if len(offered) >= 2 and offered[0].lower() in ("token", "bearer") else None


async def deny(ws: WebSocket, exc: ProtocolError, request_id: str) -> None:
    """Refuse the upgrade with Deepgram's HTTP error, as its SDKs expect. A browser (a request
    with an ``Origin``) cannot read a refused handshake — it sees only a failed connection, and a
    page would retry a bad key for ever — so it gets the upgrade, then the ``Error`` message and
    its close code (1008 for credentials and origins, 1013 for capacity); so does a server that
    cannot answer a handshake with HTTP."""
    status, err_code = HANDSHAKE_STATUS.get(exc.code, (400, "Bad Request"))
    if ws.headers.get("origin") is None:
        try:
            await ws.send_denial_response(deepgram_error(status, err_code, exc.message, request_id))
            return
        except RuntimeError:
            pass
    await ws.accept(subprotocol=offered_subprotocol(ws))
    await ws.send_json(native_protocol.error(exc))
    await ws.close(*native_protocol.close_for(exc))


def listen_query(ws: WebSocket) -> dict[str, Any]:
    values: dict[str, Any] = dict(ws.query_params)
    if "keyterm" in values:
        values["keyterm"] = ws.query_params.getlist("keyterm")  # it repeats
    return values


async def listen(ws: WebSocket) -> None:
    """Deepgram's live endpoint with our extensions; see docs/protocol.md. Everything that can
    be refused before the upgrade (credentials, parameters, capacity) is refused with
    Deepgram's HTTP error, as Deepgram's SDKs expect."""
    ctx: GatewayContext = ws.app.state.ctx
    assert ctx.auth is not None and ctx.key_sessions is not None
    offered = list(ws.scope.get("subprotocols") or [])
    try:
        ctx.auth.check_origin(ws.headers.get("origin"))
        principal = ctx.auth.authenticate(
            credential_from(dict(ws.headers), dict(ws.query_params), offered)
        )
        options = parse_options(listen_query(ws), None, ctx.settings.endpointing_min_ms)
        refused = await admission_error(ctx)  # a resume too: it is a socket like any other
        if refused is not None:
            raise refused
        session = NativeSession(ws, ctx, options)
        session.uplink.owner = principal.name
        session.principal = principal
        # a resume of a session that holds its key's slot takes no second one (same member)
        await ctx.key_sessions.acquire(principal, session.session_id)
    except ProtocolError as exc:
        await deny(ws, exc, native_protocol.request_id(uuid.uuid4().hex))
        return
    try:
        rid = native_protocol.request_id(session.session_id).encode()
        await ws.accept(subprotocol=offered_subprotocol(ws), headers=[(b"dg-request-id", rid)])
        await session.run()
    finally:
        token = (
            session.uplink.attachment.token
        )  # a replaced socket leaves the slot to its successor
        await ctx.key_sessions.release(principal, session.session_id, token)


async def realtime(ws: WebSocket) -> None:
    """OpenAI's Realtime transcription (``?intent=transcription``); see gateway/realtime.py."""
    opened = await open_realtime(ws)
    if opened is not None:
        await run_session(ws, *opened)


class GrantRefused(Exception):
    """No token: ``too_many_attempts`` (``retry_after`` seconds) or ``unauthorized``."""

    def __init__(self, code: str, message: str, retry_after: int = 0) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after = code, message, retry_after


async def _grant(request: Request, ttl: int | None) -> tuple[str, int]:
    """Exchange the request's API key for a short-lived session token (throttled per address):
    the token and its lifetime, or :class:`GrantRefused`."""
    auth: Authenticator = request.app.state.ctx.auth
    address = request.client.host if request.client else "unknown"
    now = time.monotonic()
    wait = auth.failures.retry_after(address, now)
    if wait:
        log.warning("auth token: %s throttled after failed attempts (%d s)", address, wait)
        raise GrantRefused("too_many_attempts", f"retry in {wait} s", wait)
    presented = credential_from(dict(request.headers), {})
    name = auth.check_key(presented) if presented else None
    if not auth.enabled:
        name = name or "dev"
    if name is None:
        auth.failures.failed(address, now)
        log.warning(
            "auth token: failed attempt from %s (%s)",
            address,
            "a wrong key" if presented else "no key",
        )  # never the key itself
        raise GrantRefused("unauthorized", "an API key is required")
    return auth.mint(name, ttl=ttl)


async def mint_token(request: Request) -> JSONResponse:
    """Exchange an API key for a short-lived session token (for web pages)."""
    try:
        token, ttl = await _grant(request, None)
    except GrantRefused as exc:
        body = {"error": {"code": exc.code, "message": exc.message}}
        if exc.retry_after:
            return JSONResponse(body, status_code=429, headers={"Retry-After": str(exc.retry_after)})  # fmt: skip
        return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    return JSONResponse({"token": token, "token_type": "bearer", "expires_in": ttl})


def _ttl_seconds(body: bytes) -> int | None:
    """The optional ``ttl_seconds`` (1 to 3600) of a grant request; ValueError if invalid."""
    if not body.strip():
        return None
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise ValueError("the body is not JSON") from exc
    value = data.get("ttl_seconds") if isinstance(data, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError("ttl_seconds must be an integer")
    if not 1 <= value <= 3600:
        raise ValueError("ttl_seconds must be between 1 and 3600")
    return int(value)


async def grant_token(request: Request) -> JSONResponse:
    """Deepgram's ``POST /v1/auth/grant``: ``{"ttl_seconds"}`` (optional; the token lives at
    most ``AUTH_TOKEN_TTL_S``) in, ``{"access_token", "expires_in"}`` out; the token is used
    as ``Authorization: Bearer <token>``."""
    rid = native_protocol.request_id(uuid.uuid4().hex)
    try:
        ttl = _ttl_seconds(await request.body())
    except ValueError as exc:
        return deepgram_error(400, "Bad Request", str(exc), rid)
    try:
        token, expires = await _grant(request, ttl)
    except GrantRefused as exc:
        if exc.retry_after:
            response = deepgram_error(429, "TOO_MANY_REQUESTS", exc.message, rid)
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        return deepgram_error(401, "INVALID_AUTH", "Invalid credentials.", rid)
    return JSONResponse({"access_token": token, "expires_in": expires})


def create_app(settings: Settings) -> FastAPI:
    keys = Keys(settings.key_prefix)
    authenticator = Authenticator(settings)  # fails fast on a bad key configuration

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        r = connect(settings.effective_redis_url, name=f"gateway-{settings.consumer_name}")
        router = ResultRouter(r, keys)
        await router.subscribe()
        install_task_dump()  # SIGUSR1 (uvicorn keeps SIGTERM and SIGINT)
        await authenticator.load_secret(r, keys.token_secret)
        stop = asyncio.Event()
        router_task = asyncio.create_task(router.run(stop), name="result-router")
        key_sessions = KeySessions(r, keys, settings)
        lease_task = asyncio.create_task(key_sessions.run(stop), name="key-leases")
        app.state.ctx = GatewayContext(
            settings=settings,
            redis=r,
            keys=keys,
            router=router,
            auth=authenticator,
            key_sessions=key_sessions,
        )
        if not authenticator.enabled:
            log.warning("AUTHENTICATION IS OFF: anyone who can reach this port can use it")
        log.info("gateway listening for results on %s", keys.results_pattern)
        try:
            yield
        finally:
            stop.set()
            await app.state.ctx.background.cancel_all()
            await asyncio.wait([router_task, lease_task], timeout=3)
            await r.aclose()

    # No Swagger or ReDoc pages (they load their assets from a CDN, and a public Ingress would
    # route them): the API is documented in docs/protocol.md; /openapi.json needs credentials.
    app = FastAPI(
        title="Whisper Streaming",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )

    app.add_api_websocket_route("/v1/listen", listen)
    app.add_api_websocket_route("/v1/realtime", realtime)
    app.add_api_websocket_route("/", legacy_root)
    app.add_api_websocket_route("/ws", legacy_ws)
    app.add_api_route("/v1/auth/token", mint_token, methods=["POST"])
    app.add_api_route("/v1/auth/grant", grant_token, methods=["POST"])

    @app.middleware("http")
    async def require_auth(request: Request, call_next: Any) -> Response:
        """HTTP API calls (/v1/…), /metrics and /openapi.json need a key or token like the
        WebSockets; the page, health and readiness do not. Prometheus scrapes the unauthenticated
        copy of /metrics on the internal ``METRICS_PORT``, which no Ingress routes."""
        path = request.url.path
        if (
            path.startswith("/v1/") and path not in ("/v1/auth/token", "/v1/auth/grant")
        ) or path in PRIVATE_PATHS:
            auth: Authenticator = authenticator
            try:
                auth.check_origin(request.headers.get("origin"))
                request.state.principal = auth.authenticate(
                    credential_from(dict(request.headers), dict(request.query_params))
                )
            except ProtocolError as exc:
                if path == "/v1/listen":  # Deepgram's pre-recorded API: its error shape
                    status, err_code = HANDSHAKE_STATUS.get(exc.code, (400, "Bad Request"))
                    rid = native_protocol.request_id(uuid.uuid4().hex)
                    return deepgram_error(status, err_code, exc.message, rid)
                return JSONResponse(
                    {"error": {"code": exc.code, "message": exc.message}},
                    status_code=403 if exc.code == "origin_not_allowed" else 401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        response: Response = await call_next(request)
        return response

    mount_web(app)
    app.include_router(transcriptions.router)
    app.include_router(listen_rest.router)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        detail, ready = await readiness(app.state.ctx)
        return JSONResponse(detail, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


PRIVATE_PATHS = frozenset({"/metrics", "/openapi.json"})


def main(settings: Settings | None = None) -> None:
    import uvicorn

    from gateway.server import DrainingServer, protocol_class
    from shared.logs import configure
    from shared.runtime import start_metrics_server

    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # until the lifespan dumps tasks on it
    settings = settings or Settings()
    configure(settings.log_level, settings.log_format, "gateway", settings.consumer_name)
    tracing.configure(settings.otlp_traces_endpoint, "gateway", settings.consumer_name)
    try:
        app = create_app(settings)
    except AuthConfigError as exc:
        raise SystemExit(f"gateway: {exc}") from exc
    start_metrics_server(settings.metrics_port)  # internal, unauthenticated: for Prometheus
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's loggers go through ours (role, worker, LOG_FORMAT)
        ws_max_size=max(2 * settings.max_frame_bytes, 1 << 20),
        timeout_graceful_shutdown=5,  # what is left after the drain
        http=protocol_class(settings.http_header_timeout_s),
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=5,
    )
    tracing.shutdown()

    async def drain() -> None:
        ctx = getattr(app.state, "ctx", None)
        if ctx is not None:
            await ctx.drain(settings.shutdown_grace_s)

    DrainingServer(config, drain).run()


if __name__ == "__main__":
    main()
