"""`make soak`: its status line, fault schedule and counting of lost and repeated finals (pure)."""

from __future__ import annotations

from whisper_streaming.soak import Totals
from whisper_streaming.soak_faults import (
    BLAME_WINDOW_S,
    GATEWAY,
    MIN_GAP_S,
    NO_FAULT,
    REDIS,
    TAIL_S,
    WORKER,
    Fault,
    SessionLog,
    blame,
    by_cause,
    merge,
    per_cause,
    schedule,
)


def test_status_line_reports_progress_and_the_latest_memory_sample() -> None:
    t = Totals(sessions=12, failed_sessions=1, finals=80, kills=3, errors=["x"])
    assert "0 MB" in t.status(5, 180)
    t.memory.append({"t": 5.0, "redis_mb": 2.25, "processes_rss_mb": 812.4, "keys": 40})
    line = t.status(65.2, 180)
    assert line.startswith("soak    65/180s: 12 sessions (1 failed), 80 finals")
    assert "3 kills" in line and "redis 2.2 MB" in line and "processes 812 MB" in line
    assert line.endswith("1 errors")


def test_status_line_counts_the_faults_and_what_they_cost() -> None:
    t = Totals(gateway_kills=2, redis_restarts=1, resumes=5)
    t.lost["gateway kill"] = 1
    t.duplicated.update({"redis restart": 2, "no fault": 1})
    line = t.status(10, 60)
    assert "1 lost, 3 duplicated" in line
    assert "2 gateway kills, 1 redis restarts, 5 resumes" in line


def test_the_schedule_interleaves_the_three_faults_apart_and_not_at_the_end() -> None:
    plan = schedule(
        120, worker_every=20, gateway_every=15, redis_every=30,
        workers=["asr-worker-0", "vad-worker-0"], gateways=["gateway-0", "gateway-1"], seed=7,
    )  # fmt: skip
    kinds = [f.kind for f in plan]
    assert kinds.count(WORKER) == 5 and kinds.count(GATEWAY) == 6 and kinds.count(REDIS) == 3
    times = [f.at_s for f in plan]
    assert times == sorted(times) and times[0] == 20  # worker kills first; the others half in
    assert all(b - a >= MIN_GAP_S for a, b in zip(times, times[1:], strict=False))
    assert times[-1] < 120 - TAIL_S
    assert {f.target for f in plan if f.kind == GATEWAY} <= {"gateway-0", "gateway-1"}
    assert {f.target for f in plan if f.kind == REDIS} == {"redis-server"}
    same = schedule(
        120, worker_every=20, gateway_every=15, redis_every=30,
        workers=["asr-worker-0", "vad-worker-0"], gateways=["gateway-0", "gateway-1"], seed=7,
    )  # fmt: skip
    assert same == plan  # the seed decides the victims


def test_a_period_of_zero_turns_that_fault_off() -> None:
    plan = schedule(
        60, worker_every=0, gateway_every=0, redis_every=20, workers=["w"], gateways=["g"], seed=1
    )
    assert [(f.at_s, f.kind) for f in plan] == [(30.0, REDIS)]


def test_a_loss_is_blamed_on_the_latest_fault_shortly_before_it() -> None:
    faults = [Fault(10, WORKER, "vad-worker-0"), Fault(30, GATEWAY, "gateway-1")]
    assert blame(12, faults) == WORKER
    assert blame(31, faults) == GATEWAY
    assert blame(9, faults) == NO_FAULT
    assert blame(30 + BLAME_WINDOW_S + 1, faults) == NO_FAULT


def test_finals_lost_and_duplicated_across_resumes() -> None:
    log = SessionLog(segments=5, ended_at=50)
    log.finals = [(3, 0), (8, 1), (21, 1), (40, 4)]  # 1 again after a resume; 2 and 3 never
    log.heard = {0: 3, 1: 21, 2: 25, 4: 40}  # partials of 2 came; nothing of 3
    assert log.duplicated() == [(21, 1)]
    assert log.lost() == [(25, 2), (25, 3)]
    faults = [Fault(20, GATEWAY, "gateway-0")]
    assert by_cause(log.lost(), faults) == {GATEWAY: 2}
    assert by_cause([(1, 0)], faults) == {NO_FAULT: 1}
    assert SessionLog(segments=None).lost() == []  # never closed: a failed session instead


def test_per_cause_reads_as_a_table_cell() -> None:
    assert per_cause({}) == "0"
    counts = {GATEWAY: 2}
    merge(counts, {GATEWAY: 1, REDIS: 1})
    assert per_cause(counts) == "4 (3 gateway kill, 1 redis restart)"
