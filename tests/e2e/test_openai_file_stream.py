"""POST /v1/audio/transcriptions with the official openai SDK: ``stream=True`` yields
``transcript.text.delta`` events (one per final, in order) and a ``transcript.text.done`` with the
whole text; ``timestamp_granularities=["segment"]`` fills ``segments`` of verbose_json."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai import OpenAI

from tests.conftest import Service
from whisper_streaming.evaluation import wer

pytestmark = pytest.mark.e2e


def client(service: Service) -> OpenAI:
    return OpenAI(api_key="unused", base_url=f"{service.http}/v1", timeout=180)


def test_sdk_streams_deltas_then_done(service: Service, corpus: Path) -> None:
    path = corpus / "long" / "sonnet002_librivox.mp3"  # 53 s: several segments
    with path.open("rb") as f:
        stream = client(service).audio.transcriptions.create(
            model="whisper-1", file=f, language="en", stream=True
        )
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[-1] == "transcript.text.done" and set(kinds[:-1]) == {"transcript.text.delta"}
    assert len(kinds) > 2  # a long file: several segments, each its own delta
    deltas = "".join(e.delta for e in events[:-1])
    assert deltas == events[-1].text
    # the bound of the same file's non-streamed test (tests/e2e/test_transcriptions.py)
    reference = (corpus / "long" / "sonnet002_librivox.txt").read_text().split("\n", 1)[1]
    assert wer([(reference, events[-1].text)]).wer <= 0.35


def test_sdk_verbose_json_segments(service: Service, corpus: Path) -> None:
    with (corpus / "long" / "jfk.flac").open("rb") as f:
        result = client(service).audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["segment"],
        )
    segments = result.segments or []
    assert segments and all(s.end > s.start for s in segments)
    assert " ".join(s.text.strip() for s in segments) == result.text
    reference = (corpus / "long" / "jfk.txt").read_text()
    assert wer([(reference, result.text)]).wer <= 0.2
