"""What ASR workers announce and which sessions the gateway refuses (shared/capabilities.py),
and the legacy final's fields for both predecessor versions (pure: no Redis, no model)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gateway.legacy import legacy_final
from shared.capabilities import Pool, Route, capabilities_of, parse_pools, refusal, route
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
MULTI_2 = capabilities_of(model(True), "asr-2", "base")
GPU = capabilities_of(model(True), "asr-3", "large-v3-turbo", pool="gpu")
DISTIL = capabilities_of(model(True), "asr-4", "distil-large-v3", restrict=["en"])


def test_an_english_only_model_announces_english_transcription() -> None:
    assert ENGLISH.languages == ["en"] and not ENGLISH.detect and ENGLISH.tasks == ["transcribe"]
    assert ENGLISH.worker == "asr-0" and ENGLISH.model == "tiny.en"


def test_a_multilingual_model_announces_every_language_detection_and_translation() -> None:
    assert set(MULTI.languages) == set(LANGUAGES) and MULTI.detect
    assert MULTI.tasks == ["transcribe", "translate"]


def test_the_pool_is_derived_from_what_the_worker_serves_unless_named() -> None:
    assert (ENGLISH.pool, MULTI.pool, GPU.pool) == ("en", "multi", "gpu")
    # distil-large-v3: multilingual in form, announced (and pooled) as English only
    assert DISTIL.pool == "en" and DISTIL.languages == ["en"] and not DISTIL.detect
    assert DISTIL.tasks == ["transcribe"]
    with pytest.raises(ValueError, match="cannot do de"):
        capabilities_of(model(False), "asr-5", "tiny.en", restrict=["en", "de"])


def test_announcement_round_trips_and_refuses_garbage() -> None:
    assert decode_capabilities(encode_capabilities(ENGLISH)) == ENGLISH
    with pytest.raises(SchemaError):
        decode_capabilities(b"\x81\xa1x\x01")
    with pytest.raises(SchemaError):
        decode_capabilities(encode_capabilities(WorkerCapabilities(v=9, worker="w", languages=[])))


def test_a_pool_continues_where_a_live_worker_of_it_announces_continuation_decodes() -> None:
    cpu = capabilities_of(model(False), "asr-6", "tiny.en")
    cuda = capabilities_of(model(False), "asr-7", "tiny.en")
    cuda.continuation = True
    assert decode_capabilities(encode_capabilities(cuda)).continuation
    assert not Pool(live=1, announced=[cpu]).continues("en")  # a CPU pool: decoded alone
    assert Pool(live=2, announced=[cpu, cuda]).continues("en")
    assert not Pool(live=2, announced=[cpu, cuda]).continues("multi")  # another pool's worker
    assert not Pool().continues("en")  # nobody live: nothing is known to decode them


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


def live(*announced: WorkerCapabilities) -> Pool:
    return Pool(live=len(announced), announced=list(announced))


def test_english_goes_to_an_english_pool_and_every_other_language_to_a_multilingual_one() -> None:
    both = live(MULTI, ENGLISH, MULTI_2)
    assert route("en", "transcribe", both) == Route("en")
    for language in ("de", "zh", "ja", "it"):
        assert route(language, "transcribe", both) == Route("multi")
    assert route(None, "transcribe", both) == Route("multi")  # detection: multilingual
    # with no English pool live, English goes to a multilingual one
    assert route("en", "transcribe", live(MULTI)) == Route("multi")


def test_among_several_pools_the_one_with_more_workers_wins_then_the_name() -> None:
    assert route("de", "transcribe", live(GPU, MULTI, MULTI_2)) == Route("multi")
    assert route("de", "transcribe", live(GPU, MULTI)) == Route("gpu")  # one each: by name
    assert route("en", "transcribe", live(GPU, DISTIL)) == Route("en")  # English-only first


def test_detection_with_only_english_pools_live_is_served_as_english() -> None:
    """The first version's clients send ``language: null`` (their "multilingual" option)."""
    assert route(None, "transcribe", live(ENGLISH)) == Route("en", as_english=True)
    # ... even where the deployment also runs a multilingual pool that is at zero now
    known = parse_pools("en=en multi=*")
    assert route(None, "transcribe", live(ENGLISH), known) == Route("en", as_english=True)


def test_a_pool_of_the_deployment_with_no_worker_takes_what_no_live_pool_serves() -> None:
    """ASR_POOLS: its jobs wait while KEDA scales it from zero, instead of a refusal that would
    keep it at zero for ever."""
    known = parse_pools("en=en multi=*")
    assert route("de", "transcribe", live(ENGLISH), known) == Route("multi", live=False)
    assert route("en", "transcribe", live(MULTI), known) == Route("multi")  # live first
    assert route("en", "transcribe", Pool(), known) == Route("en", live=False)
    assert route(None, "transcribe", Pool(), known) == Route("multi", live=False)
    # a deployment of English only refuses German even with no worker live
    why = refusal("de", "transcribe", Pool(), parse_pools("en=en"))
    assert why is not None and why.endswith("they serve: en")


def test_with_nothing_to_go_by_english_and_detection_go_to_en_the_rest_to_multi() -> None:
    assert route("en", "transcribe", Pool()) == Route("en", live=False)
    assert route(None, "transcribe", Pool()) == Route("en", live=False)
    assert route("de", "transcribe", Pool()) == Route("multi", live=False)
    # a live worker has not announced (an older version): German is not refused
    assert route("de", "transcribe", Pool(live=2, announced=[ENGLISH])) == Route("multi", False)


def test_a_worker_of_a_version_before_pools_is_not_a_pool() -> None:
    old = WorkerCapabilities(worker="old", languages=["en"])  # no pool in its announcement
    assert live(old).pools == {} and route("en", "transcribe", live(old)) == Route("en", live=False)


def test_asr_pools_is_parsed_and_checked() -> None:
    en, multi = parse_pools(" en=en   multi=* ")
    assert (en.name, en.languages, en.detect, en.tasks) == (
        "en", frozenset({"en"}), False, frozenset({"transcribe"}),
    )  # fmt: skip
    assert multi.detect and multi.languages == frozenset(LANGUAGES) and multi.workers == 0
    assert parse_pools("") == ()
    for bad in ("en", "en=", "=en", "en=xx", "en=en en=de"):
        with pytest.raises(ValueError, match="ASR_POOLS"):
            parse_pools(bad)


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
