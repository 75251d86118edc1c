"""Generates the Grafana dashboards (run: python deploy/grafana/dashboard.py): whisper-streaming.json,
and gpu/whisper-streaming-gpu.json for the GPU overlay (the same panels and a GPU row read from
NVIDIA's DCGM exporter).

The JSON is committed (Grafana and the ConfigMap read it); tests/deploy checks that it is what this
script makes and that every metric its queries use exists: ours in shared/metrics.py, the others in
redis_exporter's, KEDA's or kube-state-metrics' documented names.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("whisper-streaming.json")
POOLS = sorted(
    p.name for p in (Path(__file__).parents[1] / "keda" / "base" / "pools").iterdir() if p.is_dir()
)
"""The model pools deploy/keda runs (one folder each under base/pools): a row of panels each."""
GPU_OUT = Path(__file__).parent / "gpu" / "whisper-streaming-gpu.json"
SCHEMA_VERSION = 42
"""The classic JSON model as Grafana 12 writes it (older versions are migrated on load, so a
dashboard written for 39 kept being upgraded on every open)."""
ASR_PODS = 'namespace="$namespace", pod=~"asr-worker.*"'
NS = 'namespace="$namespace"'
STREAMS = "asr:jobs:.+|asr:partials:.+|asr:dead:.+|sessions"
SCALED = "gateway|vad-worker|asr-worker-.+"
HPA = f'horizontalpodautoscaler=~"keda-hpa-({SCALED})"'


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
    }


def panel(
    pid: int,
    title: str,
    exprs: list[tuple[str, str]],
    grid: tuple[int, int, int, int],
    unit: str = "short",
    description: str = "",
) -> dict[str, Any]:
    x, y, w, h = grid
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit, "min": 0}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [target(e, legend, chr(ord("A") + i)) for i, (e, legend) in enumerate(exprs)],
    }


def row(pid: int, title: str, y: int) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
        "panels": [],
    }


def quantiles(metric: str, selector: str = NS, label: str = "") -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            f"{label}p{int(q * 100)}",
        )
        for q in (0.5, 0.95)
    ]


def pool_panels(first_id: int, y: int) -> list[dict[str, Any]]:
    """Per model pool: its stream's lag and pending (what its ScaledObject scales on), its
    replicas, the queue wait of its jobs and the sessions routed to it."""
    out: list[dict[str, Any]] = [row(first_id, "Model pools (asr:jobs:<pool>)", y)]
    for i, pool in enumerate(POOLS):
        stream = f'stream="asr:jobs:{pool}", group="asr"'
        hpa = f'{NS}, horizontalpodautoscaler="keda-hpa-asr-worker-{pool}"'
        out.append(
            panel(
                first_id + 1 + i,
                f"Pool {pool}: lag, in flight, replicas",
                [
                    (f"max(redis_stream_group_lag{{{stream}}})", "lag (waiting)"),
                    (f"max(redis_stream_group_messages_pending{{{stream}}})", "in flight"),
                    (
                        f"max(kube_horizontalpodautoscaler_status_current_replicas{{{hpa}}})",
                        "replicas",
                    ),
                    (
                        f'sum(rate(whisper_sessions_routed_total{{{NS}, pool="{pool}"}}[$__rate_interval]))',
                        "sessions routed/s",
                    ),
                    *quantiles(
                        "whisper_asr_queue_wait_seconds", f'{NS}, pool="{pool}"', "queue wait "
                    ),
                ],
                ((i % 3) * 8, y + 1 + (i // 3) * 8, 8, 8),
                description=f"The {pool} pool's ScaledObject (asr-worker-{pool}) scales on this "
                "stream's lag; queue wait in seconds.",
            )
        )
    return out


def panels() -> list[dict[str, Any]]:
    return [
        row(1, "Streams (redis_exporter, --check-streams)", 0),
        panel(
            2,
            "Lag: entries no worker has taken yet",
            [
                (
                    f'max by (stream, group) (redis_stream_group_lag{{stream=~"{STREAMS}"}})',
                    "{{stream}} / {{group}}",
                )
            ],
            (0, 1, 8, 8),
            description="XINFO GROUPS lag, what KEDA's lagCount triggers read.",
        ),
        panel(
            3,
            "Pending: entries in the workers' hands",
            [
                (
                    f'max by (stream, group) (redis_stream_group_messages_pending{{stream=~"{STREAMS}"}})',
                    "{{stream}} / {{group}}",
                )
            ],
            (8, 1, 8, 8),
            description="XPENDING count. For sessions/vad: sessions owned by VAD workers.",
        ),
        panel(
            4,
            "Stream length",
            [(f'max by (stream) (redis_stream_length{{stream=~"{STREAMS}"}})', "{{stream}}")],
            (16, 1, 8, 8),
        ),
        row(5, "Autoscaling (KEDA)", 9),
        panel(
            6,
            "KEDA scaler metric value",
            [
                (
                    f'keda_scaler_metrics_value{{scaledObject=~"{SCALED}"}}',
                    "{{scaledObject}} {{scaler}} {{metric}}",
                )
            ],
            (0, 10, 8, 8),
        ),
        panel(
            7,
            "Replicas: desired vs current",
            [
                (
                    f"kube_horizontalpodautoscaler_status_desired_replicas{{{NS}, {HPA}}}",
                    "desired {{horizontalpodautoscaler}}",
                ),
                (
                    f"kube_horizontalpodautoscaler_status_current_replicas{{{NS}, {HPA}}}",
                    "current {{horizontalpodautoscaler}}",
                ),
                (
                    f"kube_horizontalpodautoscaler_spec_max_replicas{{{NS}, {HPA}}}",
                    "max {{horizontalpodautoscaler}}",
                ),
            ],
            (8, 10, 8, 8),
        ),
        panel(
            8,
            "Scalers active / errors",
            [
                (
                    f'keda_scaler_active{{scaledObject=~"{SCALED}"}}',
                    "active {{scaledObject}} {{scaler}}",
                ),
                (
                    f'sum by (scaledObject) (rate(keda_scaler_detail_errors_total{{scaledObject=~"{SCALED}"}}[$__rate_interval]))',
                    "errors/s {{scaledObject}}",
                ),
            ],
            (16, 10, 8, 8),
        ),
        row(9, "Service", 18),
        panel(
            10,
            "Active sessions",
            [
                (f"sum(whisper_sessions_active{{{NS}}})", "all gateways"),
                (f"sum by (pod) (whisper_vad_sessions_owned{{{NS}}})", "owned by {{pod}}"),
            ],
            (0, 19, 8, 8),
        ),
        panel(11, "Final latency", quantiles("whisper_final_latency_seconds"), (8, 19, 8, 8), "s"),
        panel(
            12, "Partial latency", quantiles("whisper_partial_latency_seconds"), (16, 19, 8, 8), "s"
        ),
        panel(
            13,
            "ASR real-time factor",
            quantiles("whisper_asr_realtime_factor"),
            (0, 27, 8, 8),
            description="Processing seconds per audio second.",
        ),
        panel(
            14, "ASR queue wait", quantiles("whisper_asr_queue_wait_seconds"), (8, 27, 8, 8), "s"
        ),
        panel(
            15,
            "ASR processing time",
            quantiles("whisper_asr_processing_seconds"),
            (16, 27, 8, 8),
            "s",
        ),
        panel(
            16,
            "Errors",
            [
                (
                    f'sum by (pool, outcome) (rate(whisper_asr_jobs_total{{{NS}, outcome!="ok"}}[$__rate_interval]))',
                    "asr {{pool}} {{outcome}}",
                ),
                (
                    f'sum by (outcome) (rate(whisper_asr_partials_total{{{NS}, outcome="error"}}[$__rate_interval]))',
                    "partial {{outcome}}",
                ),
                (
                    f"sum by (code) (rate(whisper_frames_rejected_total{{{NS}}}[$__rate_interval]))",
                    "frames rejected {{code}}",
                ),
                (
                    f"sum by (reason) (rate(whisper_sessions_refused_total{{{NS}}}[$__rate_interval]))",
                    "sessions refused {{reason}}",
                ),
                (
                    f"sum(rate(whisper_vad_bad_messages_total{{{NS}}}[$__rate_interval]))",
                    "vad bad messages",
                ),
            ],
            (0, 35, 8, 8),
            "ops",
        ),
        panel(
            17,
            "Dead letters",
            [
                (
                    f"sum by (pool) (increase(whisper_asr_dead_letters_total{{{NS}}}[1h]))",
                    "{{pool}}: moved in the last hour",
                ),
                (
                    'max by (stream) (redis_stream_length{stream=~"asr:dead:.+"})',
                    "{{stream}} length",
                ),
            ],
            (8, 35, 8, 8),
        ),
        panel(
            18,
            "Throughput",
            [
                (
                    f"sum(rate(whisper_audio_bytes_total{{{NS}}}[$__rate_interval])) / 32000",
                    "audio s/s in",
                ),
                (
                    f"sum(rate(whisper_vad_audio_seconds_total{{{NS}}}[$__rate_interval]))",
                    "audio s/s through VAD",
                ),
                (
                    f"sum by (reason) (rate(whisper_vad_segments_total{{{NS}}}[$__rate_interval]))",
                    "segments/s {{reason}}",
                ),
                (
                    f"sum(rate(whisper_finals_sent_total{{{NS}}}[$__rate_interval]))",
                    "finals/s sent",
                ),
                (
                    f"sum(rate(whisper_backpressure_waits_total{{{NS}}}[$__rate_interval]))",
                    "back-pressure waits/s",
                ),
            ],
            (16, 35, 8, 8),
        ),
        panel(
            19,
            "Speculative finals",
            [
                (
                    f"sum by (outcome) (rate(whisper_vad_speculative_total{{{NS}}}[$__rate_interval]))",
                    "vad {{outcome}}",
                ),
                (
                    f"sum by (outcome) (rate(whisper_asr_speculative_total{{{NS}}}[$__rate_interval]))",
                    "asr {{outcome}}",
                ),
                (
                    f"sum by (outcome) (rate(whisper_asr_continuations_total{{{NS}}}[$__rate_interval]))",
                    "continuation {{outcome}}",
                ),
            ],
            (0, 43, 8, 8),
            "ops",
            "Utterances transcribed from 150 ms into a pause and published at the endpoint: "
            "committed vs void (speech resumed: wasted work) vs skipped (a final was waiting); "
            "mid-turn segments decoded as continuations of the one before, or alone.",
        ),
        *pool_panels(20, 51),
    ]


def gpu_panels(y: int) -> list[dict[str, Any]]:
    """GPU utilisation and memory of the ASR workers, from dcgm-exporter (the GPU operator's, with
    its Kubernetes pod mapping: the workload's namespace and pod labels)."""
    return [
        row(101, "GPU (NVIDIA DCGM exporter)", y),
        panel(
            102,
            "GPU utilisation",
            [
                (f"avg by (pod, gpu) (DCGM_FI_DEV_GPU_UTIL{{{ASR_PODS}}})", "{{pod}} gpu {{gpu}}"),
                (f"avg(DCGM_FI_DEV_GPU_UTIL{{{ASR_PODS}}})", "mean"),
            ],
            (0, y + 1, 12, 8),
            "percent",
            "Busy time of each ASR worker's GPU. Low while its pool's asr:jobs:<pool> has lag: the batch size or "
            "the CPU side (decoding, VAD) is the bottleneck; near 100 % with lag: add replicas.",
        ),
        panel(
            103,
            "GPU memory used",
            [(f"max by (pod, gpu) (DCGM_FI_DEV_FB_USED{{{ASR_PODS}}})", "{{pod}} gpu {{gpu}}")],
            (12, y + 1, 12, 8),
            "decmbytes",
            "Frame buffer in use (MiB): the model plus a batch of ASR_BATCH_SIZE windows.",
        ),
    ]


def dashboard(gpu: bool = False) -> dict[str, Any]:
    body = panels()
    if gpu:
        bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in body)
        body += gpu_panels(bottom)
    return {
        "uid": "whisper-streaming-gpu" if gpu else "whisper-streaming",
        "title": "Whisper Streaming (GPU)" if gpu else "Whisper Streaming",
        "description": "Stream lag and pending, KEDA scaling, latency, real-time factor, errors"
        + (", GPU utilisation." if gpu else "."),
        "tags": ["whisper-streaming", "keda", "redis"] + (["gpu"] if gpu else []),
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": "prometheus"},
                },
                {
                    "name": "namespace",
                    "type": "custom",
                    "query": "whisper-streaming",
                    "current": {"text": "whisper-streaming", "value": "whisper-streaming"},
                },
            ]
        },
        "annotations": {"list": []},
        "panels": body,
    }


def render(gpu: bool = False) -> str:
    return json.dumps(dashboard(gpu), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    for gpu, out in ((False, OUT), (True, GPU_OUT)):
        out.write_text(render(gpu))
        sys.stdout.write(f"wrote {out}\n")
