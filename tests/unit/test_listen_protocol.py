"""The pure parts of /v1/listen's Deepgram protocol: query parameters, client messages, the
shapes of Results / Metadata / Error and the pre-recorded response, the close codes; and the
Python clients' reading of them (whisper_streaming.listen.flatten)."""

from __future__ import annotations

import json
import uuid

import pytest

from gateway import native_protocol as dg
from gateway.app import _ttl_seconds
from gateway.auth import Authenticator, credential_from
from gateway.protocol import ProtocolError
from shared.schemas import Transcript, Word
from shared.settings import Settings
from whisper_streaming.listen import flatten

SID = uuid.uuid4().hex


def transcript(**kw: object) -> Transcript:
    base: dict[str, object] = {
        "session_id": SID, "segment": 2, "start": 1.0, "end": 2.5, "text": " Hello, World!",
        "words": [Word(word=" Hello,", start=1.0, end=1.4, probability=0.9, speaker="S1"),
                  Word(word=" World!", start=1.5, end=2.4, probability=0.7, speaker="S1")],
        "language": "en", "language_probability": 0.99, "speaker": "S1",
    }  # fmt: skip
    return Transcript(**(base | kw))  # type: ignore[arg-type]


def test_query_parameters_map_onto_the_session() -> None:
    o = dg.parse_options(
        {"model": "nova-3", "language": "en-US", "interim_results": "true",
         "endpointing": "300", "utterance_end_ms": "1000", "vad_events": "True",
         "keyterm": ["Kennedy", " Jupiter "], "smart_format": "true", "punctuate": "false",
         "diarize_model": "latest", "callback": "https://x", "tag": "a"}  # accepted, ignored
    )  # fmt: skip
    assert (o.model, o.language, o.interim_results, o.endpointing) == ("nova-3", "en", True, 300)
    assert o.utterance_end_ms == 1000 and o.vad_events and o.diarize
    assert o.keyterms == ("Kennedy", "Jupiter") and o.punctuate is False and o.smart_format
    assert dg.parse_options({"language": "multi"}).language is None
    assert dg.parse_options({"language": "de", "detect_language": "true"}).language is None
    assert dg.parse_options({"keyterm": "one"}).keyterms == ("one",)
    # Deepgram's default endpointing (10 ms) is raised to the server's minimum; false = default
    assert dg.parse_options({"endpointing": "10"}, min_endpointing=100).endpointing == 100
    assert dg.parse_options({"endpointing": "false"}).endpointing is None
    assert dg.parse_options({}).interim_results is False  # Deepgram's default


@pytest.mark.parametrize(
    ("params", "code", "text"),
    [
        ({"encoding": "speex"}, "unsupported_encoding", "not supported by this server yet"),
        ({"encoding": "flac"}, "unsupported_encoding", "mulaw"),
        ({"encoding": "wav49"}, "invalid_parameter", "not an encoding"),
        ({"channels": "2"}, "unsupported_encoding", "mono"),
        ({"keyterm": ["x"] * 101}, "invalid_parameter", "limit of 100"),
        ({"keyterm": ["y" * 501]}, "invalid_parameter", "limit of 500"),
        ({"language": "klingon"}, "invalid_parameter", "language"),
        ({"utterance_end_ms": "soon"}, "invalid_parameter", "integer"),
    ],
)
def test_bad_query_parameters(params: dict[str, object], code: str, text: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        dg.parse_options(params)
    assert exc.value.code == code and text in exc.value.message


def test_client_messages() -> None:
    assert isinstance(dg.parse_frame('{"type": "KeepAlive"}'), dg.KeepAlive)
    assert isinstance(dg.parse_frame('{"type": "Finalize"}'), dg.Finalize)
    assert isinstance(dg.parse_frame('{"type": "CloseStream"}'), dg.CloseStream)
    assert dg.parse_frame('{"type": "Configure", "keyterms": ["a"]}') == dg.Configure(("a",))
    assert dg.parse_frame('{"type": "Configure", "features": {}}') == dg.Configure(None)
    for text, code in [("{", "invalid_json"), ("[]", "invalid_message"),
                       ('{"type": "eof"}', "unsupported_message")]:  # fmt: skip
        with pytest.raises(ProtocolError) as exc:
            dg.parse_frame(text)
        assert exc.value.code == code
        frame = dg.error(exc.value, text)
        assert frame["type"] == "Error" and frame["variant"] == "SchemaError"
        assert frame["message"] == text and dg.close_for(exc.value) == (1008, f"DATA-0000 {code}")


def test_close_codes() -> None:
    assert dg.close_for(ProtocolError("frame_too_large", "x", 1009)) == (1009, "DATA-0000 frame_too_large")  # fmt: skip
    assert dg.close_for(ProtocolError("overloaded", "x", 1013)) == (1013, "overloaded")
    assert dg.close_for(ProtocolError("rate_limited", "x", 1008)) == (1008, "rate_limited")


def test_results_are_deepgrams_with_our_extensions() -> None:
    opts = dg.ListenOptions()
    t = transcript(from_finalize=True)
    msg = dg.results(t, text=t.text, is_final=True, options=opts, model="tiny.en")
    assert msg["type"] == "Results" and msg["channel_index"] == [0, 1]
    assert (msg["start"], msg["duration"], msg["is_final"]) == (1.0, 1.5, True)
    assert msg["speech_final"] and msg["from_finalize"]
    alt = msg["channel"]["alternatives"][0]
    assert alt["transcript"] == "Hello, World!" and alt["confidence"] == 0.8
    assert [w["word"] for w in alt["words"]] == ["hello", "world"]
    assert [w["punctuated_word"] for w in alt["words"]] == ["Hello,", "World!"]
    assert {w["speaker"] for w in alt["words"]} == {1} and msg["speaker"] == 1
    assert alt["words"][0]["language"] == "en"
    assert msg["metadata"]["request_id"] == str(uuid.UUID(hex=SID))
    assert (msg["session_id"], msg["segment"], msg["end"]) == (SID, 2, 2.5)
    partial = dg.results(
        t, text="Hello, Wor", is_final=False, options=dg.ListenOptions(punctuate=False),
        model="tiny.en", stable_text="Hello,",
    )  # fmt: skip
    assert partial["is_final"] is False and partial["speech_final"] is False
    assert not partial["from_finalize"] and "processing_time" not in partial
    assert partial["channel"]["alternatives"][0]["transcript"] == "hello wor"
    assert partial["stable_transcript"] == "hello"
    flat = flatten(json.loads(json.dumps(msg)))
    assert flat["type"] == "final" and flat["text"] == "Hello, World!" and flat["segment"] == 2
    assert flat["end"] == 2.5 and flat["from_finalize"] is True
    assert flatten(partial)["type"] == "partial" and flatten(partial)["stable_text"] == "hello"


def test_metadata_events_and_the_prerecorded_response() -> None:
    meta = dg.metadata(SID, model="m", sha256="ab", created="c", duration=11.0, segments=3)
    assert meta["type"] == "Metadata" and meta["channels"] == 1 and meta["duration"] == 11.0
    assert flatten(meta) == {"type": "closed", "segments": 3, "audio_seconds": 11.0, "session_id": SID}  # fmt: skip
    assert flatten(dg.speech_started(SID, 4, 1.25))["segment"] == 4
    assert dg.utterance_end(SID, 4, 2.0)["last_word_end"] == 2.0
    finals = [transcript(), transcript(segment=3, text=" ", words=[]), transcript(segment=4)]
    body = dg.prerecorded(
        finals, session_id=SID, options=dg.ListenOptions(), model="m", sha256="ab",
        created="c", duration=3.0, utterances=True, paragraphs=True,
    )  # fmt: skip
    channel = body["results"]["channels"][0]
    alt = channel["alternatives"][0]
    assert alt["transcript"] == "Hello, World! Hello, World!" and len(alt["words"]) == 4
    assert len(alt["paragraphs"]["paragraphs"]) == 2 and channel["detected_language"] == "en"
    assert [u["speaker"] for u in body["results"]["utterances"]] == [1, 1]
    assert body["metadata"]["request_id"] == str(uuid.UUID(hex=SID))


def test_credentials_and_grants() -> None:
    assert credential_from({"authorization": "Token k1"}, {}) == "k1"
    assert credential_from({"authorization": "bearer t1"}, {"token": "k2"}) == "t1"
    assert credential_from({}, {}, ["token", "k3"]) == "k3"
    assert credential_from({}, {"token": "k4"}, ["chat"]) == "k4"
    auth = Authenticator(Settings(api_keys="alice:secret", auth_token_secret="s"))
    token, ttl = auth.mint("alice", ttl=30)
    assert ttl == 30 and auth.check_token(token) == "alice"
    assert auth.mint("alice", ttl=10**6)[1] == auth.token_ttl  # never longer than the setting
    assert _ttl_seconds(b"") is None and _ttl_seconds(b'{"ttl_seconds": 60}') == 60
    for bad in (b"{", b'{"ttl_seconds": 0}', b'{"ttl_seconds": 1.5}', b'{"ttl_seconds": true}'):
        with pytest.raises(ValueError):
            _ttl_seconds(bad)
