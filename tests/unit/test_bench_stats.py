"""The benchmark's pure statistics: percentiles, send-time lookup and matching service messages
against ground-truth speech regions (bench/stats.py). No model, no Redis, no timing."""

from __future__ import annotations

import math

import pytest

from bench.stats import (
    Message,
    Region,
    SendLog,
    linearity,
    merge_regions,
    percentile,
    region_latencies,
    summary,
)


def test_percentile_matches_linear_interpolation() -> None:
    xs = [0.5, 0.1, 0.3, 0.2, 0.4]
    assert percentile(xs, 50) == pytest.approx(0.3)
    assert percentile(xs, 0) == pytest.approx(0.1)
    assert percentile(xs, 100) == pytest.approx(0.5)
    assert percentile(xs, 95) == pytest.approx(0.48)
    assert percentile([], 50) is None
    assert percentile([2.0], 95) == 2.0


def test_summary_rounds_and_counts() -> None:
    assert summary([1.0, 2.0, 3.0]) == {"n": 3, "p50": 2.0, "p95": 2.9, "max": 3.0}
    assert summary([]) == {"n": 0, "p50": None, "p95": None, "max": None}


def test_send_log_gives_the_frame_that_carried_a_sample() -> None:
    log = SendLog([(0.1, 10.0), (0.2, 10.1), (0.3, 10.25)])
    assert log.sent_at(0.0) == 10.0
    assert log.sent_at(0.1) == 10.0
    assert log.sent_at(0.15) == 10.1
    assert log.sent_at(0.3) == 10.25
    assert log.sent_at(0.31) is None


def _log(until: float, t0: float = 100.0, step: float = 0.02) -> SendLog:
    n = round(until / step)
    return SendLog([((i + 1) * step, t0 + (i + 1) * step) for i in range(n)])


def test_region_latencies_first_partial_and_final() -> None:
    regions = [Region(1.0, 3.0), Region(4.5, 6.0)]
    msgs = [
        Message("partial", 0, 0.6, 1.4, "he", 101.9),
        Message("partial", 0, 0.6, 2.0, "he hoped", 102.5),
        Message("final", 0, 0.6, 3.4, "he hoped so", 103.8),
        Message("partial", 1, 4.1, 5.0, "then", 105.6),
        Message("final", 1, 4.1, 6.4, "then not", 106.9),
    ]
    lat = region_latencies(regions, msgs, _log(8.0))
    assert lat[0].first_partial == pytest.approx(0.9)
    assert lat[0].final == pytest.approx(0.8)
    assert lat[1].first_partial == pytest.approx(1.1)
    assert lat[1].final == pytest.approx(0.9)


def test_region_without_partial_uses_final_as_first_text() -> None:
    lat = region_latencies(
        [Region(1.0, 1.5)], [Message("final", 0, 0.7, 1.9, "yes", 102.3)], _log(3.0)
    )[0]
    assert lat.first_partial is None
    assert lat.first_text == pytest.approx(1.3)
    assert lat.final == pytest.approx(0.8)


def test_final_must_span_the_end_of_speech() -> None:
    """A segment cut before the end (max length) is not the end's final; the next one is."""
    regions = [Region(1.0, 20.0)]
    msgs = [
        Message("final", 0, 0.6, 15.0, "first part", 116.0),
        Message("final", 1, 15.0, 20.3, "second part", 121.0),
    ]
    assert region_latencies(regions, msgs, _log(22.0))[0].final == pytest.approx(1.0)


def test_missed_utterance_has_no_final() -> None:
    lat = region_latencies(
        [Region(1.0, 2.0), Region(5.0, 6.0)], [Message("final", 0, 0.6, 2.4, "a", 103.0)], _log(8)
    )
    assert lat[0].final == pytest.approx(1.0)
    assert lat[1].final is None and lat[1].first_text is None


def test_partials_of_another_region_do_not_count() -> None:
    msgs = [
        Message("partial", 0, 0.5, 2.0, "x", 102.5),
        Message("partial", 1, 4.6, 5.2, "y", 105.8),
    ]
    lat = region_latencies([Region(5.0, 6.0)], msgs, _log(8.0))[0]
    assert lat.first_partial == pytest.approx(0.8)


def test_merge_regions_joins_short_gaps() -> None:
    regs = [Region(3.0, 4.0), Region(0.0, 1.0), Region(1.3, 2.0)]
    assert merge_regions(regs, 0.5) == [Region(0.0, 2.0), Region(3.0, 4.0)]


def test_linearity() -> None:
    lin = linearity([1, 2, 4, 8], [2, 4, 8, 16])
    assert lin["slope"] == pytest.approx(2.0)
    assert lin["max_rel_dev"] == pytest.approx(0.0, abs=1e-12)
    bent = linearity([1, 2, 4, 8], [1, 4, 16, 64])
    assert bent["max_rel_dev"] > 0.1
    assert math.isnan(linearity([1], [1])["slope"])


def test_final_ending_a_little_before_the_ground_truth_end_still_counts() -> None:
    """The service's segment ends VAD_SPEECH_PAD_END_MS after *its* end of speech, which may be
    a few hundred ms before the ground truth's: still that region's final."""
    msgs = [
        Message("final", 0, 12.4, 15.41, "words", 116.5),
        Message("final", 1, 17.4, 19.1, "x", 120),
    ]
    lat = region_latencies([Region(12.79, 15.71), Region(17.8, 19.3)], msgs, _log(22.0))
    assert lat[0].final == pytest.approx(116.5 - (100 + 15.71), abs=0.02)
    assert lat[1].final == pytest.approx(120 - (100 + 19.3), abs=0.02)


def _final(start: float, end: float, received: float) -> Message:
    return Message("final", 0, start, end, "x", received)


def test_mid_turn_splits_count_finals_ending_inside_an_utterance() -> None:
    from bench.stats import mid_turn_splits

    turns = [Region(1.0, 5.0), Region(7.0, 9.0)]
    finals = [
        _final(0.8, 3.0, 0),  # ends inside the first turn: the speaker went on
        _final(3.1, 5.1, 0),  # the end of the turn
        _final(6.9, 8.9, 0),  # within the tolerance of the second turn's end
    ]
    assert mid_turn_splits(turns, finals) == 1
    assert mid_turn_splits(turns, finals[1:]) == 0


def test_latency_after_a_client_event() -> None:
    from bench.stats import after

    regions = [Region(1.0, 2.0), Region(4.0, 5.0)]
    finals = [_final(0.9, 2.1, 10.5), _final(3.9, 5.1, 13.0)]
    # finalize after the first region at clock 10.3, after the second at 13.2 (final came first)
    got = after([(2.2, 10.3), (5.2, 13.2)], finals, regions)
    assert [round(x, 3) for x in got] == [0.2, 0.0]
    assert after([(0.5, 9.0)], finals, regions) == []  # before any speech ended


def test_first_message_after_the_end_of_speech() -> None:
    from bench.stats import first_after_end

    regions = [Region(1.0, 2.0), Region(4.0, 5.0)]
    sent = SendLog([(1.0, 101.0), (2.0, 102.0), (5.0, 105.0)])
    eager = [
        Message("end_of_turn_eager", 0, 0.9, 1.5, "a", 101.8),  # a mid-region pause: not the end
        Message("end_of_turn_eager", 0, 0.9, 2.1, "ab", 102.3),
    ]
    assert [round(x, 3) for x in first_after_end(regions, eager, sent)] == [0.3]
