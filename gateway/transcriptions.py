"""``POST /v1/audio/transcriptions`` and ``POST /v1/audio/translations``: a recorded file
transcribed (or translated into English) through the pipeline, shaped like OpenAI's API
(multipart ``file``, ``model``, ``language`` (transcriptions), ``prompt``, ``response_format``,
``temperature``, ``timestamp_granularities[]`` (transcriptions), ``stream``), so its SDKs and
``curl`` recipes work against this service. ``stream=true`` answers with server-sent events: a
``transcript.text.delta`` as each segment's final arrives, in order, then
``transcript.text.done`` (an error after the stream has begun is a ``data: {"error": …}`` event,
as OpenAI's streams end).

The upload is decoded with PyAV (any container and codec FFmpeg reads, any rate and channel
count) and fed through Redis as one session (:mod:`gateway.file_session`): the VAD worker cuts it
into utterances and the whole ASR pool transcribes them in parallel. Errors are JSON in OpenAI's
shape, ``{"error": {"message", "type", "param", "code"}}``. docs/clients.md has examples.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.types import Message

from gateway.auth import Principal
from gateway.context import GatewayContext, admission_error, final_message
from gateway.file_session import FileSession
from gateway.protocol import ProtocolError
from shared.audio import (
    SAMPLE_RATE,
    AudioDecodeError,
    AudioTooLong,
    UnsupportedFormat,
    decode_upload_pcm,
)
from shared.capabilities import TRANSCRIBE, TRANSLATE
from shared.formats import cues, to_srt, to_vtt
from shared.languages import LANGUAGES, UnknownLanguage, normalize_language
from shared.logs import clip
from shared.redis_util import live_workers
from shared.schemas import Transcript

log = logging.getLogger(__name__)

router = APIRouter()

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")


class ApiError(Exception):
    """An error answered as ``{"error": {...}}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        body = {"type": kind, "code": self.code, "message": self.message, "param": self.param}
        return JSONResponse({"error": body}, status_code=self.status)


class _TooLarge(Exception):
    pass


def _limited(request: Request, limit: int) -> Request:
    """The same request, whose body raises once it exceeds ``limit`` bytes: a chunked upload
    or a lying Content-Length cannot fill the disk with multipart spool files."""
    seen = 0
    receive = request.receive

    async def counting() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _TooLarge
        return message

    return Request(request.scope, counting)


def decode_upload(file: IO[bytes], *, max_seconds: float, deadline_s: float) -> bytes:
    """An uploaded audio file to 16 kHz mono PCM16, within bounds (``shared.audio``: only audio
    containers and codecs, no FFmpeg protocol but the request body, the duration and decode-time
    caps); a refused format is 415, too long 413, anything FFmpeg cannot read 415."""
    try:
        return decode_upload_pcm(file, max_seconds=max_seconds, deadline_s=deadline_s)  # type: ignore[arg-type]
    except UnsupportedFormat as exc:
        raise ApiError(415, "unsupported_format", clip(str(exc), 300), "file") from exc
    except AudioTooLong as exc:
        raise ApiError(413, "audio_too_long", f"{exc} (TRANSCRIPTION_MAX_SECONDS)", "file") from exc  # fmt: skip
    except AudioDecodeError as exc:
        raise ApiError(415, "unsupported_file", clip(f"the file is not audio that can be decoded: {exc}", 300), "file") from exc  # fmt: skip


# -- rendering (pure) -------------------------------------------------------------------------


def translated(t: Transcript) -> Transcript:
    """A final as ``/v1/audio/translations`` answers it: its English translation as the text
    (no word times: they belong to the original words), with the utterance's times."""
    text = t.translation.text if t.translation is not None else ""
    return msgspec.structs.replace(t, text=text, words=[], translation=None)


def render(
    fmt: str,
    finals: Sequence[Transcript],
    *,
    duration: float,
    language: str | None,
    granularities: Sequence[str] = ("segment",),
    task: str = TRANSCRIBE,
) -> Response:
    """The response body OpenAI's API gives for ``response_format`` ``fmt``; for ``translate``
    (``/v1/audio/translations``) the text is the English translation, and verbose_json's
    ``language`` is the output's, always english, as OpenAI's."""
    source = language or next((t.language for t in finals if t.text.strip() and t.language), None)
    if task == TRANSLATE:
        finals = [translated(t) for t in finals]
        language = "en"
    segments = [final_message(t) for t in finals if t.text.strip()]
    text = " ".join(s["text"].strip() for s in segments)
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt == "srt":
        return PlainTextResponse(to_srt(segments))
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(segments), media_type="text/vtt")
    if fmt == "json":
        return JSONResponse({"text": text})
    detected = language or source
    body: dict[str, Any] = {
        "task": task,
        "language": LANGUAGES.get(detected or "", detected or ""),
        "duration": round(duration, 3),
        "text": text,
    }
    if "segment" in granularities:
        body["segments"] = [
            {
                "id": i,
                "seek": int(round(s["start"] * 100)),
                "start": s["start"],
                "end": s["end"],
                "text": s["text"],
                "language": s["language"],
                "language_probability": s["language_probability"],
                "processing_time": s["processing_time"],
            }
            for i, s in enumerate(cues(segments))
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": w["word"].strip(), "start": w["start"], "end": w["end"],
             "probability": w["probability"]}
            for s in segments
            for w in s["words"]
        ]  # fmt: skip
    return JSONResponse(body)


# -- the endpoint -----------------------------------------------------------------------------


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, UploadFile):
        return None
    return str(value).strip() or None


def _stream(form: Any, fmt: str) -> bool:
    value = (_field(form, "stream") or "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ApiError(400, "invalid_value", "stream must be true or false", "stream")
    stream = value in ("true", "1")
    if stream and fmt not in ("json", "text"):
        raise ApiError(400, "invalid_value", "stream=true takes response_format json or text", "stream")  # fmt: skip
    return stream


def _options(form: Any, task: str) -> tuple[str, str | None, str | None, list[str]]:
    fmt = _field(form, "response_format") or "json"
    if fmt not in RESPONSE_FORMATS:
        raise ApiError(400, "invalid_value", f"response_format must be one of {', '.join(RESPONSE_FORMATS)}", "response_format")  # fmt: skip
    temperature = _field(form, "temperature")
    try:
        if temperature is not None and not 0.0 <= float(temperature) <= 1.0:
            raise ValueError(temperature)
    except ValueError:
        raise ApiError(400, "invalid_value", "temperature must be a number from 0 to 1", "temperature") from None  # fmt: skip
    try:  # OpenAI's translations take no language: the source is detected per utterance
        language = normalize_language(_field(form, "language")) if task == TRANSCRIBE else None
    except UnknownLanguage as exc:
        raise ApiError(400, "invalid_value", str(exc), "language") from exc
    granularities = [
        str(g).strip()
        for name in ("timestamp_granularities[]", "timestamp_granularities")
        for g in form.getlist(name)
        if isinstance(g, str) and g.strip()
    ] or ["segment"]
    bad = [g for g in granularities if g not in GRANULARITIES]
    if bad:
        raise ApiError(400, "invalid_value", f"timestamp_granularities must be segment and/or word, not {bad[0]!r}", "timestamp_granularities[]")  # fmt: skip
    return fmt, language, _field(form, "prompt"), granularities


async def _check_workers(ctx: GatewayContext) -> None:
    ttl = ctx.settings.heartbeat_ttl_s
    vad = await live_workers(ctx.redis, ctx.keys, "vad", ttl)
    asr = await live_workers(ctx.redis, ctx.keys, "asr", ttl)
    if not (vad and asr):
        raise ApiError(503, "no_workers", f"no live workers to transcribe with ({vad} VAD, {asr} ASR)")  # fmt: skip


def _form_schema(task: str) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "file": {"type": "string", "format": "binary"},
        "model": {"type": "string", "description": "accepted, ignored"},
        "prompt": {"type": "string"},
        "stream": {"type": "boolean", "description": "server-sent events"},
        "response_format": {"type": "string", "enum": list(RESPONSE_FORMATS)},
        "temperature": {"type": "number", "description": "accepted (0 to 1), ignored"},
    }
    if task == TRANSCRIBE:
        properties["language"] = {"type": "string"}
        properties["timestamp_granularities[]"] = {
            "type": "array",
            "items": {"type": "string", "enum": list(GRANULARITIES)},
        }
    schema = {"type": "object", "required": ["file"], "properties": properties}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }


@router.post(
    "/v1/audio/transcriptions",
    summary="Transcribe a recorded file (OpenAI-compatible)",
    openapi_extra=_form_schema(TRANSCRIBE),
)
async def create_transcription(request: Request) -> Response:
    return await _answer(request, TRANSCRIBE)


@router.post(
    "/v1/audio/translations",
    summary="Translate a recorded file into English (OpenAI-compatible)",
    openapi_extra=_form_schema(TRANSLATE),
)
async def create_translation(request: Request) -> Response:
    return await _answer(request, TRANSLATE)


async def _answer(request: Request, task: str) -> Response:
    try:
        return await _transcribe(request, task)
    except ApiError as exc:
        log.info("%s refused: %s %s", task, exc.status, exc.message)
        return exc.response()


def too_large(limit: int) -> ApiError:
    return ApiError(413, "file_too_large", f"the request exceeds the limit of {limit} bytes (TRANSCRIPTION_MAX_BYTES)", "file")  # fmt: skip


def check_length(request: Request, limit: int) -> None:
    """A declared ``Content-Length`` over ``limit`` is refused before anything is read."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large(limit)


async def check_capacity(ctx: GatewayContext) -> None:
    """Live workers, and the same admission control as the sockets (503 otherwise)."""
    await _check_workers(ctx)
    refused = await admission_error(ctx)
    if refused is not None:
        raise ApiError(503, refused.code, refused.message)


async def read_bounded(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """Everything ``chunks`` yields, at most ``limit`` bytes (413 as soon as it passes them)."""
    parts, seen = [], 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > limit:
            raise too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw request body, at most ``limit`` bytes (413 beyond, however it is sent)."""
    check_length(request, limit)
    return await read_bounded(request.stream(), limit)


@dataclass(frozen=True)
class Slot:
    """A file session's place in its key's session limit, taken before any decoding (a key at
    its limit spends no CPU or memory); :func:`run_file` gives it back."""

    principal: Principal
    session_id: str


async def take_slot(request: Request) -> Slot:
    ctx: GatewayContext = request.app.state.ctx
    slot = Slot(getattr(request.state, "principal", None) or Principal("dev", "open"), uuid.uuid4().hex)  # fmt: skip
    assert ctx.key_sessions is not None
    try:
        await ctx.key_sessions.acquire(slot.principal, slot.session_id)
    except ProtocolError as exc:
        raise ApiError(429, exc.code, exc.message) from exc
    return slot


async def release_slot(request: Request, slot: Slot) -> None:
    ctx: GatewayContext = request.app.state.ctx
    assert ctx.key_sessions is not None
    await ctx.key_sessions.release(slot.principal, slot.session_id)


async def decode_in_slot(request: Request, slot: Slot, file: IO[bytes]) -> bytes:
    """:func:`decode_upload` in a thread, within the upload caps; the slot is given back if it
    fails."""
    ctx: GatewayContext = request.app.state.ctx
    try:
        return await asyncio.to_thread(
            decode_upload,
            file,
            max_seconds=min(ctx.settings.transcription_max_seconds, ctx.settings.max_session_s),
            deadline_s=ctx.settings.transcription_timeout_s,
        )
    except BaseException:
        await release_slot(request, slot)
        raise


async def run_file(
    request: Request, session: FileSession, started: float, slot: Slot
) -> list[Transcript]:
    """Run a file session in its slot of the caller's key (given back at the end); its finals,
    or the :class:`ApiError` for what went wrong (a broken limit, a timeout)."""
    ctx: GatewayContext = request.app.state.ctx
    session.uplink.owner = slot.principal.name  # counted against the key's limit like a socket
    try:
        finals = await session.transcribe()
    finally:
        await release_slot(request, slot)
    _raise_failure(ctx, session)
    log.info(
        "session=%s stage=gateway file transcribed: %.1fs audio, %d segments in %.1fs",
        session.session_id, len(session.pcm) / 2 / SAMPLE_RATE, len(finals),
        time.monotonic() - started,
    )  # fmt: skip
    return finals


async def _transcribe(request: Request, task: str) -> Response:
    ctx: GatewayContext = request.app.state.ctx
    limit = ctx.settings.transcription_max_bytes
    check_length(request, limit)
    if ctx.uploads >= ctx.settings.transcription_max_uploads:  # each one is spooled to /tmp
        raise ApiError(503, "too_many_uploads", f"this gateway is receiving {ctx.uploads} uploads already (TRANSCRIPTION_MAX_UPLOADS); try again shortly")  # fmt: skip
    ctx.uploads += 1
    try:
        async with _limited(request, limit).form(max_files=1, max_fields=32) as form:
            fmt, language, prompt, granularities = _options(form, task)
            stream = _stream(form, fmt)
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "missing_file", "a multipart field 'file' with the audio is required", "file")  # fmt: skip
            await check_capacity(ctx)
            started = time.monotonic()
            slot = await take_slot(request)
            pcm = await decode_in_slot(request, slot, upload.file)
    except _TooLarge:
        raise too_large(limit) from None
    except MultiPartException as exc:
        raise ApiError(400, "invalid_request", f"not a valid multipart/form-data body: {exc.message}") from exc  # fmt: skip
    finally:
        ctx.uploads -= 1

    duration = len(pcm) / 2 / SAMPLE_RATE
    session = FileSession(
        ctx, pcm, language=language, prompt=prompt, task=task, session_id=slot.session_id
    )
    if stream:
        session.uplink.owner = slot.principal.name  # counted against the key like a socket
        events = _events(ctx, session, slot.principal, duration)
        headers = {"X-Session-Id": session.session_id, "Cache-Control": "no-cache"}
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    finals = await run_file(request, session, started, slot)
    response = render(
        fmt, finals, duration=duration, language=language, granularities=granularities, task=task
    )
    response.headers["X-Session-Id"] = session.session_id  # its finals on transcript:{session}
    return response


def _raise_failure(ctx: GatewayContext, session: FileSession) -> None:
    """The session's error (or its timeout) as the :class:`ApiError` to answer with."""
    for err in session.errors:
        status = {"session_too_long": 413, "overloaded": 503, "too_many_sessions": 503, "unsupported_language": 400}  # fmt: skip
        raise ApiError(status.get(err.get("code", ""), 500), err.get("code", "error"), err.get("message", ""))  # fmt: skip
    if not session.complete:
        raise ApiError(504, "timeout", f"the file was not transcribed within {ctx.settings.transcription_timeout_s:.0f} s (TRANSCRIPTION_TIMEOUT_S); segments {session.downlink.reorder.next} of {session.downlink.total} arrived")  # fmt: skip


def sse(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


async def _events(
    ctx: GatewayContext, session: FileSession, principal: Principal, duration: float
) -> AsyncIterator[bytes]:
    """``stream=true``: a delta per final as it arrives (text joined by spaces), then done."""
    queue: asyncio.Queue[Transcript | None] = asyncio.Queue()
    session.on_final = queue.put

    async def run() -> None:
        try:
            await session.transcribe()
        finally:
            await queue.put(None)

    task = asyncio.create_task(run(), name=f"stream-{session.session_id}")
    texts: list[str] = []
    try:
        while (t := await queue.get()) is not None:
            text = t.text.strip()
            if text:
                yield sse({"type": "transcript.text.delta", "delta": (" " if texts else "") + text, "logprobs": None})  # fmt: skip
                texts.append(text)
        await task
        try:
            _raise_failure(ctx, session)
        except ApiError as exc:
            yield sse(json.loads(bytes(exc.response().body)))
            return
        usage = {"type": "duration", "seconds": round(duration, 3)}
        yield sse({"type": "transcript.text.done", "text": " ".join(texts), "logprobs": None, "usage": usage})  # fmt: skip
    finally:
        if not task.done():
            task.cancel()
        assert ctx.key_sessions is not None
        await ctx.key_sessions.release(principal, session.session_id)
