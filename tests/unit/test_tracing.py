"""Trace context (shared/tracing.py): W3C traceparent parsing, and off means free."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from shared import tracing
from shared.schemas import AsrJob, Transcript, decode, encode
from tests.conftest import REPO


def test_traceparent_round_trip_and_rejects() -> None:
    tp = tracing.format_traceparent(0xABC, 0x12)
    assert tp == "00-00000000000000000000000000000abc-0000000000000012-01"
    assert tracing.parse(tp) == (0xABC, 0x12)
    for bad in ("", "00-xyz", "00-" + "0" * 32 + "-" + "1" * 16 + "-01", tp.upper(), tp + "-x"):
        assert tracing.parse(bad) is None, bad


def test_off_records_nothing_carries_nothing_and_imports_no_sdk() -> None:
    code = (
        "import sys; from shared import tracing; tracing.configure('', 'vad-worker', 'w');"
        "print(repr(tracing.record('vad.segment', '', 0.0, {})));"
        "print('opentelemetry.sdk' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["''", "False"]
    job = decode(encode(AsrJob(session_id="s", segment=0, start=0, end=1, pcm=b"")))
    assert isinstance(job, AsrJob) and job.traceparent == ""
    t = decode(encode(Transcript(session_id="s", segment=0, start=0, end=1, text="x")))
    assert isinstance(t, Transcript) and t.traceparent == ""


def test_configured_without_the_extra_says_what_to_install() -> None:
    if importlib.util.find_spec("opentelemetry.sdk") is not None:
        pytest.fail("the tracing extra is installed: run tests/tracing instead of this check")
    with pytest.raises(SystemExit) as exc:
        tracing.configure("http://127.0.0.1:4318/v1/traces", "gateway", "gw")
    assert "tracing extra" in str(exc.value)
    tracing.configure("", "gateway", "gw")
