"""Property-based tests of everything that parses untrusted input: whatever comes in, the result
is a valid value or the documented error — never another exception."""

from __future__ import annotations

import json

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.native_protocol import Configure, parse_frame, parse_options
from gateway.ordering import Coalescer, ReorderBuffer
from gateway.protocol import ClientConfig, Eof, ProtocolError, parse_text_frame
from shared import schemas
from shared.audio import PcmCarry

# the machine is small and shared: generating data may be slow, which is not a failure of ours
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
config_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["config", "eof", "finalize", "keepalive", "x"]) | json_values,
        "data": st.fixed_dictionaries(
            {},
            optional={
                "sampleRate": json_values,
                "channels": json_values,
                "language": json_values | st.sampled_from(["english", "en", "klingon"]),
                "processing_args": json_values,
                "processing_strategy": json_values,
            },
        )
        | json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW_OK)
@given(st.one_of(st.text(max_size=200), config_like.map(json.dumps), json_values.map(json.dumps)))
def test_legacy_text_frames(text: str) -> None:
    try:
        result = parse_text_frame(text)
    except ProtocolError as exc:
        assert exc.close_code in (1003, 1007) and exc.code and exc.message
        return
    assert isinstance(result, ClientConfig | Eof)
    if isinstance(result, ClientConfig):
        assert 8000 <= result.sample_rate <= 192_000 and 1 <= result.channels <= 8


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW_OK)
@given(st.one_of(st.text(max_size=200), config_like.map(json.dumps), json_values.map(json.dumps)))
def test_listen_control_frames(text: str) -> None:
    try:
        msg = parse_frame(text)
    except ProtocolError as exc:
        assert exc.close_code in (1003, 1007)
        return
    if isinstance(msg, Configure) and msg.keyterms is not None:
        assert len(msg.keyterms) <= 100 and all(len(t) <= 100 for t in msg.keyterms)


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW_OK)
@given(
    st.dictionaries(
        st.sampled_from(
            ["language", "sample_rate", "encoding", "interim_results", "vad_events", "endpointing",
             "token", "session_id", "last_segment", "other", "channels", "utterance_end_ms",
             "keyterm", "detect_language", "punctuate", "model"]
        ),
        st.text(max_size=40),
    )
)  # fmt: skip
def test_query_parameters(params: dict[str, str]) -> None:
    try:
        opts = parse_options(params)
    except ProtocolError as exc:
        assert exc.close_code in (1003, 1007)
        return
    assert opts.encoding == "linear16" and opts.last_segment >= -1 and opts.channels == 1
    assert opts.endpointing is None or 100 <= opts.endpointing <= 10_000


@settings(max_examples=500, deadline=None, suppress_health_check=SLOW_OK)
@given(
    st.binary(max_size=300)
    | st.dictionaries(st.text(max_size=12), json_values, max_size=8).map(
        lambda d: msgpack.packb(d, use_bin_type=True)
    )
    | st.builds(
        lambda t, d: msgpack.packb({"type": t, "v": 1, **d}, use_bin_type=True),
        st.sampled_from(
            ["audio", "audio_end", "asr_job", "transcript", "session_start", "vad_event"]
        ),
        st.dictionaries(
            st.sampled_from(
                ["session_id", "seq", "pcm", "segment", "start", "end", "text", "words"]
            ),
            json_values | st.binary(max_size=10),
            max_size=8,
        ),
    )
)
def test_stream_message_decoder(data: bytes) -> None:
    try:
        msg = schemas.decode(data)
    except schemas.SchemaError:
        return
    assert schemas.decode(schemas.encode(msg)) == msg


@settings(suppress_health_check=SLOW_OK)
@given(st.lists(st.binary(max_size=50), max_size=50))
def test_binary_frames_stay_sample_aligned(frames: list[bytes]) -> None:
    carry = PcmCarry()
    out = b"".join(carry.push(f) for f in frames)
    assert len(out) % 2 == 0
    assert out + b"\x00" * 0 == b"".join(frames)[: len(out)]
    assert carry.pending == len(b"".join(frames)) % 2


@settings(suppress_health_check=SLOW_OK)
@given(st.lists(st.binary(max_size=400), max_size=60), st.integers(10, 2000))
def test_coalescer_loses_nothing(frames: list[bytes], target: int) -> None:
    c = Coalescer(target_bytes=target, max_wait_s=0.1)
    out = [c.push(f, now=i * 0.01) for i, f in enumerate(frames)]
    tail = c.take()
    joined = b"".join(x for x in out if x) + (tail or b"")
    assert joined == b"".join(frames)


@settings(suppress_health_check=SLOW_OK)
@given(st.permutations(list(range(30))), st.lists(st.integers(0, 29), max_size=20))
def test_reorder_releases_each_segment_once_in_order(order: list[int], dupes: list[int]) -> None:
    buf: ReorderBuffer[int] = ReorderBuffer()
    released: list[int] = []
    for seg in order + dupes:
        released += buf.push(seg, seg)
    assert released == list(range(30))
