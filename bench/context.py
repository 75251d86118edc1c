"""``python -m bench.context``: how much of Whisper's 30 s window the encoder needs.

Every LibriSpeech utterance of the corpus (72 files) goes through the ASR worker's own
:class:`~workers.asr.Transcriber` (tiny.en int8, the worker's decoding settings, word timestamps,
no prompt) once per candidate ``ASR_CONTEXT_PAD_S`` (workers/context.py; 0 = the whole window,
as faster-whisper does), one file at a time, in this process. For each it reports the WER
against the references, the decode time per file (mean, p50, p95, max) and how many files needed
a second encoder pass (Whisper stopped short of the end of the audio and decoding went on from
its last timestamp). Writes ``bench-results/context.json`` and, with the default name, the
*Encoder context* section of docs/benchmarks.md. No service: no Redis, no workers.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
from faster_whisper import WhisperModel

from bench import report
from bench.corpus import audio, librispeech
from bench.machine import describe, git_rev, load1, machine, now
from shared.audio import float32_to_pcm16
from shared.schemas import AsrJob
from shared.settings import Settings
from whisper_streaming.evaluation import wer
from workers.asr import DecodeOptions, Transcriber, load_model

HEADER = ["ASR_CONTEXT_PAD_S", "WER %", "decode mean (s)", "p50 (s)", "p95 (s)", "max (s)",
          "files with a 2nd encoder pass"]  # fmt: skip


def sweep(pads: list[float], threads: int) -> list[dict[str, Any]]:
    settings = Settings(asr_cpu_threads=threads, asr_device="cpu")
    model: Any = load_model(settings)
    transcriber = Transcriber(model, DecodeOptions.from_settings(settings))
    utts = librispeech()
    jobs = [
        AsrJob(session_id="bench", segment=i, start=0.0, end=1.0, language="en",
               pcm=float32_to_pcm16(audio(u.path)))
        for i, u in enumerate(utts)
    ]  # fmt: skip
    passes: list[int] = []
    original = WhisperModel.encode

    def counted(self: Any, features: np.ndarray) -> Any:
        passes.append(1)
        return original(self, features)

    WhisperModel.encode = counted  # type: ignore[method-assign]
    transcriber.transcribe(jobs[0])  # warm-up, not timed
    rows = []
    try:
        for pad in pads:
            model.context_pad_s = pad
            times, pairs, second = [], [], 0
            for u, job in zip(utts, jobs, strict=True):
                passes.clear()
                t = time.perf_counter()
                out = transcriber.transcribe(job)
                times.append(time.perf_counter() - t)
                second += len(passes) > 1
                pairs.append((u.reference, out.text))
            ts = np.array(times)
            rows.append({
                "pad_s": pad, "wer": round(100 * wer(pairs).wer, 2),
                "mean_s": round(float(ts.mean()), 3), "p50_s": round(float(np.median(ts)), 3),
                "p95_s": round(float(np.percentile(ts, 95)), 3), "max_s": round(float(ts.max()), 3),
                "second_pass": second, "files": len(utts),
            })  # fmt: skip
            print(rows[-1], flush=True)
    finally:
        WhisperModel.encode = original  # type: ignore[method-assign]
    return rows


def publish(out: dict[str, Any]) -> None:
    m = out["meta"]
    rows = [
        [("0 (whole 30 s window)" if r["pad_s"] == 0 else f"{r['pad_s']:g}"), r["wer"],
         r["mean_s"], r["p50_s"], r["p95_s"], r["max_s"], r["second_pass"]]
        for r in out["rows"]
    ]  # fmt: skip
    body = "\n".join([
        "### Encoder context (`python -m bench.context`)", "",
        f"Command: `{m['command']}` · {m['date']} · commit {m['commit']} · "
        f"{describe(m['machine'])} · 1-min load average {m['load_start']} at start · "
        f"tiny.en int8, {m['threads']} thread(s), greedy, word timestamps, the 72 LibriSpeech "
        "files one by one (mean 8 s)", "",
        report.table(HEADER, rows), "",
        "The default is 3 s (workers/context.py): the first value whose WER is the whole "
        "window's, with a margin.",
    ])  # fmt: skip
    report.replace_section("context", body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pads", default="0,0.5,1,2,3,4,6", help="ASR_CONTEXT_PAD_S values (s)")
    p.add_argument("--threads", type=int, default=1, help="ASR_CPU_THREADS")
    p.add_argument("--name", default="context")
    args = p.parse_args(argv)
    meta = {"command": " ".join(["python -m bench.context", *sys.argv[1:]]), "date": now(),
            "commit": git_rev(), "machine": machine(), "load_start": load1(),
            "threads": args.threads}  # fmt: skip
    out = {"meta": meta, "rows": sweep([float(x) for x in args.pads.split(",")], args.threads)}
    print(f"wrote {report.save_json(args.name, out)}")
    if args.name == "context":
        publish(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
