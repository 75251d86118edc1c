"""Echoes of client input are clipped; credentials in URLs are redacted (pure)."""

from __future__ import annotations

import logging

import pytest

from gateway.native_protocol import parse_frame
from gateway.protocol import ProtocolError, parse_text_frame
from shared.logs import RedactTokens, clip, configure, redact


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
