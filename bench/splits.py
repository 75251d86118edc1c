"""``python -m bench.splits`` (issue 18): what a mid-turn split costs in accuracy, and how much a
continuation decode would win back.

Every LibriSpeech utterance of the corpus (72 files: the tuning subset and the held-out one,
reported apart) is one speaker's turn followed by 1.5 s of silence. It goes through the service's
own segmenter with Silero and speculative tentatives (bench/turn_tuning.py), and the default
end-of-turn rule (workers/turns.py) ends the turn at a pause as the VAD worker does: once the
tentative's text (decoded as the ASR worker decodes it) is there, ``--decode-ms`` after the
tentative, and the rule says the turn is over. Each file is then decoded three ways:

- **unsplit**: the whole utterance as one segment (no early commit);
- **alone**: each cut by itself, as the service decodes it today;
- **continuation**: as the service decodes them (workers/continuation.py, ``ASR_CONTINUATION``;
  the service's context is 3 s, ``--left-s`` varies it): every cut after the first with the previous cut's last seconds of audio in
  front and that cut's final words (itself a continuation) as the decoder's forced prefix,
  keeping the words after it; when the decode does not begin with the prefix or stops short of
  the end of the audio (tiny.en may, after a prefix), the cut alone.

It prints WER and the mean decode time of a cut for each, writes ``bench-results/splits.json``
and, with the default name, the *Mid-turn splits* section of docs/benchmarks.md. Pure of the
service otherwise: no Redis, no workers.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from bench import report
from bench.corpus import audio, librispeech
from bench.machine import describe, offline_meta
from bench.turn_tuning import WINDOW, speculating_segmenter
from shared import metrics
from shared.audio import SAMPLE_RATE, float32_to_pcm16
from shared.schemas import AsrJob, Transcript
from shared.settings import Settings
from whisper_streaming.evaluation import wer
from workers.asr import DecodeOptions, Transcriber, load_model
from workers.continuation import Previous, context_for_next, tail_samples
from workers.segmenter import Segment, Segmenter, Tentative
from workers.turns import TurnConfig, end_of_turn

TAIL_S = 1.5

HEADER = ["files", "decode", "cuts", "WER %", "word errors / words", "decode per cut mean (s)",
          "continuations", "fell back to alone"]  # fmt: skip


class Decoder:
    def __init__(self, settings: Settings) -> None:
        self.model: Any = load_model(settings)
        self.opts = DecodeOptions.from_settings(settings)
        self.transcriber = Transcriber(self.model, self.opts)

    def job(self, x: np.ndarray, start_s: float, index: int = 0) -> AsrJob:
        return AsrJob(session_id="bench", segment=index, start=round(start_s, 3),
                      end=round(start_s + len(x) / SAMPLE_RATE, 3), pcm=float32_to_pcm16(x),
                      language="en")  # fmt: skip

    def alone(self, x: np.ndarray, start_s: float) -> Transcript:
        return self.transcriber.transcribe(self.job(x, start_s))


def continued() -> float:
    """How many continuations the service's decoder has kept so far (its metric)."""
    return float(metrics.ASR_CONTINUATIONS.labels("continued")._value.get())


def cuts(
    x: np.ndarray, vad: Any, settings: Settings, decoder: Decoder, decode_ms: float
) -> list[Segment]:
    """The segments the VAD worker would cut ``x`` into with smart endpointing."""
    seg = Segmenter(vad.stream(), speculating_segmenter(settings))
    rule = TurnConfig(
        endpoint_ms=settings.vad_min_silence_ms, complete_ms=settings.turn_complete_ms,
        short_ms=settings.turn_short_ms, short_s=settings.turn_short_s,
    )  # fmt: skip
    texts: dict[tuple[int, int], tuple[str, float]] = {}
    out: list[Segment] = []
    for i in range(0, len(x) - WINDOW + 1, WINDOW):
        for ev in seg.feed(x[i : i + WINDOW]):
            if isinstance(ev, Tentative):
                texts[(ev.index, ev.rev)] = (decoder.alone(ev.audio, 0.0).text, seg.pause_ms)
            elif isinstance(ev, Segment):
                out.append(ev)
        live = seg.live_tentative
        if live is not None and live in texts:
            text, at = texts[live]
            if seg.pause_ms >= at + decode_ms and end_of_turn(
                text, seg.pause_ms, seg.speech_s, rule
            ):
                out += [e for e in seg.end_turn() if isinstance(e, Segment)]
    return out + [e for e in seg.flush() if isinstance(e, Segment)]


def run(left: list[float], decode_ms: float) -> dict[str, Any]:
    from workers.vad_backends import make_vad

    settings = Settings(asr_device="cpu", asr_cpu_threads=1, asr_continuation=True)
    vad = make_vad(settings)
    decoder = Decoder(settings)
    held = {u.utt_id for u in librispeech(held_out_only=True)}
    files: list[dict[str, Any]] = []
    for k, u in enumerate(librispeech()):
        speech = audio(u.path)
        x = np.concatenate([speech, np.zeros(int(TAIL_S * SAMPLE_RATE), np.float32)])
        segs = cuts(x, vad, settings, decoder, decode_ms)
        t = time.perf_counter()
        f: dict[str, Any] = {"utt_id": u.utt_id, "held_out": u.utt_id in held,
                             "reference": u.reference, "cuts": len(segs),
                             "unsplit": decoder.alone(speech, 0.0).text}  # fmt: skip
        f["unsplit_s"] = time.perf_counter() - t
        alone, alone_s = [], 0.0
        for s in segs:
            t = time.perf_counter()
            alone.append(decoder.alone(s.audio, s.start / SAMPLE_RATE))
            alone_s += time.perf_counter() - t
        f["alone"], f["alone_s"] = " ".join(r.text for r in alone), alone_s
        for left_s in left:
            texts, spent, tried, fell = [], 0.0, 0, 0
            prev: tuple[Segment, Transcript] | None = None
            for i, (s, own) in enumerate(zip(segs, alone, strict=True)):
                job = decoder.job(s.audio, s.start / SAMPLE_RATE, i)
                context = None if prev is None else context_for_next(
                    Previous(
                        index=i - 1, end_s=prev[0].end / SAMPLE_RATE,
                        tail=float32_to_pcm16(prev[0].audio[-tail_samples(left_s) :]),
                        words=tuple(prev[1].words),
                    ),
                    i, job.start, left_s,
                )  # fmt: skip
                if context is None:
                    result = own
                else:
                    job.context_pcm, job.context_start = context.pcm, context.start_s
                    job.context_words = context.words
                    before = continued()
                    t = time.perf_counter()
                    result = decoder.transcriber.transcribe(job)
                    spent += time.perf_counter() - t - result.processing_time
                    tried += 1
                    fell += continued() == before
                spent += result.processing_time
                texts.append(result.text)
                prev = (s, result)
            f[f"continuation_{left_s:g}"] = " ".join(texts)
            f[f"continuation_{left_s:g}_s"] = spent
            f[f"continuation_{left_s:g}_tried"], f[f"continuation_{left_s:g}_fell"] = tried, fell
        files.append(f)
        print(f"{k + 1} {u.utt_id}: {len(segs)} cuts", file=sys.stderr, flush=True)
    return {"files": files, "left_s": left, "decode_ms": decode_ms}


def rows(out: dict[str, Any]) -> list[dict[str, Any]]:
    table = []
    for subset, pick in (("held-out (16)", True), ("tuning (56)", False), ("all (72)", None)):
        fs = [f for f in out["files"] if pick is None or f["held_out"] is pick]
        n_cuts = sum(f["cuts"] for f in fs)
        variants = [("unsplit", "unsplit", len(fs)), ("alone", "alone", n_cuts)]
        variants += [
            (f"continuation, {x:g} s", f"continuation_{x:g}", n_cuts) for x in out["left_s"]
        ]
        for label, key, n in variants:
            w = wer((f["reference"], f[key]) for f in fs)
            tried = sum(f.get(f"{key}_tried", 0) for f in fs)
            fell = sum(f.get(f"{key}_fell", 0) for f in fs)
            table.append({
                "files": subset, "decode": label, "cuts": n, "wer": round(100 * w.wer, 2),
                "errors": w.errors, "words": w.words,
                "decode_mean_s": round(sum(f[f"{key}_s"] for f in fs) / max(n, 1), 3),
                "continuations": tried if key.startswith("continuation") else "—",
                "fell_back": fell if key.startswith("continuation") else "—",
            })  # fmt: skip
    return table


def publish(out: dict[str, Any]) -> None:
    m = out["meta"]
    body = "\n".join([
        "#### Mid-turn splits (`python -m bench.splits`)", "",
        f"Command: `{m['command']}` · {m['date']} · commit {m['commit']} · "
        f"{describe(m['machine'])} · tiny.en int8, 1 thread, greedy, word timestamps; cuts by "
        f"the service's segmenter, Silero and the default smart rule, the tentative's text "
        f"{out['decode_ms']:g} ms after the tentative", "",
        report.table(HEADER, [[r["files"], r["decode"], r["cuts"], r["wer"],
                               f"{r['errors']} / {r['words']}", r["decode_mean_s"],
                               r["continuations"], r["fell_back"]] for r in out["rows"]]),
    ])  # fmt: skip
    report.replace_section("splits", body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--left-s", default="3,5", help="continuation: audio of the previous cut (s)")
    p.add_argument("--decode-ms", type=float, default=150.0,
                   help="the tentative's text is there this long after the tentative")  # fmt: skip
    p.add_argument("--name", default="splits")
    args = p.parse_args(argv)
    meta = offline_meta("bench.splits", threads=1)
    out = {"meta": meta} | run([float(x) for x in args.left_s.split(",")], args.decode_ms)
    out["rows"] = rows(out)
    for r in out["rows"]:
        print(r)
    print(f"wrote {report.save_json(args.name, out)}")
    if args.name == "splits":
        publish(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
