"""With the SDK: the three stages' spans of one utterance form one trace, each the child of
the one before, as the traceparents carried in AsrJob and Transcript say."""

from __future__ import annotations

import time

from shared import tracing


def test_one_utterance_is_one_trace() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = tracing.OtelTracer("", "test", "t", provider=provider)
    now = time.time()
    vad = tracer.record("vad.segment", "", now - 0.3, now - 0.2, {"segment": 3})
    asr = tracer.record("asr.transcribe", vad, now - 0.2, now - 0.05, {"segment": 3})
    gw = tracer.record("gateway.final", asr, now, now, {"latency_ms": 300})
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"vad.segment", "asr.transcribe", "gateway.final"}
    assert len({s.context.trace_id for s in spans.values()}) == 1
    assert spans["vad.segment"].parent is None
    assert spans["asr.transcribe"].parent.span_id == tracing.parse(vad)[1]
    assert spans["gateway.final"].parent.span_id == tracing.parse(asr)[1]
    assert tracing.parse(gw)[0] == tracing.parse(vad)[0]
