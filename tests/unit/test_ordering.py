"""Result reordering, frame coalescing and arrival clock of a gateway session (pure)."""

from __future__ import annotations

import pytest

from gateway.ordering import ArrivalClock, Coalescer, FrameCounter, ReorderBuffer


def test_out_of_order_results_come_out_in_segment_order() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer()
    assert buf.push(2, "c") == []
    assert buf.push(1, "b") == []
    assert buf.push(0, "a") == ["a", "b", "c"]
    assert buf.push(3, "d") == ["d"]
    assert buf.next == 4


def test_duplicates_are_dropped() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer()
    assert buf.push(0, "a") == ["a"]
    assert buf.push(0, "a again") == []
    assert buf.push(2, "c") == []
    assert buf.push(2, "c again") == []
    assert buf.push(1, "b") == ["b", "c"]


def test_skip_to_releases_what_is_held() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer()
    buf.push(2, "c")
    buf.push(4, "e")
    assert buf.skip_to(3) == ["c"]
    assert buf.next == 3
    assert buf.skip_to(5) == ["e"]


def test_missing_names_what_a_skip_gives_up_on() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer()
    buf.push(0, "a")
    buf.push(2, "c")
    buf.push(4, "e")
    assert buf.missing(6) == [1, 3, 5]
    assert buf.missing(2) == [1]
    buf.skip_to(6)
    assert buf.missing(6) == []


def test_reorder_buffer_is_bounded() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(max_held=3)
    for i in range(1, 4):
        buf.push(i, i)
    with pytest.raises(OverflowError):
        buf.push(9, 9)


def test_coalescer_gathers_small_frames() -> None:
    c = Coalescer(target_bytes=100, max_wait_s=0.1)
    assert c.push(b"x" * 86, now=0.0) is None
    assert c.push(b"y" * 86, now=0.01) == b"x" * 86 + b"y" * 86
    assert c.buffered == 0


def test_coalescer_releases_old_bytes_on_time() -> None:
    c = Coalescer(target_bytes=100, max_wait_s=0.1)
    c.push(b"z" * 10, now=1.0)
    assert not c.due(1.05)
    assert c.due(1.11)
    assert c.take() == b"z" * 10
    assert c.take() is None


def test_arrival_clock() -> None:
    clock = ArrivalClock()
    clock.mark(1600, 10.0)
    clock.mark(3200, 10.1)
    assert clock.arrival(100) == 10.0
    assert clock.arrival(1601) == 10.1
    assert clock.arrival(99999) == 10.1
    assert ArrivalClock().arrival(5) is None


def test_the_frame_counter_counts_per_one_second_window() -> None:
    c = FrameCounter()
    assert [c.count(t) for t in (10.0, 10.2, 10.9)] == [1, 2, 3]
    assert c.count(11.0) == 1  # a new window starts a second after the last began
    assert c.count(11.5) == 2
