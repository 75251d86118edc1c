"""``POST /v1/audio/transcriptions`` and ``POST /v1/audio/translations``: a recorded file
transcribed (or translated into English) through the pipeline, shaped like OpenAI's API
(multipart ``file``, ``model``, ``language`` (transcriptions), ``prompt``, ``response_format``,
``temperature``, ``timestamp_granularities[]`` (transcriptions)), so its SDKs and ``curl``
recipes work against this service.

The upload is decoded with PyAV (any container and codec FFmpeg reads, any rate and channel
count) and fed through Redis as one session (:mod:`gateway.file_session`): the VAD worker cuts it
into utterances and the whole ASR pool transcribes them in parallel. Errors are JSON in OpenAI's
shape, ``{"error": {"message", "type", "param", "code"}}``. docs/clients.md has examples.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import IO, Any

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
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


async def _transcribe(request: Request, task: str) -> Response:
    ctx: GatewayContext = request.app.state.ctx
    limit = ctx.settings.transcription_max_bytes
    too_large = ApiError(413, "file_too_large", f"the request exceeds the limit of {limit} bytes (TRANSCRIPTION_MAX_BYTES)", "file")  # fmt: skip
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    if ctx.uploads >= ctx.settings.transcription_max_uploads:  # each one is spooled to /tmp
        raise ApiError(503, "too_many_uploads", f"this gateway is receiving {ctx.uploads} uploads already (TRANSCRIPTION_MAX_UPLOADS); try again shortly")  # fmt: skip
    ctx.uploads += 1
    try:
        async with _limited(request, limit).form(max_files=1, max_fields=32) as form:
            fmt, language, prompt, granularities = _options(form, task)
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "missing_file", "a multipart field 'file' with the audio is required", "file")  # fmt: skip
            await _check_workers(ctx)
            refused = await admission_error(ctx)  # the same admission control as the sockets
            if refused is not None:
                raise ApiError(503, refused.code, refused.message)
            started = time.monotonic()
            # the per-key limit before any decoding: a key at its limit spends no CPU or memory
            session_id = uuid.uuid4().hex
            principal = getattr(request.state, "principal", None) or Principal("dev", "open")
            assert ctx.key_sessions is not None
            try:
                await ctx.key_sessions.acquire(principal, session_id)
            except ProtocolError as exc:
                raise ApiError(429, exc.code, exc.message) from exc
            try:
                max_s = min(ctx.settings.transcription_max_seconds, ctx.settings.max_session_s)
                pcm = await asyncio.to_thread(
                    decode_upload,
                    upload.file,
                    max_seconds=max_s,
                    deadline_s=ctx.settings.transcription_timeout_s,
                )
            except BaseException:
                await ctx.key_sessions.release(principal, session_id)
                raise
    except _TooLarge:
        raise too_large from None
    except MultiPartException as exc:
        raise ApiError(400, "invalid_request", f"not a valid multipart/form-data body: {exc.message}") from exc  # fmt: skip
    finally:
        ctx.uploads -= 1

    duration = len(pcm) / 2 / SAMPLE_RATE
    session = FileSession(
        ctx, pcm, language=language, prompt=prompt, task=task, session_id=session_id
    )
    session.uplink.owner = principal.name  # counted against the key's session limit like a socket
    try:
        finals = await session.transcribe()
    finally:
        await ctx.key_sessions.release(principal, session.session_id)
    for err in session.errors:
        status = {"session_too_long": 413, "overloaded": 503, "too_many_sessions": 503, "unsupported_language": 400}  # fmt: skip
        raise ApiError(status.get(err.get("code", ""), 500), err.get("code", "error"), err.get("message", ""))  # fmt: skip
    if not session.complete:
        raise ApiError(504, "timeout", f"the file was not transcribed within {ctx.settings.transcription_timeout_s:.0f} s (TRANSCRIPTION_TIMEOUT_S); segments {session.downlink.reorder.next} of {session.downlink.total} arrived")  # fmt: skip
    log.info(
        "session=%s stage=gateway file transcribed: %.1fs audio, %d segments in %.1fs",
        session.session_id, duration, len(finals), time.monotonic() - started,
    )  # fmt: skip
    response = render(
        fmt, finals, duration=duration, language=language, granularities=granularities, task=task
    )
    response.headers["X-Session-Id"] = session.session_id  # its finals on transcript:{session}
    return response
