"""The end-of-turn rule (workers/turns.py) as a pure function, and driven by the segmenter on
synthetic speech probabilities, as the VAD worker drives it (workers/vad_jobs.py)."""

from __future__ import annotations

import pytest

from tests.unit.test_segmenter import ScriptedVad, W, ramp_audio
from workers.segmenter import Segment, Segmenter, SegmenterConfig
from workers.turns import TurnConfig, end_of_turn, looks_finished, turn_pause_ms

SMART = TurnConfig(smart=True, endpoint_ms=500, complete_ms=250, short_ms=200, short_s=1.5)
FIXED = TurnConfig(smart=False, endpoint_ms=500)


@pytest.mark.parametrize(
    "text",
    ["Yes.", " No!", "Is that right?", 'He said "go."', "I do.", "Thank you.", "Not yet."],
)
def test_finished_texts(text: str) -> None:
    assert looks_finished(text)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "and the", "I went to the", "and the.", "Because of.", "He said, and", "So I",
     "we went to", "...", "owing to our...", "and then…"],
)  # fmt: skip
def test_unfinished_texts(text: str) -> None:
    assert not looks_finished(text)


def test_short_and_long_utterances_have_their_own_pauses() -> None:
    assert turn_pause_ms("Yes.", 0.6, SMART) == 200
    assert turn_pause_ms("It was a long way home.", 4.0, SMART) == 250
    assert turn_pause_ms("and the", 0.6, SMART) == 500
    assert turn_pause_ms("It was a long way", 4.0, SMART) == 500
    tuned = TurnConfig()  # the defaults (docs/vad.md): short utterances wait longer
    assert turn_pause_ms("Yes.", 0.6, tuned) == 450 < tuned.endpoint_ms
    assert turn_pause_ms("It was a long way home.", 4.0, tuned) == 200
    assert turn_pause_ms("owing to the mechanism of our...", 4.0, tuned) == 500


def test_never_later_than_the_endpoint() -> None:
    cfg = TurnConfig(smart=True, endpoint_ms=150, complete_ms=250, short_ms=200)
    assert turn_pause_ms("Yes.", 0.5, cfg) == 150
    assert cfg.earliest_ms == 150


def test_fixed_endpointing_ignores_the_text() -> None:
    for text in ("Yes.", "and the", ""):
        assert turn_pause_ms(text, 0.5, FIXED) == 500
        assert not end_of_turn(text, 499, 0.5, FIXED)
        assert end_of_turn(text, 500, 0.5, FIXED)
    assert FIXED.earliest_ms == 500


SEG = SegmenterConfig(min_silence_ms=500, speech_pad_ms=64, speech_pad_end_ms=96, tentative=True)


def drive(
    speech_windows: int, text: str, turns: TurnConfig, cfg: SegmenterConfig = SEG
) -> tuple[float, Segment]:
    """Speech then silence, one window at a time; after each window apply the rule to the live
    tentative with ``text`` as its speculative transcript, the way the VAD worker does. Returns
    the pause (ms) at which the utterance closed and its segment."""
    probs = [0.0] * 5 + [0.9] * speech_windows + [0.02] * 40
    seg = Segmenter(ScriptedVad(probs), cfg)
    audio = ramp_audio(len(probs))
    for i in range(len(probs)):
        pause = seg.pause_ms
        out = [e for e in seg.feed(audio[i * W : (i + 1) * W]) if isinstance(e, Segment)]
        if not out and seg.live_tentative is not None:
            pause = seg.pause_ms
            if pause >= turns.earliest_ms and end_of_turn(text, pause, seg.speech_s, turns):
                out = [e for e in seg.end_turn("turn") if isinstance(e, Segment)]
        if out:
            return (pause + W / 16 if out[0].reason == "silence" else pause), out[0]
    raise AssertionError("the utterance never closed")


def test_commits_yes_early_on_synthetic_speech() -> None:
    pause, seg = drive(20, "Yes.", SMART)  # 0.64 s of speech
    assert seg.reason == "turn" and seg.tentative_rev == 1
    assert 200 <= pause < 250
    pause, seg = drive(20, "Yes.", TurnConfig())  # the defaults: still before the endpoint
    assert seg.reason == "turn" and 450 <= pause < 500


def test_long_finished_sentence_waits_a_little_longer() -> None:
    pause, seg = drive(100, "It was a long way home.", SMART)  # 3.2 s
    assert seg.reason == "turn" and 250 <= pause < 300


def test_waits_for_the_endpoint_on_an_unfinished_text() -> None:
    pause, seg = drive(20, "and the", SMART)
    assert seg.reason == "silence" and pause >= 500


@pytest.mark.parametrize("endpoint", [300, 500])
def test_honours_a_fixed_endpointing(endpoint: int) -> None:
    cfg = SegmenterConfig(
        min_silence_ms=endpoint, speech_pad_ms=64, speech_pad_end_ms=96, tentative=True
    )
    pause, seg = drive(20, "Yes.", TurnConfig(smart=False, endpoint_ms=endpoint), cfg)
    assert seg.reason == "silence" and endpoint <= pause < endpoint + 40
