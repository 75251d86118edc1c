"""``make bench-tuning`` (issue 7 part 3): the same short measurement under several service
configurations, one at a time, for before/after figures: full-speed throughput and WER on the
held-out files, and final / first-partial latency at 1 and 4 real-time streams."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench import report
from bench.cli import add_quiet_args, finish, meta, sigterm_as_interrupt, wait_quiet
from bench.corpus import audio, librispeech, rotating_streams, to_pcm16
from bench.latency import warm_up
from bench.runs import full_speed, realtime
from bench.stack import BenchStack, StackConfig
from whisper_streaming.evaluation import wer

CONFIGS: dict[str, StackConfig] = {
    "defaults (1 ASR × 2 threads)": StackConfig(),
    "SPECULATIVE_FINALS=false": StackConfig(env={"SPECULATIVE_FINALS": "false"}),
    "VAD_SPEECH_PAD_END_MS=400 (the old end pad)": StackConfig(
        env={"VAD_SPEECH_PAD_END_MS": "400"}
    ),
    "VAD_FILE_MODE=false": StackConfig(env={"VAD_FILE_MODE": "false"}),
    "2 ASR workers × 1 thread": StackConfig(asr_workers=2, env={"ASR_CPU_THREADS": "1"}),
    "ASR_BEAM_SIZE=5 (auto is 1 on a CPU)": StackConfig(env={"ASR_BEAM_SIZE": "5"}),
    "ASR_TEMPERATURE_FALLBACK=true": StackConfig(env={"ASR_TEMPERATURE_FALLBACK": "true"}),
    "VAD_MIN_SILENCE_MS=300": StackConfig(env={"VAD_MIN_SILENCE_MS": "300"}),
}
"""Each row changes one thing from the defaults (the first row). Earlier rounds (2026-11-24:
prompting, coalescing, partial interval) are summarised in docs/benchmarks.md."""


def measure(cfg: StackConfig, levels: list[int], seconds: float) -> dict[str, Any]:
    utts = librispeech(held_out_only=True)
    with BenchStack(cfg) as stack:
        warm_up(stack, utts)
        items = [(u.utt_id, to_pcm16(audio(u.path))) for u in utts]
        speed, runs = full_speed(stack, items, concurrency=4)
        w = wer((u.reference, runs[u.utt_id].text) for u in utts)
        res: dict[str, Any] = {
            "stack": cfg.label(),
            "audio_s_per_s": speed["audio_s_per_s"],
            "wer_held_out": round(w.wer * 100, 2),
            "levels": [],
        }
        for n in levels:
            lv = realtime(stack, rotating_streams(utts, n, seconds), interim=True)
            lv.pop("texts", None)
            res["levels"].append(lv)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tuning", description=__doc__)
    p.add_argument("--only", action="append", default=[], help="config names (substring)")
    p.add_argument("--levels", default="1,4")
    p.add_argument("--seconds", type=float, default=35.0)
    p.add_argument("--name", default="tuning")
    add_quiet_args(p)
    args = p.parse_args(argv)
    sigterm_as_interrupt()
    m = meta(StackConfig())
    m["stack"] = "one configuration per row"
    levels = [int(x) for x in args.levels.split(",")]
    out: dict[str, Any] = {"meta": m, "configs": {}}
    try:
        for name, cfg in CONFIGS.items():
            if args.only and not any(o in name for o in args.only):
                continue
            print(f"{name} …", flush=True)
            quiet = wait_quiet(args)
            out["configs"][name] = measure(cfg, levels, args.seconds)
            out["configs"][name]["load_before"] = quiet["load_when_started"]
            out["configs"][name]["load_after"] = report_load()
            print(f"  {_line(out['configs'][name])}", flush=True)
    except KeyboardInterrupt:
        print("interrupted; service stopped", file=sys.stderr)
        return 130
    finish(m)
    path = report.save_json(args.name, out)
    print(f"wrote {path}")
    if args.name == "tuning":
        report.replace_section("tuning", render(out))
        print(f"updated {report.DOC}")
    return 0


def report_load() -> float:
    from bench.machine import load1

    return load1()


def _line(r: dict[str, Any]) -> str:
    lv = " ".join(
        f"[{x['streams']}: final {x['final_s']['p50']}/{x['final_s']['p95']} "
        f"partial {x['first_partial_s']['p50']}/{x['first_partial_s']['p95']}]"
        for x in r["levels"]
    )
    return f"{r['audio_s_per_s']} audio s/s, WER {r['wer_held_out']} %, {lv}"


def render(out: dict[str, Any]) -> str:
    header = ["configuration", "full speed (audio s/s)", "WER held-out %"]
    levels = sorted({lv["streams"] for r in out["configs"].values() for lv in r["levels"]})
    for n in levels:
        header += [f"{n} str. final p50/p95 (s)", f"{n} str. first partial p50/p95 (s)"]
    header.append("load before / after")
    rows = []
    for name, r in out["configs"].items():
        row: list[Any] = [name, r["audio_s_per_s"], r["wer_held_out"]]
        by = {lv["streams"]: lv for lv in r["levels"]}
        for n in levels:
            lv = by.get(n)
            if lv is None:
                row += [None, None]
                continue
            row += [
                f"{lv['final_s']['p50']} / {lv['final_s']['p95']}",
                f"{lv['first_partial_s']['p50']} / {lv['first_partial_s']['p95']}",
            ]
        row.append(f"{r.get('load_before')} / {r.get('load_after')}")
        rows.append(row)
    return "\n".join(
        [
            "### Tuning (`make bench-tuning`)",
            "",
            report.provenance(out["meta"]),
            "",
            report.table(header, rows),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
