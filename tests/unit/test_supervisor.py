"""The restart policy of `up` (pure)."""

from __future__ import annotations

from whisper_streaming.supervisor import HEALTHY_AFTER_S, MAX_DELAY_S, Backoff


def test_delays_double_up_to_a_cap_and_reset_after_a_healthy_run() -> None:
    b = Backoff()
    b.started(0.0)
    delays = []
    now = 0.0
    for _ in range(8):  # crash loop: it dies a second after each start
        now += 1.0
        d = b.delay(now)
        delays.append(d)
        now += d
        b.started(now)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30] and max(delays) == MAX_DELAY_S
    now += HEALTHY_AFTER_S  # then it runs for a minute before dying again: a fresh start
    assert b.delay(now) == 1
