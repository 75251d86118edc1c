"""The PrometheusRule: the alerts operators need, well-formed, on metrics that exist."""

from __future__ import annotations

import re
from typing import Any

from tests.deploy.conftest import find, one
from tests.deploy.test_grafana import KNOWN_METRICS_EXTRA, metrics_in, our_metric_names

DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
REQUIRED = {
    "WhisperStreamLagGrowing",
    "WhisperDeadLetters",
    "WhisperNoAsrWorkerAlive",
    "WhisperFinalLatencyHigh",
}


def rules(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rule = one(docs, "PrometheusRule", "whisper-streaming")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    out = {}
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"]
        for r in group["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r
            out[r["alert"]] = r
    return out


def balanced(expr: str) -> bool:
    depth = {"(": 0, "[": 0, "{": 0}
    closing = {")": "(", "]": "[", "}": "{"}
    for ch in re.sub(r'"[^"]*"', "", expr):
        if ch in depth:
            depth[ch] += 1
        elif ch in closing:
            depth[closing[ch]] -= 1
            if depth[closing[ch]] < 0:
                return False
    return not any(depth.values())


def test_alerts_are_complete_well_formed_and_read_known_metrics(rendered) -> None:
    known = our_metric_names() | KNOWN_METRICS_EXTRA
    for name in ("local", "eks-gpu"):
        alerts = rules(rendered[name])
        assert REQUIRED <= alerts.keys(), REQUIRED - alerts.keys()
        for alert, r in alerts.items():
            assert balanced(r["expr"]), alert
            assert not metrics_in(r["expr"]) - known, (alert, metrics_in(r["expr"]) - known)
            assert DURATION.match(r.get("for", "0s")), alert
            assert r["labels"]["severity"] in ("warning", "critical"), alert
            assert r["annotations"]["summary"] and r["annotations"]["description"], alert
        assert "whisper_asr_dead_letters_total" in alerts["WhisperDeadLetters"]["expr"]
        assert "redis_stream_group_lag" in alerts["WhisperStreamLagGrowing"]["expr"]
        latency = alerts["WhisperFinalLatencyHigh"]["expr"]
        assert (
            "histogram_quantile(0.95" in latency
            and "whisper_final_latency_seconds_bucket" in latency
        )
        assert len(find(rendered[name], "PrometheusRule")) == 1


def test_the_checks_catch_a_broken_expression() -> None:
    assert not balanced("sum(rate(x[5m])")
    assert balanced('max by (a) (x{b="("}) > 1')
