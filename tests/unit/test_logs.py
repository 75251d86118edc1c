"""Echoes of client input are clipped; credentials in URLs are redacted (pure)."""

from __future__ import annotations

import json
import logging

import pytest

from gateway.native_protocol import parse_frame
from gateway.protocol import ProtocolError, parse_text_frame
from shared.logs import (
    DropHealthProbes,
    JsonFormatter,
    ProcessIdentity,
    RedactTokens,
    clip,
    configure,
    log_context,
    redact,
)


def test_clip_keeps_short_input_and_cuts_long() -> None:
    assert clip("abc") == "'abc'"
    long = clip("x" * 900_000)
    assert len(long) == 65 and long.endswith("…")


@pytest.mark.parametrize("parse", [parse_frame, parse_text_frame])
def test_a_huge_type_is_not_echoed_whole(parse) -> None:
    with pytest.raises(ProtocolError) as exc:
        parse('{"type": "%s"}' % ("A" * 900_000))
    assert exc.value.code == "unsupported_message"
    assert len(exc.value.message) < 200 and "…" in exc.value.message
    assert len(exc.value.frame()["message"]) < 200


def test_protocol_error_messages_are_capped() -> None:
    assert len(ProtocolError("x", "y" * 10_000, 1008).message) <= 301


def test_redact_token_values() -> None:
    line = '127.0.0.1:5 - "GET /v1/listen?language=en&token=wst1.abc.def HTTP/1.1" 101'
    assert redact(line) == '127.0.0.1:5 - "GET /v1/listen?language=en&token=*** HTTP/1.1" 101'
    assert redact("/?token=alices-secret") == "/?token=***"
    assert redact("/v1/listen?language=en") == "/v1/listen?language=en"


def test_uvicorn_access_log_does_not_carry_tokens(caplog: pytest.LogCaptureFixture) -> None:
    configure("INFO")
    access = logging.getLogger("uvicorn.access")
    assert any(isinstance(f, RedactTokens) for f in access.filters)
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        # uvicorn's own call: the path with its query string is an argument
        access.info('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", "/?token=alices-secret", "1.1", 101)  # fmt: skip
    assert "alices-secret" not in caplog.text and "token=***" in caplog.text


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("workers.asr_worker", logging.INFO, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def json_line(rec: logging.LogRecord) -> dict[str, object]:
    ProcessIdentity("asr-worker", "asr-1").filter(rec)
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    return parsed


def test_json_line_carries_role_worker_and_the_fields_of_the_message() -> None:
    line = json_line(
        record("session=%s segment=%d stage=asr latency_ms=%d text=%r", "s1", 3, 412, "hi")
    )
    assert line["role"] == "asr-worker" and line["worker"] == "asr-1"
    assert line["level"] == "INFO" and line["logger"] == "workers.asr_worker"
    assert (line["session_id"], line["segment"], line["stage"], line["latency_ms"]) == (
        "s1", 3, "asr", 412,
    )  # fmt: skip
    assert str(line["time"]).endswith("Z") and "session=s1" in str(line["message"])


def test_json_line_fields_from_extra_and_context() -> None:
    with log_context(session_id="ctx", stage="vad"):
        line = json_line(record("cut", segment=7))
    assert (line["session_id"], line["stage"], line["segment"]) == ("ctx", "vad", 7)
    assert "session_id" not in json_line(record("no session here"))


def test_json_line_with_an_exception_is_still_one_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        import sys

        rec = record("failed")
        rec.exc_info = sys.exc_info()
    line = json_line(rec)
    assert "ValueError" in str(line["exc"])


def test_health_probes_leave_no_access_line() -> None:
    drop = DropHealthProbes()
    access = '%s - "%s %s HTTP/%s" %d'
    for path in ("/healthz", "/readyz", "/metrics", "/readyz?x=1"):
        assert not drop.filter(record(access, "1.2.3.4:5", "GET", path, "1.1", 200))
    assert drop.filter(record(access, "1.2.3.4:5", "GET", "/v1/listen", "1.1", 101))
