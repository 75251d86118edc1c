"""Languages without a model: the detection rule, units of scripts without spaces (stable
prefixes, captions, character error rate), the translation parameters and the translation's
place in finals and in OpenAI-shaped responses (pure)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from gateway.agreement import LocalAgreement
from gateway.context import final_message
from gateway.native_protocol import ListenOptions, parse_options
from gateway.protocol import ProtocolError, translation_task
from gateway.transcriptions import render
from shared.formats import caption_text, cues, to_srt, to_vtt
from shared.schemas import AsrJob, Transcript, Translation, Word, decode, encode
from shared.text import is_unspaced, units
from whisper_streaming.evaluation import error_rate
from workers.asr import DecodeOptions, Transcriber
from workers.detection import choose_language

# -- detection: the session's language is sticky ---------------------------------------------


def test_the_first_utterance_takes_the_most_probable_language() -> None:
    assert choose_language([("de", 0.55), ("en", 0.3)], None) == ("de", 0.55)


def test_a_doubtful_utterance_keeps_the_sessions_language() -> None:
    """A short "OK" in a German session detected as English with 0.5: still German, with
    German's own probability for this utterance."""
    assert choose_language([("en", 0.5), ("de", 0.4), ("nl", 0.1)], "de") == ("de", 0.4)
    # the session's language is not even among the candidates: kept, with probability 0
    assert choose_language([("en", 0.6), ("nl", 0.4)], "de") == ("de", 0.0)


def test_a_confident_utterance_switches_the_language() -> None:
    assert choose_language([("en", 0.97), ("de", 0.02)], "de") == ("en", 0.97)
    assert choose_language([("en", 0.75)], "de", switch_probability=0.8) == ("de", 0.0)
    assert choose_language([("en", 0.75)], "de", switch_probability=0.7) == ("en", 0.75)
    assert choose_language([("de", 0.3)], "de") == ("de", 0.3)  # same language: as it is


def test_no_probabilities_keep_the_session_or_english() -> None:
    assert choose_language([], "fr") == ("fr", 0.0) and choose_language([], None) == ("en", 0.0)


# -- scripts without spaces ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["And so, my fellow Americans.", "广州市房地产中介协会分析", "東京で iPhone を買った。", ""],
)
def test_units_give_the_text_back(text: str) -> None:
    assert "".join(units(text)) == text


def test_unspaced_scripts_are_split_by_characters() -> None:
    assert units("广州市") == ["广", "州", "市"]
    assert units("東京で iPhone を") == ["東", "京", "で", " iPhone", " を"]
    assert units("so, my friend") == ["so,", " my", " friend"]
    assert is_unspaced("真っ昼間なのに") and is_unspaced("สวัสดีครับ")
    assert not is_unspaced("Hello 世界 and more words") and not is_unspaced("그는 이리저리")


def test_chinese_partials_get_a_stable_prefix() -> None:
    """Whitespace splitting saw one word per hypothesis (never agreed until it was whole)."""
    la = LocalAgreement()
    assert la.update("广州市房") == ""
    assert la.update("广州市房地产") == "广州市房"
    assert la.update("广州市房地产中介协会") == "广州市房地产"
    assert la.display("广州市房地長") == "广州市房地产"  # the promised part never flickers
    assert la.display("广州市房地产中介协会分析") == "广州市房地产中介协会分析"


def test_spaced_partials_agree_by_words_as_before() -> None:
    la = LocalAgreement()
    la.update("And so my fellow")
    assert la.update("And so my fellow Americans ask") == "And so my fellow"
    assert la.display("and so my fellow americans") == "And so my fellow americans"


def test_chinese_captions_wrap_by_characters_and_split_at_sentence_ends() -> None:
    text = "真っ昼間なのにキャンプの外れの電柱に電球がともっていた"
    lines = caption_text(text).split("\n")
    assert "".join(lines) == text and len(lines) == 2 and all(len(line) <= 16 for line in lines)
    assert caption_text("A long English caption " * 3) == ("A long English caption " * 3).strip()
    words = [
        {"word": c, "start": i * 0.5, "end": i * 0.5 + 0.4, "probability": 0.9}
        for i, c in enumerate("你好。今天天气很好。我们去公园吧")
    ]
    final = {"start": 0.0, "end": 8.0, "text": "你好。今天天气很好。我们去公园吧", "words": words}
    pieces = cues([final], max_s=7.0)
    assert [p["text"] for p in pieces] == ["你好。", "今天天气很好。", "我们去公园吧"]
    assert "今天天气很好。" in to_srt([final]) and to_vtt([final]).startswith("WEBVTT")


def test_error_rate_is_by_characters_for_chinese_japanese_korean() -> None:
    ref = "广州市房地产中介协会分析"
    assert error_rate("zh", [(ref, "广州市房地产中介协会分析。")]).wer == 0.0
    assert error_rate("zh", [(ref, "广州市佛地产中介协会分析")]).errors == 1
    assert error_rate("ko", [("그는 이리저리", "그는이리저리")]).wer == 0.0
    assert error_rate("de", [("Der Raum wurde", "der raum wurden")]).errors == 1


# -- translation -----------------------------------------------------------------------------


def test_translation_targets() -> None:
    assert translation_task(None, "de", "translate") == "transcribe"
    assert translation_task("de", "de", "translate") == "transcribe"
    assert translation_task("en", "de", "translate") == "translate"
    assert translation_task("en", None, "translate") == "translate"
    with pytest.raises(ProtocolError) as err:
        translation_task("fr", "de", "translate")
    assert (err.value.code, err.value.close_code) == ("unsupported_translation_target", 1003)
    assert "English" in err.value.message


@pytest.mark.parametrize(
    ("value", "target"), [("en", "en"), ("english", "en"), ("false", None), ("", None)]
)
def test_native_translate_parameter(value: str, target: str | None) -> None:
    options = parse_options({"translate": value})
    assert options.translate == target
    assert options.public(500)["translate"] == target


@pytest.mark.parametrize(
    ("value", "code"), [("fr", "unsupported_translation_target"), ("elvish", "invalid_parameter")]
)
def test_native_translate_parameter_errors(value: str, code: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_options({"translate": value}, ListenOptions())
    assert err.value.code == code


def _final(segment: int, text: str, english: str | None) -> Transcript:
    return Transcript(
        session_id="s",
        segment=segment,
        start=segment * 2.0,
        end=segment * 2.0 + 1.5,
        text=text,
        words=[Word(word=" " + text, start=segment * 2.0, end=segment * 2.0 + 1.5, probability=1)],
        language="de",
        language_probability=0.99,
        task="translate" if english is not None else "transcribe",
        translation=None if english is None else Translation(language="en", text=english),
    )


def test_a_final_carries_its_translation_beside_the_text() -> None:
    t = _final(0, "Guten Morgen.", "Good morning.")
    assert decode(encode(t)) == t
    msg = final_message(t)
    assert msg["text"] == "Guten Morgen." and msg["language"] == "de"
    assert msg["translation"] == {"language": "en", "text": "Good morning."}
    assert "translation" not in final_message(_final(0, "Guten Morgen.", None))


def test_translations_render_like_openais() -> None:
    finals = [_final(0, "Guten Morgen.", "Good morning."), _final(1, "Danke.", "Thank you.")]
    body = json.loads(render("json", finals, duration=4.0, language=None, task="translate").body)
    assert body == {"text": "Good morning. Thank you."}
    verbose = json.loads(
        render("verbose_json", finals, duration=4.0, language=None, task="translate").body
    )
    assert verbose["task"] == "translate" and verbose["language"] == "english"
    assert [s["text"] for s in verbose["segments"]] == ["Good morning.", "Thank you."]
    srt = bytes(render("srt", finals, duration=4.0, language=None, task="translate").body)
    assert b"Good morning." in srt and b"Guten" not in srt
    plain = json.loads(render("verbose_json", finals, duration=4.0, language=None).body)
    assert plain["task"] == "transcribe" and plain["language"] == "german"


# -- the ASR core's one-encoder path (a fake multilingual model) ------------------------------


class _Features:
    nb_max_frames = 3000

    def __call__(self, audio: Any) -> np.ndarray:
        return np.zeros((80, len(audio) // 160 + 1), dtype=np.float32)


class FakeMultilingual:
    """What the shared-encoder path touches: features, one ``encode``, ``detect_language`` on its
    output; decoding itself (``Transcriber._generate``) is replaced per test."""

    def __init__(self, probabilities: list[tuple[str, float]]) -> None:
        self.feature_extractor = _Features()
        self.encodes = 0
        self.model = SimpleNamespace(
            is_multilingual=True,
            detect_language=lambda enc: [[(f"<|{c}|>", p) for c, p in probabilities]],
        )

    def encode(self, features: np.ndarray) -> str:
        self.encodes += 1
        return "encoder-output"

    def transcribe(self, audio: Any, **kwargs: Any) -> Any:
        raise AssertionError("stock transcribe must not run for detection or translation")


def _segment(text: str) -> SimpleNamespace:
    return SimpleNamespace(seek=0, text=text, words=[], start=0.0, end=1.0, compression_ratio=1.0,
                           no_speech_prob=0.0, avg_logprob=-0.1)  # fmt: skip


def _transcriber(
    probabilities: list[tuple[str, float]], monkeypatch: pytest.MonkeyPatch
) -> tuple[Transcriber, FakeMultilingual, list[tuple[str, str, Any]]]:
    model = FakeMultilingual(probabilities)
    decodes: list[tuple[str, str, Any]] = []

    def generate(self: Any, features: Any, enc: Any, language: str, task: str, *rest: Any) -> Any:
        decodes.append((language, task, enc))
        return [_segment(f" {task} in {language}")]

    monkeypatch.setattr(Transcriber, "_generate", generate)
    return Transcriber(model, DecodeOptions(beam_size=1)), model, decodes


def _job(task: str = "transcribe", final: bool = True, language: str | None = None) -> AsrJob:
    return AsrJob(session_id="s", segment=0, start=0.0, end=1.0, pcm=b"\0\0" * 16000,
                  task=task, final=final, language=language)  # fmt: skip


def test_detection_and_translation_share_one_encoder_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    t, model, decodes = _transcriber([("de", 0.95), ("en", 0.03)], monkeypatch)
    result = t.transcribe(_job("translate"))
    assert model.encodes == 1 and [d[:2] for d in decodes] == [
        ("de", "transcribe"),
        ("de", "translate"),
    ]
    assert all(enc == "encoder-output" for *_x, enc in decodes)
    assert (result.language, result.language_probability) == ("de", 0.95)
    assert result.text == "transcribe in de" and result.task == "translate"
    assert result.translation == Translation(language="en", text="translate in de")


def test_a_doubtful_utterance_is_transcribed_in_the_sessions_language(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t, _model, decodes = _transcriber([("en", 0.5), ("de", 0.45)], monkeypatch)
    result = t.transcribe(_job(), session_language="de")
    assert decodes == [("de", "transcribe", "encoder-output")]
    assert (result.language, result.language_probability, result.translation) == ("de", 0.45, None)


def test_english_and_partials_are_not_translated_again(monkeypatch: pytest.MonkeyPatch) -> None:
    t, _model, decodes = _transcriber([("en", 0.99)], monkeypatch)
    english = t.transcribe(_job("translate"))
    assert english.translation == Translation(language="en", text=english.text)
    partial = t.transcribe(_job("translate", final=False, language="de"))
    assert partial.translation is None and partial.language == "de"
    assert [d[1] for d in decodes] == ["transcribe", "transcribe"]
