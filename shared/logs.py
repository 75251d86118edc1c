"""Logging set-up, done once in each entry point.

Every line carries the process's role (``gateway``, ``vad-worker``, ``asr-worker``) and worker
name (``CONSUMER_NAME``: the pod name in Kubernetes, ``host-asr-worker-1-pid`` under ``up``).
``LOG_FORMAT=json`` writes one JSON object a line: ``time``, ``level``, ``logger``, ``message``,
``role``, ``worker`` and, where known, ``session_id``, ``segment``, ``stage``, ``latency_ms``.
Those come from, in order: the ``extra`` of the call, :func:`log_context` (a contextvar, so an
asyncio task's lines carry its session), and the project's ``session=… segment=… stage=…
latency_ms=…`` convention in the message itself.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

ECHO_CHARS = 64
"""Client input quoted back in an error frame or a log line is cut to this many characters."""

_TOKEN = re.compile(r"(?i)([?&](?:token|api_key|key)=)[^&\s\"]*")


def clip(value: object, limit: int = ECHO_CHARS) -> str:
    """``repr`` of client input, at most ``limit`` characters plus an ellipsis: a 900 KB
    ``type`` is not echoed whole to the client or into a log line."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def redact(text: str) -> str:
    """``?token=…`` values (credentials in URLs) replaced by ``***``."""
    return _TOKEN.sub(r"\1***", text)


class RedactTokens(logging.Filter):
    """On ``uvicorn.access`` (and anything else that logs request URLs): uvicorn writes the
    query string, and browsers put their credential in ``?token=``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        record.msg = redact(record.msg) if isinstance(record.msg, str) else record.msg
        return True


CONTEXT_FIELDS = ("session_id", "segment", "stage", "latency_ms")
_CONTEXT: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "log_context", default=MappingProxyType({})
)
_IN_MESSAGE = re.compile(r"\b(session|session_id|segment|stage|latency_ms)=([^\s,;:()]+)")
HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
TEXT_FORMAT = "%(asctime)s %(levelname)s %(role)s %(worker)s %(name)s: %(message)s"


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Lines logged inside (in this task or thread) carry ``fields`` (``session_id=…``)."""
    token = _CONTEXT.set({**_CONTEXT.get(), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def context_fields(record: logging.LogRecord) -> dict[str, Any]:
    """session_id, segment, stage, latency_ms known for this record (pure)."""
    found: dict[str, Any] = {}
    for key, value in _IN_MESSAGE.findall(record.getMessage()):
        key = "session_id" if key == "session" else key
        found[key] = int(value) if key in ("segment", "latency_ms") and value.isdigit() else value
    found |= {k: v for k, v in _CONTEXT.get().items() if k in CONTEXT_FIELDS}
    found |= {k: getattr(record, k) for k in CONTEXT_FIELDS if hasattr(record, k)}
    return found


class ProcessIdentity(logging.Filter):
    """Puts ``role`` and ``worker`` on every record that passes the handler."""

    def __init__(self, role: str, worker: str) -> None:
        super().__init__()
        self.role, self.worker = role or "-", worker or "-"

    def filter(self, record: logging.LogRecord) -> bool:
        record.role, record.worker = self.role, self.worker
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "role": getattr(record, "role", "-"),
            "worker": getattr(record, "worker", "-"),
        }
        line |= context_fields(record)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class DropHealthProbes(logging.Filter):
    """On ``uvicorn.access``: no line for Kubernetes' and Prometheus' probes, which would
    otherwise be most of the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            return args[2].split("?", 1)[0] not in HEALTH_PATHS
        return True


def configure(level: str = "INFO", fmt: str = "text", role: str = "", worker: str = "") -> None:
    """Root handler on stderr in ``fmt`` (``text`` or ``json``) for this process's ``role`` and
    ``worker``; uvicorn's loggers propagate to it (run uvicorn with ``log_config=None``)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if any(isinstance(f, ProcessIdentity) for f in h.filters)]:
        root.removeHandler(old)  # configured before (tests): replace ours, keep anyone else's
    handler = logging.StreamHandler()
    handler.addFilter(ProcessIdentity(role, worker))
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, DropHealthProbes) for f in access.filters):
        access.addFilter(DropHealthProbes())
    # The model libraries are chatty at INFO.
    logging.getLogger("faster_whisper").setLevel(max(logging.WARNING, logging.getLevelName(level)))
