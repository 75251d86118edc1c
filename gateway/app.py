"""The FastAPI application: WebSocket endpoints, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from gateway import transcriptions
from gateway.legacy import LegacySession
from gateway.native import NativeSession
from gateway.native_protocol import parse_options
from gateway.protocol import ProtocolError
from gateway.router import ResultRouter
from gateway.session import GatewayContext, admission_error
from gateway.web import mount_web
from shared.keys import Keys
from shared.redis_util import connect, live_workers
from shared.settings import Settings

log = logging.getLogger(__name__)


async def refuse(ws: WebSocket) -> bool:
    """Admission control: a clear error and 1013 when this gateway or the ASR pool is full."""
    error = await admission_error(ws.app.state.ctx)
    if error is None:
        return False
    await ws.send_json(error.frame())
    await ws.close(error.close_code)
    return True


async def readiness(ctx: GatewayContext) -> tuple[dict[str, object], bool]:
    """Redis reachable, results subscription live, a VAD and an ASR worker alive."""
    detail: dict[str, object] = {"redis": False, "vad_workers": 0, "asr_workers": 0}
    try:
        detail["redis"] = bool(await ctx.redis.ping())
        ttl = ctx.settings.heartbeat_ttl_s
        detail["vad_workers"] = await live_workers(ctx.redis, ctx.keys, "vad", ttl)
        detail["asr_workers"] = await live_workers(ctx.redis, ctx.keys, "asr", ttl)
    except (RedisError, OSError) as exc:
        detail["error"] = str(exc)
    detail["results_subscribed"] = ctx.router.connected.is_set()
    ready = bool(
        detail["redis"]
        and detail["vad_workers"]
        and detail["asr_workers"]
        and detail["results_subscribed"]
    )
    detail["status"] = "ready" if ready else "not ready"
    return detail, ready


def create_app(settings: Settings) -> FastAPI:
    keys = Keys(settings.key_prefix)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        r = connect(settings.effective_redis_url, name=f"gateway-{settings.consumer_name}")
        router = ResultRouter(r, keys)
        await router.subscribe()
        stop = asyncio.Event()
        router_task = asyncio.create_task(router.run(stop), name="result-router")
        app.state.ctx = GatewayContext(settings=settings, redis=r, keys=keys, router=router)
        log.info("gateway listening for results on %s", keys.results_pattern)
        try:
            yield
        finally:
            stop.set()
            await app.state.ctx.background.cancel_all()
            await asyncio.wait([router_task], timeout=3)
            await r.aclose()

    app = FastAPI(title="Whisper Streaming", version="0.1.0", lifespan=lifespan)

    async def legacy(ws: WebSocket, endpoint: str) -> None:
        await ws.accept()
        if await refuse(ws):
            return
        session = LegacySession(ws, app.state.ctx)
        session.endpoint = endpoint
        await session.run()

    @app.websocket("/v1/listen")
    async def listen(ws: WebSocket) -> None:
        await ws.accept()
        try:
            options = parse_options(dict(ws.query_params), None, settings.endpointing_min_ms)
        except ProtocolError as exc:
            await ws.send_json(exc.frame())
            await ws.close(exc.close_code)
            return
        if options.session_id is None and await refuse(ws):
            return
        await NativeSession(ws, app.state.ctx, options).run()

    @app.websocket("/")
    async def ws_root(ws: WebSocket) -> None:
        await legacy(ws, "/")

    @app.websocket("/ws")
    async def ws_ws(ws: WebSocket) -> None:
        await legacy(ws, "/ws")

    mount_web(app)
    app.include_router(transcriptions.router)

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


def main(settings: Settings | None = None) -> None:
    import uvicorn

    from shared.logs import configure

    settings = settings or Settings()
    configure(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        ws_max_size=max(2 * settings.max_frame_bytes, 1 << 20),
        timeout_graceful_shutdown=int(settings.eof_timeout_s),
    )


if __name__ == "__main__":
    main()
