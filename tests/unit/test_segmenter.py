"""The streaming segmenter, fed synthetic speech probabilities (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from workers.segmenter import (
    Partial,
    Segment,
    Segmenter,
    SegmenterConfig,
    SpeechStart,
    Tentative,
    TentativeVoid,
)

W = 512  # samples per window (32 ms at 16 kHz)


class ScriptedVad:
    """Returns the next probabilities of a script, one per window, as a stateful VAD would."""

    def __init__(self, probs: list[float]) -> None:
        self.probs = probs
        self.i = 0
        self.windows_seen = 0

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        n = len(windows)
        self.windows_seen += n
        out = [self.probs[self.i + k] if self.i + k < len(self.probs) else 0.0 for k in range(n)]
        self.i += n
        return np.array(out, dtype=np.float32)


def ramp_audio(n_windows: int) -> np.ndarray:
    """Audio whose sample values encode their own position, to check what a segment holds."""
    return (np.arange(n_windows * W, dtype=np.float32) % 1000) / 1000


def events(probs: list[float], cfg: SegmenterConfig, chunk: int = 1600, flush: bool = True):
    seg = Segmenter(ScriptedVad(probs), cfg)
    audio = ramp_audio(len(probs))
    out = []
    for i in range(0, len(audio), chunk):
        out += seg.feed(audio[i : i + chunk])
    if flush:
        out += seg.flush()
    return out, audio


def run(probs: list[float], cfg: SegmenterConfig, chunk: int = 1600, flush: bool = True):
    out, audio = events(probs, cfg, chunk, flush)
    return [e for e in out if isinstance(e, Segment)], audio


CFG = SegmenterConfig(min_silence_ms=320, speech_pad_ms=64, min_speech_ms=96, max_segment_s=10)


def test_utterance_closed_by_silence_with_padding() -> None:
    probs = [0.0] * 20 + [0.9] * 30 + [0.0] * 40
    segs, audio = run(probs, CFG, flush=False)
    assert len(segs) == 1
    s = segs[0]
    assert s.reason == "silence"
    pad = 64 * 16
    assert s.start == 20 * W - pad
    assert s.end == 50 * W + pad
    np.testing.assert_array_equal(s.audio, audio[s.start : s.end])


def test_no_segment_for_silence_and_short_blips() -> None:
    probs = [0.1] * 50 + [0.9] * 2 + [0.0] * 50  # 64 ms of "speech" < 96 ms minimum
    segs, _ = run(probs, CFG)
    assert segs == []


def test_hysteresis_keeps_an_utterance_through_uncertain_windows() -> None:
    # 0.4 is below threshold (0.5) but above the silence threshold (0.35): not silence
    probs = [0.9] * 10 + [0.4] * 30 + [0.9] * 10 + [0.0] * 40
    segs, _ = run(probs, CFG, flush=False)
    assert len(segs) == 1


def test_two_utterances_get_consecutive_indices_and_do_not_overlap() -> None:
    probs = [0.9] * 20 + [0.0] * 15 + [0.9] * 20 + [0.0] * 15
    segs, _ = run(probs, CFG, flush=False)
    assert [s.index for s in segs] == [0, 1]
    assert segs[0].end <= segs[1].start


def test_flush_closes_open_utterance_with_trailing_partial_window() -> None:
    probs = [0.0] * 5 + [0.9] * 20
    seg = Segmenter(ScriptedVad(probs), CFG)
    audio = ramp_audio(25)
    fed = seg.feed(np.concatenate([audio, audio[:100]]))
    assert not any(isinstance(e, Segment) for e in fed)
    out = seg.flush()
    assert len(out) == 1 and out[0].reason == "flush"
    assert out[0].end == 25 * W + 100


def test_finalize_closes_now_and_the_stream_goes_on() -> None:
    probs = [0.9] * 20 + [0.9] * 20 + [0.0] * 40
    seg = Segmenter(ScriptedVad(probs), CFG)
    audio = ramp_audio(80)
    first = [e for e in seg.feed(audio[: 20 * W]) if isinstance(e, Segment)]
    assert first == []
    closed = seg.finalize()
    assert len(closed) == 1 and closed[0].reason == "finalize" and closed[0].end == 20 * W
    assert seg.finalize() == []  # nothing open any more
    rest = [e for e in seg.feed(audio[20 * W :]) if isinstance(e, Segment)]
    assert len(rest) == 1 and rest[0].index == 1 and rest[0].start >= closed[0].end
    np.testing.assert_array_equal(rest[0].audio, audio[rest[0].start : rest[0].end])


def test_finalize_with_a_partial_window_pending_keeps_audio_aligned() -> None:
    probs = [0.9] * 40 + [0.0] * 30 + [0.9] * 30 + [0.0] * 30
    seg = Segmenter(ScriptedVad(probs), CFG)
    audio = ramp_audio(130)
    seg.feed(audio[: 20 * W + 200])
    closed = seg.finalize()
    assert closed[0].end == 20 * W + 200
    later = [e for e in seg.feed(audio[20 * W + 200 :]) if isinstance(e, Segment)]
    assert later and all(s.start >= closed[0].end for s in later)
    for s in later:
        np.testing.assert_array_equal(s.audio, audio[s.start : s.end])


def test_speech_start_events() -> None:
    probs = [0.0] * 10 + [0.9] * 20 + [0.0] * 20 + [0.9] * 20 + [0.0] * 20
    out, _ = events(probs, CFG, flush=False)
    starts = [e for e in out if isinstance(e, SpeechStart)]
    assert [(s.index, s.start) for s in starts] == [(0, 10 * W), (1, 50 * W)]


def test_partials_grow_with_the_utterance_and_stop_at_its_end() -> None:
    cfg = SegmenterConfig(
        min_silence_ms=320, speech_pad_ms=64, min_speech_ms=96, partial_first_ms=320,
        partial_interval_ms=640,
    )  # fmt: skip
    probs = [0.0] * 10 + [0.9] * 100 + [0.0] * 40
    out, audio = events(probs, cfg, chunk=W, flush=False)
    partials = [e for e in out if isinstance(e, Partial)]
    final = next(e for e in out if isinstance(e, Segment))
    assert [p.rev for p in partials] == list(range(1, len(partials) + 1))
    assert partials[0].end - 10 * W == 10 * W  # 320 ms after onset
    gaps = {b.end - a.end for a, b in zip(partials, partials[1:], strict=False)}
    assert gaps == {20 * W}  # every 640 ms
    assert all(p.index == 0 and p.start == final.start for p in partials)
    assert all(p.end <= final.end for p in partials)
    np.testing.assert_array_equal(partials[-1].audio, audio[partials[-1].start : partials[-1].end])
    assert out.index(final) > out.index(partials[-1])


def test_at_most_one_partial_per_feed() -> None:
    cfg = SegmenterConfig(partial_first_ms=100, partial_interval_ms=100)
    seg = Segmenter(ScriptedVad([0.9] * 500), cfg)
    out = seg.feed(ramp_audio(500))
    assert sum(isinstance(e, Partial) for e in out) == 1


def test_max_length_cuts_at_quietest_window_of_second_half() -> None:
    cfg = SegmenterConfig(min_silence_ms=1000, speech_pad_ms=0, min_speech_ms=32, max_segment_s=3.2)
    probs = [0.9] * 200
    probs[40] = 0.45  # first half: must not be chosen
    probs[70] = 0.36  # quietest in the second half (segment is 100 windows long)
    probs[80] = 0.40
    segs, audio = run(probs, cfg)
    assert segs[0].reason == "max_length"
    assert segs[0].start == 0
    assert segs[0].end == 70 * W + W // 2
    assert segs[1].start == segs[0].end
    total = sum(len(s.audio) for s in segs)
    assert total == len(audio)  # continuous speech: nothing lost between cuts
    assert all(len(s.audio) <= 3.2 * 16000 for s in segs)


@pytest.mark.parametrize("chunk", [1, 100, 511, 512, 513, 4000, 100_000])
def test_result_does_not_depend_on_chunking(chunk: int) -> None:
    rng = np.random.default_rng(7)
    probs = list(np.clip(rng.normal(0.5, 0.4, 600), 0, 1).repeat(1))
    reference, _ = run(probs, CFG, chunk=1600)
    segs, _ = run(probs, CFG, chunk=chunk)
    assert [(s.start, s.end, s.reason) for s in segs] == [
        (s.start, s.end, s.reason) for s in reference
    ]


def test_each_window_goes_through_the_vad_once() -> None:
    probs = [0.9] * 300
    vad = ScriptedVad(probs)
    seg = Segmenter(vad, CFG)
    audio = ramp_audio(300)
    for i in range(0, len(audio), 333):
        seg.feed(audio[i : i + 333])
    assert vad.windows_seen == 300


def test_buffer_stays_bounded_in_long_silence() -> None:
    seg = Segmenter(ScriptedVad([0.0] * 10_000), CFG)
    for _ in range(100):
        seg.feed(np.zeros(W * 100, dtype=np.float32))
    assert len(seg._buf) <= CFG.samples(CFG.speech_pad_ms) + W


def test_vad_returning_wrong_count_is_an_error() -> None:
    seg = Segmenter(lambda w: np.zeros(len(w) + 1), CFG)
    with pytest.raises(ValueError):
        seg.feed(np.zeros(W * 3, dtype=np.float32))


def test_state_and_restore_continue_exactly() -> None:
    """A second segmenter restored from a snapshot taken between utterances produces exactly the
    segments the first one would have (what a VAD worker taking over a session relies on)."""
    rng = np.random.default_rng(11)
    probs: list[float] = []
    while len(probs) < 900:  # alternating stretches of speech and silence, with noise
        level = 0.9 if len(probs) // 60 % 2 else 0.05
        probs += list(np.clip(rng.normal(level, 0.1, int(rng.integers(20, 80))), 0, 1))
    probs = probs[:900]
    audio = ramp_audio(900)
    whole, _ = run(probs, CFG, chunk=1600)

    a = Segmenter(ScriptedVad(probs), CFG)
    out, snap, at = [], None, 0
    for i in range(0, len(audio), 1600):
        out += [e for e in a.feed(audio[i : i + 1600]) if isinstance(e, Segment)]
        if i > len(audio) // 3 and a.state() is not None:
            snap, at = a.state(), i + 1600
            break
    assert snap is not None
    vad = ScriptedVad(probs)
    vad.i = snap.pos // W  # the VAD's own state goes along with the snapshot
    b = Segmenter(vad, CFG)
    b.restore(snap)
    for i in range(at, len(audio), 1600):
        out += [e for e in b.feed(audio[i : i + 1600]) if isinstance(e, Segment)]
    out += b.flush()
    assert [(s.index, s.start, s.end) for s in out] == [(s.index, s.start, s.end) for s in whole]
    for s in out:
        np.testing.assert_array_equal(s.audio, audio[s.start : s.end])


def test_no_state_inside_an_utterance() -> None:
    seg = Segmenter(ScriptedVad([0.9] * 50), CFG)
    seg.feed(ramp_audio(50))
    assert seg.state() is None


# -- speculative finals: tentatives -------------------------------------------------------------

SPEC = SegmenterConfig(
    min_silence_ms=320, speech_pad_ms=64, speech_pad_end_ms=96, min_speech_ms=96, tentative=True
)


def test_tentative_holds_exactly_the_audio_of_the_segment_it_becomes() -> None:
    probs = [0.0] * 20 + [0.9] * 30 + [0.0] * 40
    out, audio = events(probs, SPEC, flush=False)
    tent = [e for e in out if isinstance(e, Tentative)]
    segs = [e for e in out if isinstance(e, Segment)]
    assert len(tent) == 1 and len(segs) == 1
    t, s = tent[0], segs[0]
    assert (t.index, t.rev, t.start, t.end) == (s.index, s.tentative_rev, s.start, s.end)
    assert s.end == 50 * W + 96 * 16  # the end pad, not the 64 ms start pad
    np.testing.assert_array_equal(t.audio, s.audio)
    np.testing.assert_array_equal(s.audio, audio[s.start : s.end])
    assert out.index(t) < out.index(s)  # the tentative came first: that is the point
    assert not [e for e in out if isinstance(e, TentativeVoid)]


def test_speech_resuming_voids_the_tentative_and_the_next_pause_gets_a_new_revision() -> None:
    # a 6-window pause (192 ms: past the 96 ms end pad, short of the 320 ms endpoint)
    probs = [0.0] * 10 + [0.9] * 20 + [0.0] * 6 + [0.9] * 20 + [0.0] * 40
    out, _ = events(probs, SPEC, flush=False)
    kinds = [type(e).__name__ for e in out if not isinstance(e, SpeechStart | Partial)]
    assert kinds == ["Tentative", "TentativeVoid", "Tentative", "Segment"]
    t1, void, t2, seg = (e for e in out if not isinstance(e, SpeechStart | Partial))
    assert (t1.rev, void.rev, t2.rev, seg.tentative_rev) == (1, 1, 2, 2)
    assert t1.index == void.index == t2.index == seg.index == 0
    assert t1.end < t2.end == seg.end


def test_pause_shorter_than_the_end_pad_sends_no_tentative() -> None:
    probs = [0.0] * 10 + [0.9] * 20 + [0.0] * 2 + [0.9] * 20 + [0.0] * 40
    out, _ = events(probs, SPEC, flush=False)
    assert [e.rev for e in out if isinstance(e, Tentative)] == [1]


@pytest.mark.parametrize("how", ["flush", "max_length"])
def test_a_segment_not_closed_by_its_pause_voids_the_live_tentative(how: str) -> None:
    cfg = SegmenterConfig(
        min_silence_ms=320, speech_pad_ms=64, speech_pad_end_ms=96, min_speech_ms=96,
        tentative=True, max_segment_s=2.0,
    )  # fmt: skip
    if how == "max_length":  # speech, a pause of 6 windows, speech until the 2 s cap
        probs = [0.9] * 30 + [0.0] * 6 + [0.9] * 60
        out, _ = events(probs, cfg, flush=False)
    else:  # speech, then 6 windows of pause, and the stream ends
        seg = Segmenter(ScriptedVad([0.9] * 30 + [0.0] * 6), cfg)
        out = seg.feed(ramp_audio(36))
        out += seg.flush()
    voids = [e for e in out if isinstance(e, TentativeVoid)]
    segs = [e for e in out if isinstance(e, Segment)]
    assert len(voids) == 1 and voids[0].rev == 1
    assert segs and segs[0].tentative_rev is None
    assert out.index(voids[0]) < out.index(segs[0])


@pytest.mark.parametrize("how", ["finalize", "end_turn"])
def test_a_finalize_or_end_of_turn_in_a_pause_confirms_the_live_tentative(how: str) -> None:
    """The fast path: the utterance ends at the tentative, so the speculative final already
    under way is its final (same audio as waiting for the endpoint would give)."""
    probs = [0.9] * 30 + [0.0] * 6 + [0.0] * 40
    waited, _ = events(probs, SPEC, flush=False)
    seg = Segmenter(ScriptedVad(probs), SPEC)
    out = seg.feed(ramp_audio(36))
    assert seg.live_tentative == (0, 1)
    assert seg.pause_ms == 6 * W / 16 and seg.speech_s == 30 * W / 16_000
    out += seg.finalize() if how == "finalize" else seg.end_turn("turn")
    assert not [e for e in out if isinstance(e, TentativeVoid)]
    (closed,) = [e for e in out if isinstance(e, Segment)]
    (normal,) = [e for e in waited if isinstance(e, Segment)]
    assert (closed.start, closed.end, closed.tentative_rev) == (normal.start, normal.end, 1)
    assert closed.reason == ("finalize" if how == "finalize" else "turn")
    np.testing.assert_array_equal(closed.audio, normal.audio)
    assert seg.live_tentative is None and not seg.in_speech
    # the rest of the pause closes nothing more; the next speech is the next segment
    more = seg.feed(ramp_audio(40))
    assert not [e for e in more if isinstance(e, Segment | Tentative)]


def test_end_turn_without_a_live_tentative_does_nothing() -> None:
    seg = Segmenter(ScriptedVad([0.9] * 30 + [0.0] * 2), SPEC)
    seg.feed(ramp_audio(32))  # a pause shorter than the end pad: no tentative yet
    assert seg.live_tentative is None and seg.end_turn() == [] and seg.in_speech


def test_no_tentative_when_the_end_pad_reaches_the_endpoint() -> None:
    cfg = SegmenterConfig(min_silence_ms=320, speech_pad_end_ms=320, tentative=True)
    out, _ = events([0.0] * 10 + [0.9] * 20 + [0.0] * 40, cfg, flush=False)
    assert not [e for e in out if isinstance(e, Tentative)]
    assert [e.tentative_rev for e in out if isinstance(e, Segment)] == [None]


def test_tentatives_off_by_default_and_segments_unchanged_by_them() -> None:
    probs = [0.0] * 10 + [0.9] * 20 + [0.0] * 6 + [0.9] * 20 + [0.0] * 40
    off = SegmenterConfig(min_silence_ms=320, speech_pad_ms=64, speech_pad_end_ms=96)
    on_out, _ = events(probs, SPEC)
    off_out, _ = events(probs, off)
    assert not [e for e in off_out if isinstance(e, Tentative | TentativeVoid)]
    on_segs = [(s.start, s.end) for s in on_out if isinstance(s, Segment)]
    assert on_segs == [(s.start, s.end) for s in off_out if isinstance(s, Segment)]


def test_no_partial_during_a_pause() -> None:
    cfg = SegmenterConfig(
        min_silence_ms=2000, partial_first_ms=64, partial_interval_ms=64, min_speech_ms=32
    )
    probs = [0.9] * 10 + [0.0] * 40
    out, _ = events(probs, cfg, chunk=W, flush=False)
    parts = [e for e in out if isinstance(e, Partial)]
    assert parts and all(p.end <= 11 * W for p in parts)


def test_fast_audio_is_cut_like_offline_transcription() -> None:
    """Faster than real time: pauses under fast_min_silence_ms do not end a segment, segments
    grow to fast_max_segment_s, and no partials or tentatives are cut."""
    cfg = SegmenterConfig(
        min_silence_ms=320, speech_pad_ms=64, min_speech_ms=96, max_segment_s=3.0,
        fast_min_silence_ms=1000, fast_max_segment_s=6.0, partial_first_ms=64, tentative=True,
    )  # fmt: skip
    # 2 s speech, a 640 ms pause (ends a live utterance), 2 s speech, 1.3 s pause, 7 s speech
    probs = [0.9] * 62 + [0.0] * 20 + [0.9] * 62 + [0.0] * 40 + [0.9] * 220 + [0.0] * 40
    live, _ = events(probs, cfg)
    seg = Segmenter(ScriptedVad(probs), cfg)
    seg.fast = True
    audio = ramp_audio(len(probs))
    fast = [e for i in range(0, len(audio), 1600) for e in seg.feed(audio[i : i + 1600])]
    fast += seg.flush()
    live_segs = [e for e in live if isinstance(e, Segment)]
    fast_segs = [e for e in fast if isinstance(e, Segment)]
    assert len(live_segs) >= 5  # the short pause ends one, and 3 s caps cut the long speech
    assert not [e for e in fast if isinstance(e, Partial | Tentative)]
    assert [s.reason for s in fast_segs] == ["silence", "max_length", "silence"]
    # the 640 ms pause did not split: the first segment holds both 2 s stretches
    assert fast_segs[0].start == 0 and fast_segs[0].end >= 144 * W
    assert all((s.end - s.start) <= 6.0 * 16000 for s in fast_segs)


def test_finalize_sooner_than_min_finalize_ms_after_the_last_cut_cuts_nothing() -> None:
    """``finalize`` every 0.3 s through 6 s of speech cut it into ~20 ASR jobs; with
    ``min_finalize_ms=1000`` a cut comes at most once a second of audio, and no audio is lost."""
    n = 188  # 6 s of speech in 32 ms windows
    cfg = SegmenterConfig(
        min_silence_ms=320, speech_pad_ms=64, min_speech_ms=96, max_segment_s=30,
        min_finalize_ms=1000,
    )  # fmt: skip
    seg = Segmenter(ScriptedVad([0.9] * n), cfg)
    audio = ramp_audio(n)
    cuts: list[Segment] = []
    step = int(0.3 * 16_000)
    for i in range(0, len(audio), step):
        cuts += [e for e in seg.feed(audio[i : i + step]) if isinstance(e, Segment)]
        cuts += [e for e in seg.finalize() if isinstance(e, Segment)]  # accepted, maybe no cut
    cuts += [e for e in seg.flush() if isinstance(e, Segment)]
    assert 5 <= len(cuts) <= 7
    assert all(c.end - c.start >= 16_000 for c in cuts[:-1])
    assert [c.start for c in cuts[1:]] == [c.end for c in cuts[:-1]]  # contiguous: nothing lost
    # a finalize right after a cut is refused; the next one a second of audio later cuts again
    assert seg.finalize() == []


def test_min_finalize_ms_off_keeps_every_finalize_a_cut() -> None:
    cfg = SegmenterConfig(min_silence_ms=320, speech_pad_ms=64, min_speech_ms=96)
    seg = Segmenter(ScriptedVad([0.9] * 40), cfg)
    audio = ramp_audio(40)
    seg.feed(audio[: 10 * W])
    assert [e.reason for e in seg.finalize() if isinstance(e, Segment)] == ["finalize"]
    seg.feed(audio[10 * W : 20 * W])
    assert [e.reason for e in seg.finalize() if isinstance(e, Segment)] == ["finalize"]


# -- speculative finals: the quiet pause's early tentative --------------------------------------

QUIET = SegmenterConfig(
    min_silence_ms=320, speech_pad_ms=64, speech_pad_end_ms=160, min_speech_ms=96,
    tentative=True, quiet_pad_end_ms=64,
)  # fmt: skip


def levels(*spans: tuple[int, float]) -> np.ndarray:
    """Audio of (windows, amplitude) spans: a sine at that amplitude (speech is 0.5, room noise
    0.001: -54 dB under it, a trailing consonant the VAD missed 0.1: -14 dB)."""
    t = np.arange(sum(n for n, _ in spans) * W, dtype=np.float32)
    amp = np.concatenate([np.full(n * W, a, np.float32) for n, a in spans])
    return (amp * np.sin(t * 0.3)).astype(np.float32)


def quiet_events(probs: list[float], audio: np.ndarray, cfg: SegmenterConfig = QUIET):
    seg = Segmenter(ScriptedVad(probs), cfg)
    out = []
    for i in range(0, len(audio), W):
        out += seg.feed(audio[i : i + W])
    return [e for e in out if not isinstance(e, SpeechStart | Partial)], seg


def test_a_quiet_pause_gets_its_tentative_early_and_the_segment_keeps_the_short_end_pad() -> None:
    probs = [0.0] * 10 + [0.9] * 30 + [0.0] * 20
    audio = levels((10, 0.001), (30, 0.5), (20, 0.001))
    out, _ = quiet_events(probs, audio)
    assert [type(e).__name__ for e in out] == ["Tentative", "Segment"]
    t, s = out
    assert t.quiet and t.end == 40 * W + 64 * 16  # 64 ms into the pause, not 160
    assert (s.start, s.end, s.tentative_rev) == (t.start, t.end, t.rev)
    np.testing.assert_array_equal(t.audio, s.audio)


def test_a_tail_louder_than_room_noise_voids_the_early_tentative_and_keeps_the_usual_pad() -> None:
    """The VAD called it silence, but 64 to 160 ms into the pause the audio is only 14 dB under
    the speech (a trailing consonant): that audio stays in the utterance."""
    probs = [0.0] * 10 + [0.9] * 30 + [0.0] * 20
    audio = levels((10, 0.001), (30, 0.5), (2, 0.001), (3, 0.1), (15, 0.001))
    out, _ = quiet_events(probs, audio)
    assert [type(e).__name__ for e in out] == ["Tentative", "TentativeVoid", "Tentative", "Segment"]
    early, void, usual, s = out
    assert (early.rev, void.rev, usual.rev, s.tentative_rev) == (1, 1, 2, 2)
    assert early.end == 40 * W + 64 * 16 and usual.end == s.end == 40 * W + 160 * 16


@pytest.mark.parametrize("how", ["probability", "level"])
def test_a_pause_that_does_not_start_quiet_gets_only_the_usual_tentative(how: str) -> None:
    probs = [0.0] * 10 + [0.9] * 30 + ([0.0, 0.4] if how == "probability" else [0.0] * 2)
    probs += [0.0] * 18
    first = 0.001 if how == "probability" else 0.1
    audio = levels((10, 0.001), (30, 0.5), (2, first), (18, 0.001))
    out, _ = quiet_events(probs, audio)
    assert [type(e).__name__ for e in out] == ["Tentative", "Segment"]
    assert out[0].end == out[1].end == 40 * W + 160 * 16


def test_speech_after_the_early_tentative_voids_it_and_the_next_quiet_pause_gets_another() -> None:
    probs = [0.0] * 10 + [0.9] * 30 + [0.0] * 3 + [0.9] * 20 + [0.0] * 20
    audio = levels((10, 0.001), (30, 0.5), (3, 0.001), (20, 0.5), (20, 0.001))
    out, _ = quiet_events(probs, audio)
    assert [type(e).__name__ for e in out] == ["Tentative", "TentativeVoid", "Tentative", "Segment"]
    assert out[-1].tentative_rev == 2 and out[-1].end == 63 * W + 64 * 16


def test_a_finalize_before_the_tail_check_ends_the_utterance_at_the_early_tentative() -> None:
    probs = [0.0] * 10 + [0.9] * 30 + [0.0] * 3
    audio = levels((10, 0.001), (30, 0.5), (3, 0.001))
    out, seg = quiet_events(probs, audio)
    assert [type(e).__name__ for e in out] == ["Tentative"]
    (closed,) = seg.finalize()
    assert (closed.end, closed.tentative_rev) == (out[0].end, 1)


def test_no_early_tentative_when_the_quiet_pad_is_not_shorter_than_the_end_pad() -> None:
    cfg = SegmenterConfig(
        min_silence_ms=320, speech_pad_ms=64, speech_pad_end_ms=64, min_speech_ms=96,
        tentative=True, quiet_pad_end_ms=64,
    )  # fmt: skip
    probs = [0.0] * 10 + [0.9] * 30 + [0.0] * 20
    out, _ = quiet_events(probs, levels((10, 0.001), (30, 0.5), (20, 0.001)), cfg)
    assert [type(e).__name__ for e in out] == ["Tentative", "Segment"]
    assert out[0].end == 40 * W + 64 * 16
