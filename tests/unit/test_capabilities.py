"""What ASR workers announce and which sessions the gateway refuses (shared/capabilities.py),
and the legacy final's fields for both predecessor versions (pure: no Redis, no model)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gateway.legacy import legacy_final
from shared.capabilities import Pool, capabilities_of, refusal
from shared.languages import LANGUAGES
from shared.schemas import (
    SchemaError,
    Transcript,
    Word,
    WorkerCapabilities,
    decode_capabilities,
    encode_capabilities,
)


def model(multilingual: bool) -> SimpleNamespace:
    """The part of faster-whisper's WhisperModel looked at: ``model.model.is_multilingual``."""
    return SimpleNamespace(model=SimpleNamespace(is_multilingual=multilingual))


ENGLISH = capabilities_of(model(False), "asr-0", "tiny.en")
MULTI = capabilities_of(model(True), "asr-1", "small")


def test_an_english_only_model_announces_english_transcription() -> None:
    assert ENGLISH.languages == ["en"] and not ENGLISH.detect and ENGLISH.tasks == ["transcribe"]
    assert ENGLISH.worker == "asr-0" and ENGLISH.model == "tiny.en"


def test_a_multilingual_model_announces_every_language_detection_and_translation() -> None:
    assert set(MULTI.languages) == set(LANGUAGES) and MULTI.detect
    assert MULTI.tasks == ["transcribe", "translate"]


def test_announcement_round_trips_and_refuses_garbage() -> None:
    assert decode_capabilities(encode_capabilities(ENGLISH)) == ENGLISH
    with pytest.raises(SchemaError):
        decode_capabilities(b"\x81\xa1x\x01")
    with pytest.raises(SchemaError):
        decode_capabilities(encode_capabilities(WorkerCapabilities(v=9, worker="w", languages=[])))


@pytest.mark.parametrize("language", ["de", "zh", "it"])
def test_a_language_no_live_worker_serves_is_refused_naming_what_is_served(language) -> None:
    why = refusal(language, "transcribe", Pool(live=2, announced=[ENGLISH, ENGLISH]))
    assert why is not None and repr(language) in why and why.endswith("they serve: en")


def test_what_the_live_workers_serve_is_not_refused() -> None:
    english = Pool(live=1, announced=[ENGLISH])
    assert refusal("en", "transcribe", english) is None
    # detection with English-only workers: English (the first version's clients send null)
    assert refusal(None, "transcribe", english) is None
    mixed = Pool(live=2, announced=[ENGLISH, MULTI])
    assert refusal("de", "transcribe", mixed) is None and refusal("zh", "transcribe", mixed) is None


def test_nothing_is_refused_while_it_cannot_be_known() -> None:
    """No live worker (the pool may scale from zero, jobs wait), or a live worker that has not
    announced (an older version during a rolling upgrade)."""
    assert refusal("de", "transcribe", Pool()) is None
    assert refusal("de", "transcribe", Pool(live=2, announced=[ENGLISH])) is None


def test_translation_is_served_by_a_multilingual_worker_and_refused_by_english_ones() -> None:
    for language in ("de", None):
        assert refusal(language, "translate", Pool(live=1, announced=[MULTI])) is None
        assert refusal(language, "translate", Pool(live=2, announced=[ENGLISH, MULTI])) is None
        why = refusal(language, "translate", Pool(live=1, announced=[ENGLISH]))
        assert why is not None and "translation" in why and why.endswith("serve: en")
    assert refusal("de", "translate", Pool()) is None  # no live worker: the job waits
    assert refusal("de", "summarize", Pool(live=1, announced=[MULTI])) is not None


def test_a_legacy_final_carries_both_versions_fields() -> None:
    t = Transcript(
        session_id="s", segment=3, start=1.2345, end=4.5678, text="Hello there.",
        words=[Word(word=" Hello", start=1.3, end=1.7, probability=0.93)],
        language="en", language_probability=1.0, processing_time=0.25, final=True,
    )  # fmt: skip
    msg = legacy_final(t)
    assert msg["text"] == msg["Transcript"] == "Hello there."
    assert (msg["StartTime"], msg["EndTime"]) == (1234, 4568)
    assert isinstance(msg["StartTime"], int) and isinstance(msg["EndTime"], int)
    assert msg["words"] == [{"word": " Hello", "start": 1.3, "end": 1.7, "probability": 0.93}]
    assert (msg["language"], msg["language_probability"], msg["processing_time"]) == (
        "en",
        1.0,
        0.25,
    )
    assert "None" not in {str(v) for v in msg.values()}
