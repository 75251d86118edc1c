"""``make bench-latency`` (issue 3): first-partial and final latency over
``/v1/listen`` (Deepgram's live protocol) at real-time pace, at 1, 2, 4 and 8
concurrent streams, and WER with interim results on and off; and (issues 17 and
18) the turn-taking rows: smart and fixed endpointing at 1 and 4 streams, each
waited on and with the client's ``Finalize`` ``--finalize-after-ms`` after every
end of speech, eager end-of-turn latency, mid-turn splits and WER against
offline. Each stream is ~35 s of held-out LibriSpeech utterances joined with 1.5 s of silence (the
turn-taking rows: ~110 s, every held-out utterance, ``--turn-seconds``); latency is
measured from when the client sent the ground-truth onset / end of speech (bench/corpus.py) to
when the first partial / the final of that speech arrived.

``--endpoint realtime`` measures the same streams through OpenAI's Realtime transcription
endpoint (``/v1/realtime?intent=transcription``, 24 kHz PCM appends, server VAD): how long after
``input_audio_buffer.speech_stopped`` each item's ``...transcription.completed`` arrives
(bench/realtime_client.py); its results go to ``latency-realtime.json`` and their own section.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bench import report
from bench.cli import (
    add_stack_args,
    finish,
    meta,
    sigterm_as_interrupt,
    stack_config,
    wait_quiet,
)
from bench.corpus import librispeech, rotating_streams, to_pcm16
from bench.offline import offline
from bench.realtime_client import REALTIME_HEADER, realtime_endpoint, realtime_rows
from bench.runs import full_speed, realtime, wait_idle
from bench.stack import BenchStack
from whisper_streaming.evaluation import wer

PLOT = report.DOC.parent / "benchmarks-latency-native.png"
TARGETS = "one stream: first partial p50 ≤ 1.0 s, final p50 ≤ 0.6 s, final p95 ≤ 1.0 s; four streams: final p95 ≤ 1.5 s"


def warm_up(stack: BenchStack, utts: list[Any]) -> None:
    """One short session through every stage, so model loading and first-call costs are not
    counted."""
    full_speed(stack, [(u.utt_id, to_pcm16(_audio(u))) for u in utts[:2]], concurrency=2)


def _audio(u: Any) -> Any:
    from bench.corpus import audio

    return audio(u.path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    p.add_argument("--levels", default="1,2,4,8", help="concurrent streams, comma-separated")
    p.add_argument("--off-levels", default="1,4", help="levels repeated with interim results off")
    p.add_argument(
        "--turn-modes",
        default="smart,300,500",
        help="turn-taking rows: the sessions' endpointing (smart or ms), comma-separated",
    )
    p.add_argument("--turn-levels", default="1,4", help="turn-taking rows: concurrent streams")
    p.add_argument(
        "--finalize-after-ms",
        type=int,
        default=200,
        help="turn-taking rows: the client sends finalize this long after each end of speech",
    )
    p.add_argument("--seconds", type=float, default=35.0, help="audio per stream")
    p.add_argument(
        "--turn-seconds",
        type=float,
        default=110.0,
        help="turn-taking rows: audio per stream (110 s: all 16 held-out utterances, so one "
        "stream's p95 is not its slowest of six)",
    )
    p.add_argument("--chunk-ms", type=int, default=20, help="audio per WebSocket frame")
    p.add_argument(
        "--endpoint",
        choices=("native", "realtime"),
        default="native",
        help="native: /v1/listen; realtime: OpenAI's /v1/realtime (completed after speech_stopped)",
    )
    p.add_argument("--name", default="latency", help="JSON name; 'latency' also updates the docs")
    p.add_argument("--no-docs", action="store_true")
    p.add_argument(
        "--from-json", action="store_true", help="only re-render the docs from the saved JSON"
    )
    add_stack_args(p)  # what `make run` starts
    args = p.parse_args(argv)
    if args.endpoint == "realtime":
        return main_realtime(args)
    if args.from_json:
        publish(json.loads((report.RESULTS / f"{args.name}.json").read_text()))
        return 0
    sigterm_as_interrupt()
    cfg = stack_config(args)
    quiet = wait_quiet(args)
    m = meta(cfg) | {"quiet": quiet}
    utts = librispeech(held_out_only=True)
    levels = [int(x) for x in args.levels.split(",") if x]
    off_levels = [int(x) for x in args.off_levels.split(",") if x]
    turn_modes = [x for x in args.turn_modes.split(",") if x]
    turn_levels = [int(x) for x in args.turn_levels.split(",") if x]
    out: dict[str, Any] = {
        "meta": m, "targets": TARGETS, "levels": [], "interim_off": [], "turns": [],
    }  # fmt: skip
    try:
        with BenchStack(cfg) as stack:
            warm_up(stack, utts)
            for n in levels:
                streams = rotating_streams(utts, n, args.seconds)
                res = realtime(stack, streams, interim=True, chunk_ms=args.chunk_ms)
                out["levels"].append(res)
                _progress(res)
            for n in off_levels:
                streams = rotating_streams(utts, n, args.seconds)
                res = realtime(stack, streams, interim=False, chunk_ms=args.chunk_ms)
                out["interim_off"].append(res)
                _progress(res)
            for mode in turn_modes:
                for n in turn_levels:
                    streams = rotating_streams(utts, n, args.turn_seconds)
                    opts = {"endpointing": mode, "eager_eot": "true"}
                    waited = realtime(stack, streams, chunk_ms=args.chunk_ms, options=opts)
                    asked = realtime(
                        stack, streams, chunk_ms=args.chunk_ms, options=opts,
                        finalize_after_s=args.finalize_after_ms / 1000,
                    )  # fmt: skip
                    row = turn_row(mode, waited, asked)
                    out["turns"].append(row)
                    print(f"turns {row}", flush=True)
        if out["turns"]:  # the same utterances, offline: the accuracy to compare with
            used = {u.utt_id: u for n in turn_levels for s in rotating_streams(utts, n, args.turn_seconds) for u in s.utterances}  # fmt: skip
            _info, texts = offline(list(used.values()), cfg.env)
            for row in out["turns"]:
                row |= offline_wer(utts, row["streams"], args.turn_seconds, texts)
    except KeyboardInterrupt:
        finish(m)
        m["interrupted"] = True
        print(f"interrupted; service stopped; {report.save_json(args.name, out)}", file=sys.stderr)
        return 130
    finish(m)
    path = report.save_json(args.name, out)
    print(f"wrote {path}")
    if not args.no_docs and args.name == "latency":
        publish(out)
    return 0


def main_realtime(args: argparse.Namespace) -> int:
    name = "latency-realtime" if args.name == "latency" else args.name
    if args.from_json:
        publish_realtime(json.loads((report.RESULTS / f"{name}.json").read_text()))
        return 0
    sigterm_as_interrupt()
    cfg = stack_config(args)
    m = meta(cfg) | {"quiet": wait_quiet(args)}
    utts = librispeech(held_out_only=True)
    out: dict[str, Any] = {"meta": m, "levels": []}
    try:
        with BenchStack(cfg) as stack:
            warm_up(stack, utts)
            for n in [int(x) for x in args.levels.split(",") if x]:
                streams = rotating_streams(utts, n, args.seconds)
                idle = wait_idle(stack)
                pcms = [to_pcm16(s.pcm) for s in streams]
                res = realtime_endpoint(stack, streams, pcms, chunk_ms=args.chunk_ms)
                res["waited_for_idle_s"] = idle
                out["levels"].append(res)
                lat = res["completed_after_stopped_s"]
                print(
                    f"{n:>2} streams (realtime): completed after speech_stopped p50 {lat['p50']} "
                    f"p95 {lat['p95']} (n={lat['n']}); {res['items_without_completed']} of "
                    f"{res['items']} items not completed; WER {res['wer']}%; "
                    f"lag {res['client_max_send_lag_s']}s; errors {len(res['errors'])}",
                    flush=True,
                )
    except KeyboardInterrupt:
        finish(m)
        m["interrupted"] = True
        print(f"interrupted; service stopped; {report.save_json(name, out)}", file=sys.stderr)
        return 130
    finish(m)
    print(f"wrote {report.save_json(name, out)}")
    if not args.no_docs and name == "latency-realtime":
        publish_realtime(out)
    return 0


def publish_realtime(out: dict[str, Any]) -> None:
    m = out["meta"]
    lines = [
        "### `completed` after `speech_stopped` through the OpenAI Realtime endpoint "
        "(`python -m bench.latency --endpoint realtime --levels 1,4`)",
        "",
        report.provenance(m),
        "",
        report.table(REALTIME_HEADER, realtime_rows(out["levels"])),
        "",
        "24 kHz PCM appends of 20 ms at real-time pace, `server_vad` with "
        "`silence_duration_ms` 500; the clock runs on the client from the arrival of "
        "`input_audio_buffer.speech_stopped` to that of the item's `completed`.",
    ]
    report.replace_section("latency-realtime", "\n".join(lines))
    print(f"updated {report.DOC}")


def turn_row(mode: str, waited: dict[str, Any], asked: dict[str, Any]) -> dict[str, Any]:
    """One turn-taking row: the same streams waited on, and finalized by the client."""
    keep = ("final_s", "eager_s", "splits_per_100_turns", "turns", "mid_turn_splits", "wer",
            "wer_errors", "wer_words")  # fmt: skip
    return {
        "endpointing": mode,
        "streams": waited["streams"],
        **{k: waited[k] for k in keep},
        "turns_resumed": waited["turns_resumed"],
        "after_finalize_s": asked["after_finalize_s"],
        "finalize_final_s": asked["final_s"],
        "finalize_wer": asked["wer"],
        "errors": waited["errors"] + asked["errors"],
        "resources": {"waited": waited["resources"], "finalized": asked["resources"]},
    }


def offline_wer(utts: list[Any], n: int, seconds: float, texts: dict[str, str]) -> dict[str, Any]:
    """The same streams' WER offline (``offline_wer``, %) and its word errors: at 241 words a
    stream, one word is 0.4 points, so the table shows the counts too."""
    streams = rotating_streams(utts, n, seconds)
    pairs = [(s.reference, " ".join(texts[u.utt_id] for u in s.utterances)) for s in streams]
    w = wer(pairs)
    return {"offline_wer": round(w.wer * 100, 2), "offline_errors": w.errors}


TURN_HEADER = [
    "endpointing", "streams", "utterances", "final after end of speech p50 / p95 (s)",
    "final after finalize p50 / p95 (s)", "eager end of turn p50 / p95 (s)",
    "mid-turn splits / 100 turns", "WER % (offline)", "word errors (offline) / words",
]  # fmt: skip


def turn_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    def pair(x: dict[str, Any]) -> str:
        return f"{x['p50']} / {x['p95']}"

    return [
        [
            r["endpointing"], r["streams"], r["final_s"]["n"], pair(r["final_s"]),
            pair(r["after_finalize_s"]),
            pair(r["eager_s"]) if r["eager_s"]["n"] else "—", r["splits_per_100_turns"],
            f"{r['wer']} ({r.get('offline_wer', '—')})",
            f"{r.get('wer_errors', '—')} ({r.get('offline_errors', '—')}) / {r.get('wer_words', '—')}",
        ]
        for r in rows
    ]  # fmt: skip


def publish(out: dict[str, Any]) -> None:
    m = out["meta"]
    title = f"{m['command']} · {m['date']} · {report.describe_short(m)}"
    report.plot_latency(out["levels"], PLOT, title)
    report.replace_section("latency", render(out))
    print(f"updated {report.DOC} and {PLOT}")


def _progress(res: dict[str, Any]) -> None:
    print(
        f"{res['streams']:>2} streams interim={res['interim']} finalize={res.get('finalize')}: "
        "first partial "
        f"p50 {res['first_partial_s']['p50']} p95 {res['first_partial_s']['p95']}; final "
        f"p50 {res['final_s']['p50']} p95 {res['final_s']['p95']}; WER {res['wer']}%; "
        f"cpu {res['resources']['cores_busy']} cores; lag {res['client_max_send_lag_s']}s",
        flush=True,
    )


def render(out: dict[str, Any]) -> str:
    m = out["meta"]
    rows = report.latency_rows(out["levels"] + out["interim_off"])
    by_n = {lv["streams"]: lv for lv in out["levels"]}
    one, four = by_n.get(1), by_n.get(4)
    lines = [
        "### Latency at real-time pace (`make bench-latency`)",
        "",
        report.provenance(m),
        "",
        report.table(report.LATENCY_HEADER, rows),
        "",
        "Targets (issue 3):",
        "",
        f"- one stream, first partial p50 ≤ 1.0 s: {report.met(one and one['first_partial_s']['p50'], 1.0)}",
        f"- one stream, final p50 ≤ 0.6 s: {report.met(one and one['final_s']['p50'], 0.6)}",
        f"- one stream, final p95 ≤ 1.0 s: {report.met(one and one['final_s']['p95'], 1.0)}",
        f"- four streams, final p95 ≤ 1.5 s: {report.met(four and four['final_s']['p95'], 1.5)}",
        "",
        *turn_section(out.get("turns", [])),
        "![latency percentiles against concurrent streams, interim results on]"
        "(benchmarks-latency-native.png)",
        "",
    ]
    on = {lv["streams"]: lv for lv in out["levels"]}
    for off in out["interim_off"]:
        n = off["streams"]
        if n in on:
            same = on[n]["texts"] == off["texts"]
            lines.append(
                f"- WER with partials on = off at {n} stream(s): {on[n]['wer']} % on, "
                f"{off['wer']} % off — {'equal' if on[n]['wer'] == off['wer'] else '**different**'}"
                f" ({'identical' if same else 'not identical'} transcripts)"
            )
    return "\n".join(lines)


def turn_section(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    by = {(r["endpointing"], r["streams"]): r for r in rows}
    one, four = by.get(("smart", 1)), by.get(("smart", 4))
    return [
        "#### Turn-taking (issue 18): smart and fixed endpointing, waited on and finalized",
        "",
        "Each row streams the same audio (every held-out utterance in each stream, "
        "`--turn-seconds`) twice at real-time pace: once waiting for the finals, "
        "once with the client sending `finalize` "
        "200 ms after every true end of speech (a voice agent's own VAD). `eager_eot=true` in "
        "both. A mid-turn split is a final that ends inside an utterance (docs/vad.md, *End of "
        "turn*).",
        "",
        report.table(TURN_HEADER, turn_rows(rows)),
        "",
        "Targets (issue 18, smart):",
        "",
        f"- one stream, final p50 ≤ 0.35 s: {report.met(one and one['final_s']['p50'], 0.35)}",
        f"- one stream, final p95 ≤ 0.6 s: {report.met(one and one['final_s']['p95'], 0.6)}",
        f"- four streams, final p95 ≤ 1.0 s: {report.met(four and four['final_s']['p95'], 1.0)}",
        f"- one stream, after finalize p95 ≤ 0.15 s: "
        f"{report.met(one and one['after_finalize_s']['p95'], 0.15)}",
        f"- four streams, after finalize p95 ≤ 0.15 s: "
        f"{report.met(four and four['after_finalize_s']['p95'], 0.15)}",
        *(
            f"- WER within +0.5 of offline at {r['streams']} stream(s): "
            + ("**met**" if r["wer"] <= r["offline_wer"] + 0.5 else "**not met**")
            + f" ({r['wer']} % against {r['offline_wer']} %)"
            for r in (one, four)
            if r and "offline_wer" in r
        ),
        "",
    ]


if __name__ == "__main__":
    sys.exit(main())
