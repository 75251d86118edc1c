"""`whisper-streaming up --finals-only N`: which ASR worker gets which settings (pure)."""

from __future__ import annotations

from whisper_streaming.up import asr_worker_env


def test_no_finals_only_workers_changes_nothing() -> None:
    assert [asr_worker_env(i, 2, 0) for i in range(2)] == [{}, {}]


def test_the_last_workers_serve_finals_only_and_the_others_yield_the_cpu() -> None:
    envs = [asr_worker_env(i, 3, 1) for i in range(3)]
    shares = {
        "ASR_NICE": "10",
        "ASR_FINALS_POLL_MS": "100",
        "ASR_PARTIALS_YIELD": "true",
        "ASR_PARTIALS_PREEMPT": "true",
    }
    assert envs == [shares, shares, {"ASR_PARTIALS": "false", "ASR_NICE": "0"}]
    assert all(
        e.get("ASR_PARTIALS") == "false" for e in (asr_worker_env(i, 2, 2) for i in range(2))
    )
