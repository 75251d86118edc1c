"""``make bench-languages`` (issue 15): every recording of ``other-languages/`` through stock
faster-whisper offline and through the pipeline at real-time pace, with the same model (the
bundled multilingual ``base`` unless ``--env ASR_MODEL=…``) and decoding settings.

- error per language: CER for Chinese, Japanese and Korean, WER otherwise, the same
  normalisation (whisper_streaming/evaluation.py), corpus-level per language;
- detection accuracy: offline, the language faster-whisper detects for the file; in the
  pipeline, each final's language (per utterance, with the sticky rule of workers/detection.py);
- translation into English: corpus chrF (sacrebleu) against ``translations.tsv``, offline
  (``task="translate"``, a second whole decode) and live (``translate=en``: the second decode
  shares the transcription's encoder output);
- speed: x real time of the decodes (audio seconds per second of ASR busy time), the cost of
  translation on top of transcription, and the service's CPU.

The pipeline runs each file twice, one session at a time: with ``translate=en`` and without, so
the translation's cost is the difference in ASR busy time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections import defaultdict
from typing import Any

import psutil

from bench import report
from bench.cli import add_stack_args, finish, meta, sigterm_as_interrupt, stack_config, wait_quiet
from bench.client import StreamRun, stream
from bench.corpus import audio, speech_regions, to_pcm16
from bench.offline import stock_settings
from bench.runs import DRAIN_TIMEOUT_S, wait_idle
from bench.stack import BenchStack, Sampler
from shared.settings import Settings
from shared.text import CER_LANGUAGES
from whisper_streaming.corpus import Recording, other_languages
from whisper_streaming.evaluation import error_rate
from workers.asr import DecodeOptions, encode_window, language_probabilities, load_model
from workers.detection import choose_language

TARGETS = (
    "streamed error within +1 point of offline per language on average; detection accuracy "
    "equal to offline; translation chrF within 2 points of offline"
)


def chrf(hypotheses: list[str], references: list[str]) -> float:
    import sacrebleu

    return round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 1)


# -- offline: stock faster-whisper ------------------------------------------------------------


def offline(recs: list[Recording], env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each file whole through ``WhisperModel.transcribe``: detection and transcription, then
    ``task="translate"`` (what a client of faster-whisper does for both)."""
    settings = stock_settings(env)
    opts = DecodeOptions.from_settings(settings)
    model: Any = load_model(settings)
    kwargs = {"beam_size": opts.beam_size, **opts.whisper_kwargs()}
    list(model.transcribe(audio(recs[0].path), **kwargs)[0])  # warm-up, not timed
    me = psutil.Process()
    out: dict[str, dict[str, Any]] = {}
    for rec in recs:
        x = audio(rec.path)
        cpu0, t0 = sum(me.cpu_times()[:2]), time.monotonic()
        segments, info = model.transcribe(x, word_timestamps=True, **kwargs)
        text = "".join(s.text for s in segments).strip()
        t1 = time.monotonic()
        english = "".join(s.text for s in model.transcribe(x, task="translate", **kwargs)[0])
        t2 = time.monotonic()
        out[rec.name] = {
            "text": text,
            "language": info.language,
            "language_probability": round(float(info.language_probability), 3),
            "english": english.strip(),
            "transcribe_s": round(t1 - t0, 2),
            "translate_s": round(t2 - t1, 2),
            "cpu_s": round(sum(me.cpu_times()[:2]) - cpu0, 2),
        }
        print(f"offline {rec.name}: {info.language} {out[rec.name]['transcribe_s']}s", flush=True)
    out["short_utterances"] = short_utterances(model, recs, settings)
    del model
    gc.collect()
    return out


SHORT_S = (1.0, 2.0)
"""Lengths of the short utterances cut from each recording's first speech."""


def short_utterances(model: Any, recs: list[Recording], settings: Settings) -> dict[str, Any]:
    """The detection rule on short utterances (workers/detection.py): the first 1 s and 2 s of
    each recording's speech, detected alone (what a per-utterance top-1 gives), with the rule in
    a session already in that language (stickiness keeps it), and with the rule in a session
    that was English before (does a real switch get through?)."""
    switch = settings.asr_language_switch_probability
    rows = []
    for rec in recs:
        x = audio(rec.path)
        onset = speech_regions(rec.path)[0].start if speech_regions(rec.path) else 0.0
        for seconds in SHORT_S:
            piece = x[int(onset * 16000) : int((onset + seconds) * 16000)]
            probs = language_probabilities(model, encode_window(model, piece)[1])
            rows.append({
                "file": rec.name, "language": rec.language, "seconds": seconds,
                "top": probs[0][0], "top_p": round(probs[0][1], 3),
                "kept": choose_language(probs, rec.language, switch)[0] == rec.language,
                "switched_from_en": choose_language(probs, "en", switch)[0] == rec.language,
            })  # fmt: skip
    result: dict[str, Any] = {"switch_probability": switch, "rows": rows}
    for seconds in SHORT_S:
        sel = [r for r in rows if r["seconds"] == seconds]
        foreign = [r for r in sel if r["language"] != "en"]
        result[f"{seconds:g}s"] = {
            "utterances": len(sel),
            "top1_correct": sum(r["top"] == r["language"] for r in sel),
            "rule_same_language_correct": sum(r["kept"] for r in sel),
            "rule_switch_from_en_correct": sum(r["switched_from_en"] for r in foreign),
            "switch_cases": len(foreign),
        }
    return result


# -- the pipeline at real-time pace -----------------------------------------------------------


def live(stack: BenchStack, recs: list[Recording], translate: bool) -> dict[str, Any]:
    """One session per file, one after the other, at real-time pace, language detected."""
    wait_idle(stack)
    extra = {"translate": "en"} if translate else {}

    async def go() -> list[StreamRun]:
        return [
            await stream(
                stack.ws_url, r.name, to_pcm16(audio(r.path)), speed=1.0, interim=False,
                language=None, extra=extra, timeout=DRAIN_TIMEOUT_S,
            )
            for r in recs
        ]  # fmt: skip

    with Sampler(stack) as sampler:
        runs = asyncio.run(go())
    files = {}
    for r, run in zip(recs, runs, strict=True):
        finals = sorted(
            (f for f in run.final_messages if f.get("text", "").strip()), key=lambda f: f["segment"]
        )
        files[r.name] = {
            "text": " ".join(f["text"].strip() for f in finals),
            "languages": [f["language"] for f in finals],
            "english": " ".join(
                (f.get("translation") or {}).get("text", "") for f in finals
            ).strip(),
            "asr_busy_s": round(sum(float(f.get("processing_time") or 0) for f in finals), 2),
            "errors": run.errors,
        }
        print(f"live translate={translate} {r.name}: {files[r.name]['languages']}", flush=True)
    return {"files": files, "resources": sampler.result()}


# -- summary ----------------------------------------------------------------------------------


def summarize(
    recs: list[Recording], off: dict[str, dict[str, Any]], translated: dict[str, Any],
    plain: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    seconds = {r.name: len(audio(r.path)) / 16000 for r in recs}
    by_lang: dict[str, list[Recording]] = defaultdict(list)
    for r in recs:
        by_lang[r.language].append(r)
    languages = []
    for lang, group in sorted(by_lang.items()):
        o = error_rate(lang, [(r.reference, off[r.name]["text"]) for r in group])
        p = error_rate(lang, [(r.reference, plain["files"][r.name]["text"]) for r in group])
        t = error_rate(lang, [(r.reference, translated["files"][r.name]["text"]) for r in group])
        languages.append({
            "language": lang, "files": len(group), "metric": "CER" if lang in CER_LANGUAGES else "WER",
            "audio_s": round(sum(seconds[r.name] for r in group), 1),
            "offline": round(o.wer * 100, 1), "pipeline": round(p.wer * 100, 1),
            "pipeline_translating": round(t.wer * 100, 1),
        })  # fmt: skip
    utterances = [
        (lang == r.language)
        for r in recs
        for lang in translated["files"][r.name]["languages"] + plain["files"][r.name]["languages"]
    ]
    with_ref = [r for r in recs if r.english]
    busy_plain = sum(plain["files"][r.name]["asr_busy_s"] for r in recs)
    busy_translated = sum(translated["files"][r.name]["asr_busy_s"] for r in recs)
    off_transcribe = sum(off[r.name]["transcribe_s"] for r in recs)
    off_translate = sum(off[r.name]["translate_s"] for r in recs)
    audio_s = sum(seconds.values())
    return {
        "short_utterances": {k: v for k, v in off["short_utterances"].items() if k != "rows"},
        "languages": languages,
        "mean_error": {
            "offline": round(sum(x["offline"] for x in languages) / len(languages), 1),
            "pipeline": round(sum(x["pipeline"] for x in languages) / len(languages), 1),
        },
        "detection": {
            "files": len(recs),
            "offline_files_correct": sum(off[r.name]["language"] == r.language for r in recs),
            "pipeline_files_correct": sum(
                all(lang == r.language for lang in plain["files"][r.name]["languages"])
                for r in recs
            ),
            "pipeline_utterances": len(utterances),
            "pipeline_utterances_correct": sum(utterances),
        },
        "chrf": {
            "files": len(with_ref),
            "offline": chrf(
                [off[r.name]["english"] for r in with_ref], [r.english or "" for r in with_ref]
            ),
            "pipeline": chrf(
                [translated["files"][r.name]["english"] for r in with_ref],
                [r.english or "" for r in with_ref],
            ),
        },  # fmt: skip
        "speed": {
            "audio_s": round(audio_s, 1),
            "offline_x_realtime": round(audio_s / off_transcribe, 2),
            "offline_translation_cost": round(off_translate / off_transcribe, 2),
            "pipeline_x_realtime": round(audio_s / busy_plain, 2) if busy_plain else None,
            "pipeline_translation_cost": (
                round((busy_translated - busy_plain) / busy_plain, 2) if busy_plain else None
            ),
            "offline_cores": round(
                sum(off[r.name]["cpu_s"] for r in recs) / (off_transcribe + off_translate), 2
            ),
            "pipeline_cores": plain["resources"]["cores_busy"],
            "pipeline_translating_cores": translated["resources"]["cores_busy"],
        },  # fmt: skip
    }


def render(out: dict[str, Any]) -> str:
    s = out["summary"]
    rows = [
        [x["language"], x["files"], x["audio_s"], x["metric"], x["offline"], x["pipeline"],
         x["pipeline_translating"], round(x["pipeline"] - x["offline"], 1)]
        for x in s["languages"]
    ]  # fmt: skip
    d, c, v = s["detection"], s["chrf"], s["speed"]
    mean_gap = s["mean_error"]["pipeline"] - s["mean_error"]["offline"]
    return "\n".join([
        "### Languages (`make bench-languages`)",
        "",
        report.provenance(out["meta"]),
        "",
        report.table(
            ["language", "files", "audio (s)", "metric", "offline %", "pipeline %",
             "pipeline, translating %", "difference (points)"],
            rows,
        ),
        "",
        f"- mean error over languages: offline {s['mean_error']['offline']} %, pipeline "
        f"{s['mean_error']['pipeline']} % (target: within +1 point: "
        f"{'**met**' if mean_gap <= 1.0 else '**not met**'}, {mean_gap:+.1f})",
        f"- detection: offline {d['offline_files_correct']}/{d['files']} files; pipeline "
        f"{d['pipeline_files_correct']}/{d['files']} files with every utterance right, "
        f"{d['pipeline_utterances_correct']}/{d['pipeline_utterances']} utterances (both runs)",
        f"- translation into English, corpus chrF over {c['files']} files: offline {c['offline']}, "
        f"live {c['pipeline']} (target: within 2 points: "
        f"{'**met**' if c['pipeline'] >= c['offline'] - 2 else '**not met**'})",
        f"- speed: offline {v['offline_x_realtime']}× real time (translation "
        f"+{round(v['offline_translation_cost'] * 100)} %: a second transcribe, encoder "
        f"included); pipeline ASR {v['pipeline_x_realtime']}× real time (translation "
        f"+{round((v['pipeline_translation_cost'] or 0) * 100)} %: a second decode of the same "
        f"encoder output); service CPU {v['pipeline_cores']} cores transcribing, "
        f"{v['pipeline_translating_cores']} translating, at real-time pace",
        *short_lines(s["short_utterances"]),
        "",
        f"Targets (issue 15): {TARGETS}.",
    ])  # fmt: skip


def short_lines(short: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Detection on short utterances (the first 1 s / 2 s of each file's speech, offline; "
        f"the sticky rule with `ASR_LANGUAGE_SWITCH_PROBABILITY` {short['switch_probability']}):",
        "",
    ]
    for key in ("1s", "2s"):
        v = short.get(key)
        if v:
            lines.append(
                f"- {key}: detected alone {v['top1_correct']}/{v['utterances']}; in a session "
                f"already in that language {v['rule_same_language_correct']}/{v['utterances']}; "
                f"switching from an English session {v['rule_switch_from_en_correct']}/"
                f"{v['switch_cases']}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.languages", description=__doc__)
    p.add_argument("--file", action="append", default=[], help="only this file (repeatable)")
    p.add_argument("--name", default="languages", help="JSON name; 'languages' updates the docs")
    p.add_argument("--no-docs", action="store_true")
    p.add_argument("--from-json", action="store_true", help="only re-render the docs section")
    add_stack_args(p)
    args = p.parse_args(argv)
    if args.from_json:
        report.replace_section("languages", render(json.loads((report.RESULTS / f"{args.name}.json").read_text())))  # fmt: skip
        return 0
    sigterm_as_interrupt()
    cfg = stack_config(args)
    cfg.env.setdefault("ASR_MODEL", "base")
    recs = [r for r in other_languages() if not args.file or r.name in args.file]
    if not recs:
        p.error(f"no such file in other-languages: {args.file}")
    quiet = wait_quiet(args)
    m = meta(cfg) | {"quiet": quiet}
    out: dict[str, Any] = {"meta": m, "targets": TARGETS}
    try:
        out["offline"] = offline(recs, cfg.env)
        with BenchStack(cfg, ready_timeout=300) as stack:
            asyncio.run(stream(stack.ws_url, "warm-up", to_pcm16(audio(recs[0].path)), speed=0,
                               interim=False, language=None, timeout=DRAIN_TIMEOUT_S))  # fmt: skip
            out["translated"] = live(stack, recs, translate=True)
            out["plain"] = live(stack, recs, translate=False)
    except KeyboardInterrupt:
        finish(m)
        m["interrupted"] = True
        print(f"interrupted; {report.save_json(args.name, out)}", file=sys.stderr)
        return 130
    finish(m)
    out["summary"] = summarize(recs, out["offline"], out["translated"], out["plain"])
    path = report.save_json(args.name, out)
    print(json.dumps(out["summary"], indent=1))
    print(f"wrote {path}")
    if not args.no_docs and args.name == "languages":
        report.replace_section("languages", render(out))
        print(f"updated {report.DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
