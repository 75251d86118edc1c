"""``python -m bench.end_pad`` (issue 18): what the quiet pause's early tentative costs in WER.

Every LibriSpeech utterance of the corpus (72 files, 1.5 s of silence after each) goes through
the VAD worker's own segmenter with the service's Silero VAD, speculative tentatives on, once per
candidate (``VAD_SPEECH_PAD_END_MS``, ``VAD_QUIET_PAD_END_MS``) and endpoint (500 ms, the
default; 250 ms, which cuts the short segments smart endpointing makes). Each closed segment's
audio is transcribed as the ASR worker would (workers/asr.py: tiny.en, the worker's decoding,
no prompt); the segments' texts joined make the file's hypothesis. For each candidate it reports
the WER, how many segments ended at the quiet pad (their speculative final started
``VAD_SPEECH_PAD_END_MS - VAD_QUIET_PAD_END_MS`` sooner) and how many early tentatives were made
void by a tail that was not quiet (a decode spent for nothing). Writes
``bench-results/end_pad.json`` and, with the default name, the *End pad* section of
docs/benchmarks.md. No service: no Redis, no workers.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from bench import report
from bench.corpus import audio, librispeech
from bench.machine import describe, offline_meta
from bench.turn_tuning import speculating_segmenter
from shared.audio import SAMPLE_RATE, float32_to_pcm16
from shared.schemas import AsrJob
from shared.settings import Settings
from whisper_streaming.evaluation import wer
from workers.segmenter import Segment, Segmenter, SegmenterConfig, Tentative, TentativeVoid

TAIL_S = 1.5
HEADER = ["VAD_SPEECH_PAD_END_MS", "VAD_QUIET_PAD_END_MS", "endpoint (ms)", "segments",
          "ended at the quiet pad", "early tentatives void", "WER %"]  # fmt: skip


def segments(x: np.ndarray, vad: Any, cfg: SegmenterConfig) -> tuple[list[Segment], int, int]:
    """The file's closed segments; how many ended at a quiet tentative; early ones made void."""
    seg = Segmenter(vad.stream(), cfg)
    out: list[Segment] = []
    quiet: set[tuple[int, int]] = set()
    void = 0
    w = cfg.window
    for i in range(0, len(x) - w + 1, w):
        for ev in seg.feed(x[i : i + w]):
            if isinstance(ev, Tentative) and ev.quiet:
                quiet.add((ev.index, ev.rev))
            elif isinstance(ev, TentativeVoid) and (ev.index, ev.rev) in quiet:
                void += 1
            elif isinstance(ev, Segment):
                out.append(ev)
    out += [ev for ev in seg.flush() if isinstance(ev, Segment)]
    kept = sum(1 for s in out if (s.index, s.tentative_rev) in quiet)
    return out, kept, void


def evaluate(pads: list[tuple[int, int]], endpoints: list[int]) -> list[dict[str, Any]]:
    from workers.asr import DecodeOptions, Transcriber, load_model
    from workers.vad_backends import make_vad

    settings = Settings()
    vad = make_vad(settings)
    transcriber = Transcriber(load_model(settings), DecodeOptions.from_settings(settings))
    utts = librispeech()
    tail = np.zeros(int(TAIL_S * SAMPLE_RATE), np.float32)
    files = [(u.reference, np.concatenate([audio(u.path), tail])) for u in utts]

    def text(s: Segment) -> str:
        job = AsrJob(session_id="bench", segment=s.index, start=0.0, end=len(s.audio) / SAMPLE_RATE,
                     pcm=float32_to_pcm16(s.audio), language="en")  # fmt: skip
        return transcriber.transcribe(job, None).text.strip()

    rows = []
    for endpoint in endpoints:
        for pad_end, quiet in pads:
            cfg = speculating_segmenter(
                settings, min_silence_ms=endpoint, speech_pad_end_ms=pad_end,
                quiet_pad_end_ms=quiet,
            )  # fmt: skip
            pairs, n, kept, void = [], 0, 0, 0
            for ref, x in files:
                segs, k, v = segments(x, vad, cfg)
                pairs.append((ref, " ".join(t for t in map(text, segs) if t)))
                n, kept, void = n + len(segs), kept + k, void + v
            rows.append({"pad_end_ms": pad_end, "quiet_pad_end_ms": quiet, "endpoint_ms": endpoint,
                         "segments": n, "quiet_kept": kept, "quiet_void": void,
                         "wer": round(wer(pairs).wer * 100, 2)})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def publish(out: dict[str, Any]) -> None:
    m = out["meta"]
    rows = [
        [r["pad_end_ms"], r["quiet_pad_end_ms"] or "0 (off)", r["endpoint_ms"], r["segments"],
         r["quiet_kept"], r["quiet_void"], r["wer"]]
        for r in out["rows"]
    ]  # fmt: skip
    body = "\n".join([
        "### End pad of a quiet pause (`python -m bench.end_pad`)", "",
        f"Command: `{m['command']}` · {m['date']} · commit {m['commit']} · "
        f"{describe(m['machine'])} · 1-min load average {m['load_start']} at start · "
        "the service's segmenter and Silero VAD, tiny.en int8 as the ASR worker decodes, the 72 "
        "LibriSpeech files with 1.5 s of silence after each", "",
        report.table(HEADER, rows), "",
        "A segment that ends at the quiet pad had its speculative final under way "
        "86 ms sooner (64 instead of 150 ms into the pause; docs/architecture.md, *A quiet pause starts sooner*).",
    ])  # fmt: skip
    report.replace_section("end-pad", body)


def pair(v: str) -> tuple[int, int]:
    a, b = v.split(":")
    return int(a), int(b)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.end_pad", description=__doc__)
    p.add_argument(
        "--pads",
        default="150:0,150:64,64:0",
        help="VAD_SPEECH_PAD_END_MS:VAD_QUIET_PAD_END_MS candidates, comma-separated",
    )
    p.add_argument("--endpoints", default="500,250", help="VAD_MIN_SILENCE_MS values")
    p.add_argument("--name", default="end_pad")
    args = p.parse_args(argv)
    meta = offline_meta("bench.end_pad")
    pads = [pair(v) for v in args.pads.split(",") if v]
    endpoints = [int(v) for v in args.endpoints.split(",") if v]
    out = {"meta": meta, "rows": evaluate(pads, endpoints)}
    print(f"wrote {report.save_json(args.name, out)}")
    if args.name == "end_pad":
        publish(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
