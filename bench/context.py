"""``python -m bench.context``: how much of Whisper's 30 s window the encoder needs.

Every LibriSpeech utterance of the corpus (72 files) goes through the ASR worker's own
:class:`~workers.asr.Transcriber` (tiny.en int8, the worker's decoding settings, word timestamps,
no prompt) once per candidate ``ASR_CONTEXT_PAD_S`` (workers/context.py; 0 = the whole window,
as faster-whisper does), one file at a time, in this process. For each it reports the WER
against the references, the decode time per file (mean, p50, p95, max) and how many files needed
a second encoder pass (Whisper stopped short of the end of the audio and decoding went on from
its last timestamp), with and without the decode of a short tail (``--min-tails``); and the WER of the same files as a phone line carries them (8 kHz G.711
μ-law, decoded by the gateway's own decoder), where a short context failed first. Writes
``bench-results/context.json`` and, with the default name, the *Encoder context* section of
docs/benchmarks.md. No service: no Redis, no workers.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import msgspec
import numpy as np
from faster_whisper import WhisperModel

from bench import report
from bench.corpus import audio, librispeech
from bench.machine import describe, offline_meta
from gateway.encodings import MULAW_TO_PCM16, G711Decoder
from shared.audio import decode_file, float32_to_pcm16
from shared.schemas import AsrJob
from shared.settings import Settings
from whisper_streaming.evaluation import wer
from workers.asr import DecodeOptions, Transcriber, load_model
from workers.context import MIN_TAIL_S

HEADER = ["ASR_CONTEXT_PAD_S", "short tail (s)", "WER %", "decode mean (s)", "p50 (s)", "p95 (s)", "max (s)",
          "files with a 2nd encoder pass", "WER % on μ-law 8 kHz", "empty transcripts (μ-law)"]  # fmt: skip


def telephone(path: object) -> bytes:
    """A recording as a phone line carries it: 8 kHz, each sample the nearest G.711 μ-law code,
    back to 16 kHz PCM through the gateway's decoder (what a Twilio stream becomes)."""
    x = (np.clip(decode_file(path, 8000), -1, 1) * 32767).astype(np.int32)  # type: ignore[arg-type]
    order = np.argsort(MULAW_TO_PCM16, kind="stable")
    values = MULAW_TO_PCM16[order].astype(np.int32)
    i = np.clip(np.searchsorted(values, x), 1, len(values) - 1)
    nearer_below = np.abs(values[i - 1] - x) <= np.abs(values[i] - x)
    codes = order[np.where(nearer_below, i - 1, i)].astype(np.uint8)
    return G711Decoder("mulaw", 8000).push(codes.tobytes())


def sweep(pads: list[float], threads: int, tails: list[float]) -> list[dict[str, Any]]:
    settings = Settings(asr_cpu_threads=threads, asr_device="cpu")
    model: Any = load_model(settings)
    transcriber = Transcriber(model, DecodeOptions.from_settings(settings))
    utts = librispeech()
    jobs = [
        AsrJob(session_id="bench", segment=i, start=0.0, end=1.0, language="en",
               pcm=float32_to_pcm16(audio(u.path)))
        for i, u in enumerate(utts)
    ]  # fmt: skip
    phone = [
        msgspec.structs.replace(job, pcm=telephone(u.path))
        for u, job in zip(utts, jobs, strict=True)
    ]
    passes: list[int] = []
    original = WhisperModel.encode

    def counted(self: Any, features: np.ndarray) -> Any:
        passes.append(1)
        return original(self, features)

    WhisperModel.encode = counted  # type: ignore[method-assign]
    transcriber.transcribe(jobs[0])  # warm-up, not timed
    rows = []
    try:
        for pad, tail in [(pad, tail) for pad in pads for tail in tails]:
            model.context_pad_s = pad
            model.min_tail_s = tail
            times, pairs, second = [], [], 0
            for u, job in zip(utts, jobs, strict=True):
                passes.clear()
                t = time.perf_counter()
                out = transcriber.transcribe(job)
                times.append(time.perf_counter() - t)
                second += len(passes) > 1
                pairs.append((u.reference, out.text))
            narrow = [
                (u.reference, transcriber.transcribe(job).text)
                for u, job in zip(utts, phone, strict=True)
            ]
            ts = np.array(times)
            rows.append({
                "pad_s": pad, "min_tail_s": tail, "wer": round(100 * wer(pairs).wer, 2),
                "mean_s": round(float(ts.mean()), 3), "p50_s": round(float(np.median(ts)), 3),
                "p95_s": round(float(np.percentile(ts, 95)), 3), "max_s": round(float(ts.max()), 3),
                "second_pass": second, "files": len(utts),
                "wer_mulaw": round(100 * wer(narrow).wer, 2),
                "empty_mulaw": sum(1 for _, text in narrow if not text),
            })  # fmt: skip
            print(rows[-1], flush=True)
    finally:
        WhisperModel.encode = original  # type: ignore[method-assign]
    return rows


def publish(out: dict[str, Any]) -> None:
    m = out["meta"]
    rows = [
        [("0 (whole 30 s window)" if r["pad_s"] == 0 else f"{r['pad_s']:g}"),
         (f"{r['min_tail_s']:g}" if r.get("min_tail_s") else "decoded"), r["wer"],
         r["mean_s"], r["p50_s"], r["p95_s"], r["max_s"], r["second_pass"], r["wer_mulaw"],
         r["empty_mulaw"]]
        for r in out["rows"]
    ]  # fmt: skip
    body = "\n".join([
        "### Encoder context (`python -m bench.context`)", "",
        f"Command: `{m['command']}` · {m['date']} · commit {m['commit']} · "
        f"{describe(m['machine'])} · 1-min load average {m['load_start']} at start · "
        f"tiny.en int8, {m['threads']} thread(s), greedy, word timestamps, the 72 LibriSpeech "
        "files one by one (mean 8 s)", "",
        report.table(HEADER, rows), "",
        "The default is 5 s with a floor of 10 s (workers/context.py, `MIN_CONTEXT_FRAMES`). "
        "The μ-law column decodes narrowband audio in the fitted context on purpose: the "
        "service itself gives narrowband sessions (client audio under 16 kHz) whole windows.",
    ])  # fmt: skip
    report.replace_section("context", body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pads", default="0,0.5,1,2,3,4,6", help="ASR_CONTEXT_PAD_S values (s)")
    p.add_argument("--threads", type=int, default=1, help="ASR_CPU_THREADS")
    p.add_argument(
        "--min-tails",
        default=str(MIN_TAIL_S),
        help="a decode ends when less than this is left after its last timestamp (s; 0: "
        "faster-whisper's own seeking decodes every tail), comma-separated (workers/context.py)",
    )
    p.add_argument("--name", default="context")
    args = p.parse_args(argv)
    meta = offline_meta("bench.context", threads=args.threads)
    out = {"meta": meta, "rows": sweep(
        [float(x) for x in args.pads.split(",")], args.threads,
        [float(x) for x in args.min_tails.split(",")],
    )}  # fmt: skip
    print(f"wrote {report.save_json(args.name, out)}")
    if args.name == "context":
        publish(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
