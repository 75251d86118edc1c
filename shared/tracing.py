"""Traces (optional): one utterance is one trace, VAD → ASR → gateway, exported by OTLP.

Off unless ``OTLP_TRACES_ENDPOINT`` is set: then nothing is imported, no span is made and the
stream messages carry no ``traceparent`` (an empty string). On, each process records a span per
utterance and puts its W3C ``traceparent`` (``00-<trace id>-<span id>-01``) in the message it
writes, so the next stage's span is its child:

- VAD worker: ``vad.segment`` (the root: the segment was cut) → ``AsrJob.traceparent``;
- ASR worker: ``asr.transcribe`` (queue wait and decoding) → ``Transcript.traceparent``;
- gateway: ``gateway.final`` (the final sent to the client, with its latency).

The SDK and the OTLP/HTTP exporter are the ``tracing`` extra (``opentelemetry-sdk``,
``opentelemetry-exporter-otlp-proto-http``), imported only when tracing is configured; a process
configured for traces without them stops at start with what to install.
"""

from __future__ import annotations

import re
import time
from typing import Any, Protocol

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
INSTALL_HINT = (
    "OTLP_TRACES_ENDPOINT is set but OpenTelemetry is not installed: install the tracing extra "
    "(pip install 'whisper-streaming[tracing]', or opentelemetry-sdk and "
    "opentelemetry-exporter-otlp-proto-http)"
)


def parse(traceparent: str) -> tuple[int, int] | None:
    """(trace id, span id) of a W3C traceparent, or None for '' or a malformed one (pure)."""
    m = TRACEPARENT.match(traceparent or "")
    if m is None or set(m.group(1)) == {"0"} or set(m.group(2)) == {"0"}:
        return None
    return int(m.group(1), 16), int(m.group(2), 16)


def format_traceparent(trace_id: int, span_id: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-01"


class Tracer(Protocol):
    def record(
        self, name: str, parent: str, start: float, end: float, attributes: dict[str, Any]
    ) -> str:
        """Record a finished span (wall-clock seconds) under ``parent`` (a traceparent, '' for
        a new trace); its traceparent, for the next stage."""


class NoTracer:
    """Tracing off: records nothing, propagates nothing."""

    def record(
        self, name: str, parent: str, start: float, end: float, attributes: dict[str, Any]
    ) -> str:
        return ""


class OtelTracer:
    """Spans through the OpenTelemetry SDK, batched to an OTLP/HTTP endpoint."""

    def __init__(self, endpoint: str, service: str, worker: str, provider: Any = None) -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            raise SystemExit(INSTALL_HINT) from exc
        if provider is None:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError as exc:
                raise SystemExit(INSTALL_HINT) from exc
            resource = Resource.create(
                {"service.name": f"whisper-streaming-{service}", "service.instance.id": worker}
            )
            provider = TracerProvider(resource=resource)
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self.provider = provider
        self.tracer = provider.get_tracer("whisper_streaming")

    def record(
        self, name: str, parent: str, start: float, end: float, attributes: dict[str, Any]
    ) -> str:
        from opentelemetry import trace

        ids = parse(parent)
        context = None
        if ids is not None:
            remote = trace.SpanContext(
                trace_id=ids[0],
                span_id=ids[1],
                is_remote=True,
                trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
            )
            context = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        span = self.tracer.start_span(
            name, context=context, start_time=int(start * 1e9), attributes=attributes
        )
        span.end(end_time=int(end * 1e9))
        ctx = span.get_span_context()
        return format_traceparent(ctx.trace_id, ctx.span_id)

    def shutdown(self) -> None:
        self.provider.shutdown()


_TRACER: Tracer = NoTracer()


def configure(endpoint: str, service: str, worker: str) -> Tracer:
    """This process's tracer: off (free) without an endpoint."""
    global _TRACER
    _TRACER = OtelTracer(endpoint, service, worker) if endpoint else NoTracer()
    return _TRACER


def record(name: str, parent: str, start: float, attributes: dict[str, Any]) -> str:
    """A span from ``start`` (wall clock) to now under ``parent``; '' when tracing is off."""
    return _TRACER.record(name, parent, start, time.time(), attributes)


def shutdown() -> None:
    """Flush what is batched (at a clean exit)."""
    if isinstance(_TRACER, OtelTracer):
        _TRACER.shutdown()
