"""Languages without a model: the detection rule, units of scripts without spaces (stable
prefixes, captions, character error rate), the translation parameters and the translation's
place in finals and in OpenAI-shaped responses (pure)."""

from __future__ import annotations

import json

import pytest

from gateway.agreement import LocalAgreement
from gateway.context import final_message
from gateway.native_protocol import NativeOptions, parse_options
from gateway.protocol import ProtocolError, translation_task
from gateway.transcriptions import render
from shared.formats import caption_text, cues, to_srt, to_vtt
from shared.schemas import Transcript, Translation, Word, decode, encode
from shared.text import is_unspaced, units
from whisper_streaming.evaluation import error_rate
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
        parse_options({"translate": value}, NativeOptions())
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
