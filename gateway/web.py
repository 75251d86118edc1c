"""The browser page at ``GET /`` (web/index.html) and its assets under ``/static/``.

The page is plain HTML, CSS and JavaScript with no build step and nothing fetched from elsewhere,
so the service works offline. ``/`` is also the predecessor's WebSocket endpoint: Starlette routes
an HTTP GET and a WebSocket upgrade on the same path to different handlers.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
"""web/ beside the gateway package (the repository root, or the image's copy of it)."""

FALLBACK = (
    "Whisper Streaming gateway. Stream 16 kHz PCM16 mono over a WebSocket to / or /ws, or to "
    "/v1/listen; see docs/protocol.md. (The web page is missing: web/ was not shipped.)\n"
)


def mount_web(app: FastAPI, web_dir: Path = WEB_DIR) -> None:
    index = web_dir / "index.html"

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        if not index.is_file():
            return PlainTextResponse(FALLBACK)
        return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache"})

    if web_dir.is_dir():
        app.mount("/static", StaticFiles(directory=web_dir), name="static")
