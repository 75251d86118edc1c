"""``POST /v1/listen``: Deepgram's pre-recorded API. The audio is the request body (any container
FFmpeg reads, or raw ``encoding=linear16`` at ``sample_rate``), transcribed through the pipeline as
one file session (:func:`gateway.transcriptions.run_file`, the path of ``/v1/audio/transcriptions``)
and answered in Deepgram's JSON (:func:`gateway.native_protocol.prerecorded`). A JSON
``{"url": …}`` body is fetched only from a host in ``LISTEN_URL_HOSTS`` (none by default: no
server-side fetches), bounded in size and time. Errors are Deepgram's
``{"err_code", "err_msg", "request_id"}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway import native_protocol as dg
from gateway.context import GatewayContext
from gateway.file_session import FileSession
from gateway.protocol import ProtocolError
from gateway.transcriptions import (
    ApiError,
    check_capacity,
    decode_in_slot,
    read_body,
    read_bounded,
    run_file,
    take_slot,
)
from shared.audio import SAMPLE_RATE, PcmCarry, StreamResampler

log = logging.getLogger(__name__)

router = APIRouter()

FETCH_TIMEOUT_S = 30.0
"""The longest a ``{"url": …}`` fetch may take, all of it."""

ERR_CODES = {400: "Bad Request", 401: "INVALID_AUTH", 403: "FORBIDDEN", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 429: "TOO_MANY_REQUESTS", 503: "SERVICE_UNAVAILABLE", 504: "TIMEOUT"}  # fmt: skip


def deepgram_error(status: int, err_code: str, message: str, request_id: str) -> JSONResponse:
    """Deepgram's REST error: ``{"err_code", "err_msg", "request_id"}`` (and ``dg-error``)."""
    header = message.encode("ascii", "backslashreplace").decode()[:300]
    return JSONResponse(
        {"err_code": err_code, "err_msg": message, "request_id": request_id},
        status_code=status,
        headers={"dg-error": header, "dg-request-id": request_id},
    )


def _query(request: Request) -> dict[str, Any]:
    values: dict[str, Any] = dict(request.query_params)
    if "keyterm" in values:
        values["keyterm"] = request.query_params.getlist("keyterm")
    return values


def _flag(values: dict[str, Any], name: str) -> bool:
    return name in values and dg.parse_bool(name, values[name])


def raw_pcm(body: bytes, rate: int) -> bytes:
    """``encoding=linear16`` bodies: PCM16 LE mono at ``rate``, to 16 kHz."""
    pcm = PcmCarry().push(body)
    return pcm if rate == SAMPLE_RATE else StreamResampler(rate, SAMPLE_RATE).push(pcm)


def allowed_url(url: Any, hosts: str) -> str:
    """``url`` if it may be fetched (http(s), a host in ``LISTEN_URL_HOSTS``), else 400/403."""
    allowed = {h.strip().lower() for h in hosts.split(",") if h.strip()}
    if not allowed:
        raise ApiError(400, "url_not_allowed", "this server does not fetch audio from URLs (LISTEN_URL_HOSTS is empty): send the audio as the request body")  # fmt: skip
    if not isinstance(url, str):
        raise ApiError(400, "invalid_request", "'url' must be a string")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or (parts.hostname or "").lower() not in allowed:
        raise ApiError(403, "url_not_allowed", f"fetching from {parts.hostname or url!r} is not allowed (LISTEN_URL_HOSTS)")  # fmt: skip
    return url


async def fetch(url: str, limit: int) -> bytes:
    """The body at ``url``: no redirects, at most ``limit`` bytes, ``FETCH_TIMEOUT_S`` in all."""

    async def get() -> bytes:
        async with httpx.AsyncClient(follow_redirects=False, timeout=FETCH_TIMEOUT_S) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ApiError(400, "fetch_failed", f"fetching the url answered {response.status_code}")  # fmt: skip
                return await read_bounded(response.aiter_bytes(), limit)

    try:
        return await asyncio.wait_for(get(), FETCH_TIMEOUT_S)
    except TimeoutError:
        raise ApiError(400, "fetch_failed", f"fetching the url took over {FETCH_TIMEOUT_S:.0f} s") from None  # fmt: skip
    except httpx.HTTPError as exc:
        raise ApiError(400, "fetch_failed", f"fetching the url failed: {type(exc).__name__}") from exc  # fmt: skip


@router.post("/v1/listen", summary="Transcribe a recorded file (Deepgram-compatible)")
async def listen_file(request: Request) -> Response:
    rid = dg.request_id(uuid.uuid4().hex)
    try:
        return await _listen_file(request)
    except ApiError as exc:
        log.info("pre-recorded transcription refused: %s %s", exc.status, exc.message)
        return deepgram_error(exc.status, ERR_CODES.get(exc.status, exc.code), exc.message, rid)
    except ProtocolError as exc:  # a query parameter
        return deepgram_error(400, "Bad Request", exc.message, rid)


async def _listen_file(request: Request) -> Response:
    ctx: GatewayContext = request.app.state.ctx
    values = _query(request)
    options = dg.parse_options(values, None, ctx.settings.endpointing_min_ms)
    limit = ctx.settings.transcription_max_bytes
    body = await read_body(request, limit)
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
        try:
            spec = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ApiError(400, "invalid_request", 'a JSON body must be {"url": ...}') from exc
        if not isinstance(spec, dict) or "url" not in spec:
            raise ApiError(400, "invalid_request", 'a JSON body must be {"url": ...}')
        body = await fetch(allowed_url(spec["url"], ctx.settings.listen_url_hosts), limit)
    if not body:
        raise ApiError(400, "missing_audio", "the request body holds no audio")
    await check_capacity(ctx)
    started = time.monotonic()
    created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    slot = await take_slot(request)  # the per-key limit before any decoding
    if "encoding" in values:  # raw audio, as Deepgram: the encoding and rate are given
        pcm = raw_pcm(body, options.sample_rate)
    else:
        pcm = await decode_in_slot(request, slot, io.BytesIO(body))
    session = FileSession(
        ctx, pcm, language=options.language, prompt=None, session_id=slot.session_id
    )
    session.uplink.diarize = options.diarize
    finals = await run_file(request, session, started, slot)
    response = JSONResponse(
        dg.prerecorded(
            finals,
            session_id=session.session_id,
            options=options,
            model=ctx.settings.asr_model or "tiny.en",
            sha256=hashlib.sha256(body).hexdigest(),
            created=created,
            duration=len(pcm) / 2 / SAMPLE_RATE,
            utterances=_flag(values, "utterances"),
            paragraphs=_flag(values, "paragraphs"),
        )
    )
    response.headers["dg-request-id"] = dg.request_id(session.session_id)
    return response
