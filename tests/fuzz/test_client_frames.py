"""Issue 19: hostile clients on every live endpoint (``/`` and ``/ws``, ``/v1/listen``,
``/v1/realtime``): random query parameters, text frames (random JSON, the protocol's messages
with wrong types, unknown types, huge values, non-UTF-8 bytes, deep nesting) and binary frames
(empty, odd lengths, around ``MAX_FRAME_BYTES``), against the real gateway and workers while a
real session runs beside them. Whatever comes in, the gateway answers in that protocol's shape
(an error message, or what the message asks for) and closes with a proper code (never 1011, never
a connection dropped without a close, never a 500), and stays up for everyone else."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import websockets
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from gateway.native_protocol import IGNORED
from tests.fuzz.conftest import MAX_FRAME_BYTES, FuzzStack, Healthy

pytestmark = pytest.mark.e2e

FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

WS_MAX_SIZE = 1 << 20
"""The gateway's WebSocket message limit (uvicorn's ``ws_max_size``): beyond it the WebSocket
library itself closes with 1009, before the application sees the frame."""

PROTOCOL_CLOSES = {1007, 1009}
"""Closes by the WebSocket library, without an application error message: a text frame that is
not UTF-8 (1007), a message over ``WS_MAX_SIZE`` (1009)."""

ERROR_CLOSES = {1003, 1007, 1008, 1009, 1013}
"""What a session refused by the application closes with (docs/protocol.md)."""

QUIET_S = 1.0

HANDSHAKE_REFUSALS = {400, 401, 403, 429, 503}
"""``/v1/listen`` refuses before the upgrade with Deepgram's HTTP errors."""

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.just("\u00e9" * 5000),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),  # fmt: skip
    max_leaves=12,
)


def messages(types: list[str], fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[str]:  # fmt: skip
    """JSON objects shaped like the protocol's messages, with hostile values."""
    kind = st.sampled_from(types) | json_values
    return st.fixed_dictionaries(
        {"type": kind},
        optional={name: s | json_values for name, s in fields.items()}
        | {"zz_unknown": json_values},
    ).map(json.dumps)


def texts(protocol: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[str, Any]]:
    text = st.one_of(
        protocol,
        protocol,
        st.text(max_size=60),
        json_values.map(json.dumps),
        st.sampled_from(
            ["", "{}", "[]", "null", "[" * 50_000, '{"type": "' + "A" * 100_000 + '"}']
        ),  # fmt: skip
    )
    not_utf8 = st.binary(max_size=12).map(lambda b: b + b"\xff\xfe")
    return text.map(lambda t: ("text", t)) | not_utf8.map(lambda b: ("raw_text", b))


binary = st.one_of(
    st.binary(max_size=700),
    st.sampled_from(
        [0, 1, 3, MAX_FRAME_BYTES - 1, MAX_FRAME_BYTES, MAX_FRAME_BYTES + 1, WS_MAX_SIZE + 1]
    ).map(bytes),  # fmt: skip
).map(lambda b: ("bytes", b))


def query(names: list[str]) -> st.SearchStrategy[str]:
    """A query string over ``names`` (and unknown ones), values hostile; sometimes with broken
    percent-encoding."""
    value = st.one_of(
        st.sampled_from(["true", "false", "0", "1", "-1", "1e9", "", "null", "multi", "english",
                         "opus", "mulaw", "alaw", "linear16", "smart", "en", "0" * 32, "f" * 32]),
        st.integers(-(10**12), 10**12).map(str),
        st.text(max_size=20),
        st.just("\u00e9" * 150),
    )  # fmt: skip
    name = st.sampled_from(names) | st.text(min_size=1, max_size=8)
    # below 8 KB of request line: a longer one gets no answer from uvicorn's WebSocket
    # implementations (an upstream limit, docs/reliability.md)
    pairs = st.lists(st.tuples(name, value), max_size=5)
    tail = st.sampled_from(["", "&%FF%FE=%C3", "&=&&", "&a=%"])
    return st.tuples(pairs, tail).map(lambda t: urlencode(t[0], quote_via=quote) + t[1])


@dataclass
class Outcome:
    status: int | None = None
    """The HTTP status of a refused handshake."""
    body: bytes = b""
    received: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None


def converse(
    url: str,
    frames: list[tuple[str, Any]],
    end: str | None,
    subprotocols: list[str] | None = None,
    then_close: bool = False,
) -> Outcome:
    """Connect, send ``frames``, then ``end`` (a last text frame; none: close at once, unless
    ``then_close``: close once the server is quiet for ``QUIET_S``), and read everything the
    server says until its close."""
    out = Outcome()
    try:
        ws = connect(url, open_timeout=30, close_timeout=10, max_size=None, subprotocols=subprotocols)  # type: ignore[arg-type]  # fmt: skip
    except websockets.InvalidStatus as refused:
        out.status, out.body = refused.response.status_code, refused.response.body or b""
        return out
    with ws:
        try:
            for kind, data in frames:
                ws.send(data, text=kind != "bytes")
            if end is not None:
                ws.send(end)
            if end is None and not then_close:
                ws.close()
        except websockets.ConnectionClosed:
            pass
        try:
            while True:
                try:
                    raw = ws.recv(timeout=QUIET_S if then_close else 60)
                except TimeoutError:
                    assert then_close, "the server neither answered nor closed"
                    ws.close()  # the session goes on until the client ends it
                    continue
                msg = json.loads(raw)
                assert isinstance(msg, dict), raw
                out.received.append(msg)
        except websockets.ConnectionClosed:
            pass
        # what the server sent; None: the connection dropped without a close frame (1006)
        out.close_code = ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None
    return out


def may_abort(frames: list[tuple[str, Any]], end: str | None) -> bool:
    """Whether the client may see the connection end without a close frame, harmlessly (the
    process and the other sessions are unaffected): the WebSocket library refuses a message over
    ``WS_MAX_SIZE`` or a text frame that is not UTF-8 and closes the TCP connection while the
    client is still sending, so the client's kernel may discard the 1009 / 1007 (a reset); and
    a non-UTF-8 frame arriving together with the client's close makes uvicorn's
    websockets-sansio protocol fail to send its 1007 (``InvalidState``) and abort, an upstream
    limitation."""
    oversized = any(kind == "bytes" and len(data) > WS_MAX_SIZE for kind, data in frames)
    return oversized or any(kind == "raw_text" for kind, _ in frames)


def check_close(
    out: Outcome, errors: list[dict[str, Any]], client_closed: bool, abort_ok: bool = False
) -> None:
    """Accepted, and closed properly: normally (an error may cross the client's own close), by
    the WebSocket library, or after an error message with that error's code."""
    assert out.status is None, (out.status, out.body[:300])
    if out.close_code is None and abort_ok:
        return
    assert out.close_code is not None, "closed without a close frame"
    assert out.close_code != 1011
    if out.close_code == 1000:
        assert client_closed or not errors, errors
    elif not (out.close_code in PROTOCOL_CLOSES and not errors):
        assert errors and out.close_code in ERROR_CLOSES, (out.close_code, out.received[-3:])


def run_property(stack: FuzzStack, prop: Any) -> None:
    with Healthy(stack.ws) as healthy:
        prop()
    healthy.check()
    stack.check_alive()


# -- / and /ws: the predecessor's protocol ---------------------------------------------------------

legacy_texts = texts(
    messages(
        ["config", "eof", "finalize", "keepalive"],
        {
            "data": st.fixed_dictionaries(
                {},
                optional={
                    "sampleRate": st.sampled_from([16000, 8000, 7999, 192_001, 0]),
                    "channels": st.integers(-1, 9),
                    "language": st.sampled_from(["english", "en", "klingon", None]),
                    "processing_args": st.fixed_dictionaries(
                        {"chunk_length_seconds": json_values}
                    ),  # fmt: skip
                    "processing_strategy": st.sampled_from(["silence_at_end_of_chunk"]),
                },
            ),
        },
    )
)


def check_legacy(out: Outcome, client_closed: bool, abort_ok: bool) -> None:
    errors = [m for m in out.received if m.get("type") == "error"]
    for m in errors:
        assert isinstance(m["code"], str) and isinstance(m["message"], str) and m["message"], m
    for m in out.received:
        assert m.get("type") == "error" or isinstance(m.get("text"), str), m
    check_close(out, errors, client_closed, abort_ok)


def test_hostile_legacy_clients(fuzz_stack: FuzzStack) -> None:
    @FUZZ
    @given(
        path=st.sampled_from(["/", "/ws"]),
        params=query(["lang", "dest_lang"]),
        frames=st.lists(legacy_texts | binary, max_size=6),
        end=st.sampled_from(['{"type": "eof"}', None]),
    )
    @example(path="/", params="", frames=[("raw_text", b"\xff")], end='{"type": "eof"}')
    @example(path="/ws", params="lang=%FF", frames=[("bytes", bytes(WS_MAX_SIZE + 1))], end=None)
    def prop(path: str, params: str, frames: list[tuple[str, Any]], end: str | None) -> None:
        out = converse(f"{fuzz_stack.ws}{path}?{params}", frames, end)
        check_legacy(out, end is None, may_abort(frames, end))

    run_property(fuzz_stack, prop)


# -- /v1/listen: Deepgram's ------------------------------------------------------------------------

LISTEN_PARAMS = [
    "model", "language", "sample_rate", "encoding", "channels", "interim_results", "vad_events",
    "punctuate", "smart_format", "diarize", "eager_eot", "translate", "endpointing",
    "utterance_end_ms", "keyterm", "token", "session_id", "last_segment", "session_started",
    "diarize_model", "detect_language", *IGNORED,
]  # fmt: skip
LISTEN_MESSAGES = ["KeepAlive", "Finalize", "CloseStream", "Configure"]
SERVER_MESSAGES = {
    "Results", "SpeechStarted", "UtteranceEnd", "Metadata", "Error", "SessionStarted",
    "ConfigureSuccess", "EagerEndOfTurn", "TurnResumed",
}  # fmt: skip

listen_texts = texts(
    messages(
        LISTEN_MESSAGES,
        {"keyterms": st.lists(st.text(max_size=30), max_size=120) | st.just(["\u00e9" * 600])},
    )
)


def check_listen(out: Outcome, client_closed: bool, abort_ok: bool) -> None:
    if out.status is not None:  # refused before the upgrade, with Deepgram's JSON error
        assert out.status in HANDSHAKE_REFUSALS, (out.status, out.body[:300])
        body = json.loads(out.body)
        assert body["err_code"] and body["err_msg"], body
        return
    errors = [m for m in out.received if m.get("type") == "Error"]
    for m in out.received:
        assert m.get("type") in SERVER_MESSAGES, m
    for m in errors:
        assert all(isinstance(m[k], str) and m[k] for k in ("variant", "description", "code")), m
    check_close(out, errors, client_closed, abort_ok)


def test_hostile_listen_clients(fuzz_stack: FuzzStack) -> None:
    @FUZZ
    @given(
        params=query(LISTEN_PARAMS),
        frames=st.lists(listen_texts | binary, max_size=6),
        end=st.sampled_from(['{"type": "CloseStream"}', None]),
    )
    @example(params="encoding=opus", frames=[("bytes", b"\x00\x01\x02")], end=None)
    @example(params="session_id=" + "0" * 32, frames=[], end=None)
    def prop(params: str, frames: list[tuple[str, Any]], end: str | None) -> None:
        out = converse(f"{fuzz_stack.ws}/v1/listen?{params}", frames, end)
        check_listen(out, end is None, may_abort(frames, end))

    run_property(fuzz_stack, prop)


# -- /v1/realtime: OpenAI's ------------------------------------------------------------------------

audio_values = st.one_of(
    st.binary(max_size=600).map(lambda b: base64.b64encode(b).decode()),
    st.sampled_from(["", "!!!", "QQ", "QUJD=", "A" * (4 * MAX_FRAME_BYTES // 3 + 8)]),
)
formats = st.sampled_from(["pcm16", "g711_ulaw", "g711_alaw", "opus"]) | st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["audio/pcm", "audio/pcmu", "audio/x"]),
        "rate": st.sampled_from([24000, 8000, 7999, True]),
    },  # fmt: skip
)
turns = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["server_vad", "semantic_vad", "x"]),
        "silence_duration_ms": st.integers(-5, 20_000),
    },  # fmt: skip
)
transcription = st.fixed_dictionaries(
    {},
    optional={
        "model": st.text(max_size=10),
        "language": st.sampled_from(["en", "xx", ""]),
        "prompt": st.text(max_size=20) | st.just("x" * 600),
    },  # fmt: skip
)
session_bodies = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["transcription", "realtime"]),
        "audio": st.fixed_dictionaries(
            {},
            optional={
                "input": st.fixed_dictionaries(
                    {},
                    optional={
                        "format": formats,
                        "turn_detection": turns,
                        "transcription": transcription,
                    },
                )
            },  # fmt: skip
        ),
        "input_audio_format": formats,
        "input_audio_transcription": transcription,
        "turn_detection": turns,
        "include": st.lists(st.text(max_size=5), max_size=2),
    },
)
realtime_texts = texts(
    messages(
        ["session.update", "transcription_session.update", "input_audio_buffer.append",
         "input_audio_buffer.commit", "input_audio_buffer.clear", "response.create"],
        {"audio": audio_values, "session": session_bodies, "event_id": st.text(max_size=10)},
    )
)  # fmt: skip


def check_realtime(out: Outcome, abort_ok: bool) -> None:
    if out.close_code is None and abort_ok:
        return
    # session.created first; a close by the WebSocket library (a non-UTF-8 frame) may beat it
    assert out.received or out.close_code in PROTOCOL_CLOSES | {1003}, out.close_code
    if out.received:
        assert out.received[0]["type"] in ("session.created", "error"), out.received[0]
    errors = []
    for m in out.received:
        assert isinstance(m.get("type"), str) and isinstance(m.get("event_id"), str), m
        if m["type"] == "error":
            err = m["error"]
            assert err["type"] == "invalid_request_error", m
            assert isinstance(err["code"], str) and isinstance(err["message"], str), m
            errors.append(m)
    # OpenAI's errors do not end the session (the client closes it); the uplink's limits do
    check_close(out, errors, True, abort_ok)


def test_hostile_realtime_clients(fuzz_stack: FuzzStack) -> None:
    @FUZZ
    @given(
        params=query(["intent", "model"]).map(lambda q: "intent=transcription&" + q)
        | query(["intent"]),  # fmt: skip
        frames=st.lists(realtime_texts | binary, max_size=6),
        end=st.sampled_from(['{"type": "input_audio_buffer.commit"}', None]),
        subprotocols=st.sampled_from(
            [None, ["realtime"], ["realtime", "openai-insecure-api-key.x"]]
        ),  # fmt: skip
    )
    def prop(
        params: str, frames: list[tuple[str, Any]], end: str | None, subprotocols: list[str] | None
    ) -> None:
        url = f"{fuzz_stack.ws}/v1/realtime?{params}"
        out = converse(url, frames, end, subprotocols, then_close=True)
        check_realtime(out, may_abort(frames, end))

    run_property(fuzz_stack, prop)
