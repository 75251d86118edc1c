"""``make bench`` (issue 7): the limit (offline faster-whisper), the pipeline at full speed and its
efficiency, the real-time concurrency sweep and headline capacity, accuracy against offline, and
the cost curve. Writes bench-results/bench.json, docs/benchmarks.md and docs/benchmarks-latency.png.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from bench import report
from bench.cli import (
    add_stack_args,
    finish,
    meta,
    sigterm_as_interrupt,
    stack_config,
    wait_quiet,
)
from bench.corpus import audio, build_stream, librispeech, rotating_streams, to_pcm16
from bench.latency import warm_up
from bench.offline import offline
from bench.runs import full_speed, realtime
from bench.stack import BenchStack
from bench.stats import linearity
from whisper_streaming.evaluation import wer

PLOT = report.DOC.parent / "benchmarks-latency.png"
CAPACITY_P95_S = 1.5
STOP_P95_S = 2.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--concurrency", type=int, default=4, help="sessions at once at full speed")
    p.add_argument("--max-streams", type=int, default=32, help="sweep stops here at the latest")
    p.add_argument(
        "--min-streams",
        type=int,
        default=4,
        help="the sweep goes at least this far (cost against stream count needs a few points)",
    )
    p.add_argument("--seconds", type=float, default=35.0, help="audio per real-time stream")
    p.add_argument("--lengths", default="30,60,120,240", help="cost curve: session lengths (s)")
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--name", default="bench", help="JSON name; 'bench' also updates the docs")
    add_stack_args(p)
    args = p.parse_args(argv)
    sigterm_as_interrupt()
    cfg = stack_config(args)
    quiet = wait_quiet(args)
    m = meta(cfg) | {"quiet": quiet}
    every = librispeech()
    held = {u.utt_id for u in librispeech(held_out_only=True)}
    out: dict[str, Any] = {"meta": m}
    try:
        print("offline faster-whisper …", flush=True)
        out["offline"], off_texts = offline(every, cfg.env)
        print(f"  {out['offline']}", flush=True)
        with BenchStack(cfg) as stack:
            warm_up(stack, every)
            print("pipeline at full speed …", flush=True)
            items = [(u.utt_id, to_pcm16(audio(u.path))) for u in every]
            out["pipeline"], runs = full_speed(stack, items, concurrency=args.concurrency)
            out["efficiency"] = round(
                out["pipeline"]["audio_s_per_s"] / out["offline"]["audio_s_per_s"], 3
            )
            print(f"  {out['pipeline']['audio_s_per_s']} audio s/s, efficiency {out['efficiency']}")
            out["accuracy"] = accuracy(every, held, off_texts, {k: r.text for k, r in runs.items()})
            print(f"  accuracy {out['accuracy']}", flush=True)
            if not args.skip_sweep:
                out["sweep"] = sweep(stack, args)
            out["cost_length"] = cost_vs_length(stack, every, args)
    except KeyboardInterrupt:
        print("interrupted; service stopped", file=sys.stderr)
        return 130
    out["capacity"] = capacity(out.get("sweep", []))
    out["linearity"] = linear_checks(out)
    finish(m)
    path = report.save_json(args.name, out)
    print(f"wrote {path}")
    if args.name == "bench":
        if out.get("sweep"):
            report.plot_latency(
                out["sweep"],
                PLOT,
                f"{m['command']} · {m['date']} · {report.describe_short(m)} · {m['stack']}",
            )
        report.replace_section("capacity", render(out))
        print(f"updated {report.DOC}")
    return 0


def accuracy(
    every: list[Any], held: set[str], offline: dict[str, str], streamed: dict[str, str]
) -> dict[str, Any]:
    def score(texts: dict[str, str], ids: set[str]) -> float:
        w = wer((u.reference, texts.get(u.utt_id, "")) for u in every if u.utt_id in ids)
        return round(w.wer * 100, 2)

    everything = {u.utt_id for u in every}
    res = {
        "held_out_files": len(held),
        "offline_wer_held_out": score(offline, held),
        "streamed_wer_held_out": score(streamed, held),
        "offline_wer_all": score(offline, everything),
        "streamed_wer_all": score(streamed, everything),
    }
    res["delta_held_out"] = round(res["streamed_wer_held_out"] - res["offline_wer_held_out"], 2)
    return res


def sweep(stack: BenchStack, args: argparse.Namespace) -> list[dict[str, Any]]:
    utts = librispeech(held_out_only=True)
    levels, n = [], 1
    while n <= args.max_streams:
        res = realtime(stack, rotating_streams(utts, n, args.seconds), interim=True)
        res.pop("texts", None)
        levels.append(res)
        print(
            f"  {n:>2} streams: final p50 {res['final_s']['p50']} p95 {res['final_s']['p95']}, "
            f"first partial p50 {res['first_partial_s']['p50']} p95 {res['first_partial_s']['p95']}, "
            f"cpu {res['resources']['cores_busy']} cores, WER {res['wer']}",
            flush=True,
        )
        p95 = res["final_s"]["p95"]
        over = p95 is None or p95 > STOP_P95_S or res["regions_without_final"]
        if over and n >= args.min_streams:
            break
        n *= 2
    return levels


def capacity(levels: list[dict[str, Any]]) -> int:
    ok = [lv["streams"] for lv in levels if (lv["final_s"]["p95"] or 1e9) <= CAPACITY_P95_S]
    return max(ok) if ok else 0


def cost_vs_length(stack: BenchStack, every: list[Any], args: argparse.Namespace) -> list[dict]:
    """One session of each length, alone, at full speed."""
    longest = max(float(x) for x in args.lengths.split(","))
    chosen, total = [], 0.0
    while total < longest:
        for u in every:
            chosen.append(u)
            total += len(audio(u.path)) / 16000 + 1.5
            if total >= longest:
                break
    full = build_stream("long", chosen).pcm
    full_speed(stack, [("warm", to_pcm16(full[: 10 * 16000]))], concurrency=1)
    rows = []
    for length in (float(x) for x in args.lengths.split(",")):
        pcm = to_pcm16(full[: int(length * 16000)].astype(np.float32))
        res, _ = full_speed(stack, [(f"len{int(length)}", pcm)], concurrency=1)
        r = res["resources"]
        rows.append(
            {
                "audio_s": length,
                "wall_s": res["wall_s"],
                "cpu_s": r["cpu_s_total"],
                "peak_rss_mib": r["peak_rss_mib_total"],
                "peak_redis_used_mib": r["peak_redis_used_mib"],
            }
        )
        print(f"  cost {rows[-1]}", flush=True)
    return rows


def linear_checks(out: dict[str, Any]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    cl = out.get("cost_length") or []
    if len(cl) >= 2:
        xs = [r["audio_s"] for r in cl]
        for key in ("wall_s", "cpu_s", "peak_rss_mib", "peak_redis_used_mib"):
            res[f"length_{key}"] = {
                k: round(v, 4) for k, v in linearity(xs, [r[key] for r in cl]).items()
            }
    sw = out.get("sweep") or []
    if len(sw) >= 2:
        xs = [lv["streams"] for lv in sw]
        for key, get in (
            ("cpu_s", lambda lv: lv["resources"]["cpu_s_total"]),
            ("peak_rss_mib", lambda lv: lv["resources"]["peak_rss_mib_total"]),
            ("peak_redis_used_mib", lambda lv: lv["resources"]["peak_redis_used_mib"]),
        ):
            res[f"streams_{key}"] = {
                k: round(v, 4) for k, v in linearity(xs, [get(lv) for lv in sw]).items()
            }
    return res


def render(out: dict[str, Any]) -> str:
    m, off, pipe = out["meta"], out["offline"], out["pipeline"]
    acc = out["accuracy"]
    lines = [
        "### Capacity and efficiency (`make bench`)",
        "",
        report.provenance(m),
        "",
        "**The limit and the pipeline at full speed** (all "
        f"{off['files']} LibriSpeech files, {off['audio_s']} s of audio; the pipeline gets every "
        f"file as its own session, {pipe['concurrency']} at a time, interim results off):",
        "",
        report.table(
            ["run", "audio s / wall s", "wall (s)", "CPU (s)", "cores busy"],
            [
                [
                    "offline faster-whisper (same model and decoding, stock 30 s windows)",
                    off["audio_s_per_s"],
                    off["wall_s"],
                    off["cpu_s"],
                    off["cores_busy"],
                ],
                [
                    "pipeline, speed 0",
                    pipe["audio_s_per_s"],
                    pipe["wall_s"],
                    pipe["resources"]["cpu_s_total"],
                    pipe["resources"]["cores_busy"],
                ],
            ],
        ),  # fmt: skip
        "",
        f"Efficiency pipeline / offline: **{out['efficiency']:.2f}** (target ≥ 0.9: "
        f"{'**met**' if out['efficiency'] >= 0.9 else '**not met**'}). "
        f"CPU by process at full speed (s): {_fmt_cpu(pipe['resources']['cpu_s'])}. The "
        f"pipeline cut the {off['files']} files into {pipe.get('finals')} utterances (one "
        f"Whisper call each, offline makes one per file); the ASR workers' own transcription "
        f"time summed to {pipe.get('asr_busy_s')} s of the {pipe['wall_s']} s wall.",
        "",
        f"**Accuracy** ({acc['held_out_files']} held-out LibriSpeech files, the same sessions): "
        f"offline WER {acc['offline_wer_held_out']} %, streamed {acc['streamed_wer_held_out']} % "
        f"(Δ {acc['delta_held_out']:+.2f}; target ≤ +0.5: "
        f"{'**met**' if acc['delta_held_out'] <= 0.5 else '**not met**'}). All 72 files, "
        f"training subset included: offline {acc['offline_wer_all']} %, streamed "
        f"{acc['streamed_wer_all']} %.",
        "",
    ]
    if out.get("sweep"):
        lines += [
            "**Real-time concurrency sweep** (N streams of ~35 s held-out speech, interim results "
            "on; stops once final p95 passes 2 s). Headline capacity (largest N with final "
            f"p95 ≤ 1.5 s): **{out['capacity']} stream(s)**.",
            "",
            report.table(report.LATENCY_HEADER, report.latency_rows(out["sweep"])),
            "",
            "![latency percentiles against concurrent streams](benchmarks-latency.png)",
            "",
        ]
    cl = out.get("cost_length") or []
    if cl:
        lines += [
            "**Cost against audio length** (one session alone, full speed):",
            "",
            report.table(
                [
                    "audio (s)",
                    "wall (s)",
                    "service CPU (s)",
                    "CPU s per audio s",
                    "peak service RSS (MiB)",
                    "peak Redis used (MiB)",
                ],
                [
                    [
                        r["audio_s"],
                        r["wall_s"],
                        r["cpu_s"],
                        round(r["cpu_s"] / r["audio_s"], 3),
                        r["peak_rss_mib"],
                        r["peak_redis_used_mib"],
                    ]
                    for r in cl
                ],
            ),  # fmt: skip
            "",
            "Linearity (least-squares line; worst point's distance from it relative to the "
            f"largest value): {_fmt_lin(out['linearity'])}.",
        ]
    return "\n".join(lines)


def _fmt_cpu(cpu: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items()))


def _fmt_lin(lin: dict[str, Any]) -> str:
    return "; ".join(
        f"{k.replace('_', ' ')}: slope {v['slope']:.3g}, off by {v['max_rel_dev'] * 100:.0f} %"
        for k, v in lin.items()
    )


if __name__ == "__main__":
    sys.exit(main())
