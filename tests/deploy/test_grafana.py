"""The Grafana dashboard: generated, and every metric its queries use exists."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

import shared.metrics  # noqa: F401  (registers our metrics)
from tests.deploy.conftest import DEPLOY

# Documented names of the other exporters the dashboard reads.
REDIS_EXPORTER = {  # oliver006/redis_exporter, --check-streams (exporter/streams.go)
    "redis_stream_length", "redis_stream_groups", "redis_stream_group_consumers",
    "redis_stream_group_messages_pending", "redis_stream_group_lag",
    "redis_stream_group_entries_read", "redis_stream_group_consumer_messages_pending",
    "redis_stream_group_consumer_idle_seconds", "redis_up", "redis_memory_used_bytes",
    "redis_connected_clients",
}  # fmt: skip
KEDA = {  # keda.sh/docs/latest/integrations/prometheus (operator metrics)
    "keda_scaler_metrics_value", "keda_scaler_active", "keda_scaler_detail_errors_total",
    "keda_scaler_metrics_latency_seconds", "keda_scaled_object_errors_total",
    "keda_scaled_object_paused", "keda_resource_registered_total",
}  # fmt: skip
KUBE_STATE_METRICS = {  # kube-state-metrics docs/metrics/workload/horizontalpodautoscaler-metrics.md
    "kube_horizontalpodautoscaler_status_desired_replicas",
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
    "kube_horizontalpodautoscaler_spec_min_replicas",
}
DCGM = {  # NVIDIA dcgm-exporter's default counters (etc/default-counters.csv)
    "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_GPU_TEMP",
}  # fmt: skip
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "irate",
    "histogram_quantile", "le", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "offset", "bool", "topk", "bottomk", "clamp_min", "clamp_max", "abs", "vector",
    "deriv", "absent", "delta",
}  # fmt: skip
KNOWN_METRICS_EXTRA = REDIS_EXPORTER | KEDA | KUBE_STATE_METRICS | DCGM
DASHBOARDS = (
    DEPLOY / "grafana" / "whisper-streaming.json",
    DEPLOY / "grafana" / "gpu" / "whisper-streaming-gpu.json",
)


def our_metric_names() -> set[str]:
    """Sample names our processes expose on /metrics, from shared/metrics.py's collectors."""
    names: set[str] = set()
    for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001
        if not type(collector).__module__.startswith("prometheus_client.metrics"):
            continue
        for family in collector.describe() or collector.collect():
            assert isinstance(family, Metric)
            if not family.name.startswith("whisper_"):
                continue
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
            names |= {family.name + s for s in suffixes.get(family.type, [""])}
    return names


def metrics_in(expr: str) -> set[str]:
    """Metric names of a PromQL expression: identifiers outside label matchers, strings, ranges
    and grouping clauses, less PromQL's own words."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    idents = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {i for i in idents if i not in PROMQL_WORDS}


def dashboard(path: Path = DASHBOARDS[0]) -> dict:
    return json.loads(path.read_text())


def queries() -> list[str]:
    return [
        t["expr"]
        for path in DASHBOARDS
        for p in dashboard(path)["panels"]
        for t in p.get("targets", [])
    ]


def test_dashboard_is_what_the_generator_makes() -> None:
    spec = importlib.util.spec_from_file_location("dashboard", DEPLOY / "grafana" / "dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for gpu, path in zip((False, True), DASHBOARDS, strict=True):
        assert module.render(gpu) == path.read_text(), "run: python deploy/grafana/dashboard.py"


def test_gpu_dashboard_adds_dcgm_panels_on_a_current_schema() -> None:
    plain, gpu = (dashboard(p) for p in DASHBOARDS)
    for d in (plain, gpu):
        assert d["schemaVersion"] >= 41  # Grafana 12's classic model
    gpu_exprs = [t["expr"] for p in gpu["panels"] for t in p.get("targets", [])]
    assert any("DCGM_FI_DEV_GPU_UTIL" in e for e in gpu_exprs)
    assert not any("DCGM" in q for p in plain["panels"] for q in json.dumps(p.get("targets", [])))
    assert len(gpu["panels"]) > len(plain["panels"]) and gpu["uid"] != plain["uid"]
    ids = [p["id"] for p in gpu["panels"]]
    assert len(ids) == len(set(ids))


def test_every_query_metric_exists() -> None:
    known = our_metric_names() | KNOWN_METRICS_EXTRA
    assert "whisper_sessions_active" in known and "whisper_final_latency_seconds_bucket" in known
    unknown = {m: q for q in queries() for m in metrics_in(q) if m not in known}
    assert not unknown, unknown


def test_the_check_catches_an_unknown_metric() -> None:
    assert metrics_in('sum(rate(whisper_bogus_total{namespace="x"}[5m])) by (pod)') == {
        "whisper_bogus_total"
    }


def test_dashboard_covers_what_operators_need() -> None:
    used = set().union(*(metrics_in(q) for q in queries()))
    required = {
        "redis_stream_group_lag", "redis_stream_group_messages_pending", "keda_scaler_metrics_value",
        "kube_horizontalpodautoscaler_status_desired_replicas",
        "kube_horizontalpodautoscaler_status_current_replicas", "whisper_sessions_active",
        "whisper_final_latency_seconds_bucket", "whisper_partial_latency_seconds_bucket",
        "whisper_asr_realtime_factor_bucket", "whisper_asr_queue_wait_seconds_bucket",
        "whisper_asr_jobs_total", "whisper_asr_dead_letters_total",
    }  # fmt: skip
    assert required <= used, required - used
    assert all(
        p["datasource"]["uid"] == "${datasource}"
        for p in dashboard()["panels"]
        if p["type"] != "row"
    )
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_stream_names_in_queries_are_the_code_constants() -> None:
    from shared import keys as K

    text = json.dumps(queries())
    for name in (
        K.ASR_JOBS_STREAM,
        K.SESSIONS_STREAM,
        K.ASR_DEAD_LETTER_STREAM,
        K.ASR_PARTIALS_STREAM,
    ):
        assert name in text


def test_a_lag_panel_per_model_pool_of_the_manifests() -> None:
    """Each pool deploy/keda runs (base/pools/<name>) has its panel on its own stream's lag."""
    from shared.keys import Keys

    deployed = sorted(p.name for p in (DEPLOY / "keda" / "base" / "pools").iterdir())
    assert deployed == ["en", "multi"]
    titles = {p["title"]: p for p in dashboard()["panels"]}
    for pool in deployed:
        panel = titles[f"Pool {pool}: lag, in flight, replicas"]
        exprs = [t["expr"] for t in panel["targets"]]
        lag = next(e for e in exprs if "redis_stream_group_lag" in e)
        assert f'stream="{Keys("").asr_jobs(pool)}"' in lag  # the stream its ScaledObject reads
        assert any(f'keda-hpa-asr-worker-{pool}"' in e for e in exprs)
        assert any(f'pool="{pool}"' in e and "whisper_asr_queue_wait" in e for e in exprs)
