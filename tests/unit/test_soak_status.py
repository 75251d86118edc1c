"""`make soak` prints a status line every few seconds (pure)."""

from __future__ import annotations

from whisper_streaming.soak import Totals


def test_status_line_reports_progress_and_the_latest_memory_sample() -> None:
    t = Totals(sessions=12, failed_sessions=1, finals=80, kills=3, errors=["x"])
    assert "0 MB" in t.status(5, 180)
    t.memory.append({"t": 5.0, "redis_mb": 2.25, "processes_rss_mb": 812.4, "keys": 40})
    line = t.status(65.2, 180)
    assert line.startswith("soak    65/180s: 12 sessions (1 failed), 80 finals")
    assert "3 kills" in line and "redis 2.2 MB" in line and "processes 812 MB" in line
    assert line.endswith("1 errors")
