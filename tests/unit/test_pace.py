"""PaceMeter: is a session's audio arriving faster than real time? (pure, synthetic clocks)"""

from __future__ import annotations

from workers.pace import PaceMeter


def feed(meter: PaceMeter, chunks: int, chunk_s: float, wall_per_chunk: float, t0: float = 1000.0):
    t = t0
    out = []
    for _ in range(chunks):
        t += wall_per_chunk
        out.append(meter.add(t, chunk_s))
    return out, t


def test_real_time_microphone_is_not_fast() -> None:
    out, _ = feed(PaceMeter(), 600, 0.1, 0.1)  # a minute of 100 ms chunks at real time
    assert not any(out)


def test_a_file_sent_as_fast_as_possible_is_fast_once_a_window_has_arrived() -> None:
    out, _ = feed(PaceMeter(), 100, 0.1, 0.005)
    assert not any(out[:29])  # under 3 s of audio: not judged yet
    assert all(out[30:])


def test_a_stall_then_a_burst_averages_to_real_time() -> None:
    meter = PaceMeter()
    _, t = feed(meter, 100, 0.1, 0.1)
    t += 2.0  # the network stalls for 2 s, then the buffered 2 s arrive at once
    burst, _ = feed(meter, 20, 0.1, 0.001, t0=t)
    assert not any(burst)


def test_catching_up_a_long_backlog_is_fast_until_live_again() -> None:
    meter = PaceMeter()
    _, t = feed(meter, 100, 0.1, 0.1)
    catch_up, t = feed(meter, 150, 0.1, 0.01, t0=t + 15.0)  # 15 s buffered, sent at 10x
    assert catch_up[-1]
    after, _ = feed(meter, 40, 0.1, 0.1, t0=t)
    assert not after[-1]  # a window after real time resumed, the session is live again


def test_slightly_faster_than_real_time_is_not_fast() -> None:
    out, _ = feed(PaceMeter(), 300, 0.1, 0.08)  # 1.25x: a client a bit ahead of its clock
    assert not any(out)


def test_chunks_without_a_receive_time_change_nothing() -> None:
    meter = PaceMeter()
    assert meter.add(0.0, 10.0) is False
    out, _ = feed(meter, 40, 0.1, 0.1)
    assert not any(out)
