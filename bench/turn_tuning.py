"""``python -m bench.turn_tuning`` (issue 18): how the end-of-turn rule's pauses were chosen.

Every LibriSpeech utterance of the tuning subset (train-clean-5: the latency benchmark streams
the held-out subsets) is one speaker's turn, followed by silence. It goes through the service's
own segmenter with the service's Silero VAD and speculative tentatives (150 ms into each pause);
each tentative's audio is transcribed as the ASR worker would (workers/asr.py, tiny.en, no
prompt). A tentative is either the **end** of the turn (its pause runs into the silence after the
utterance) or **mid**-turn (the speaker went on after a pause of a known length). For each
candidate :class:`~workers.turns.TurnConfig` it counts:

- ``splits``: mid-turn pauses the rule would end (pause ≥ the rule's pause for that text), per
  100 turns — pauses past the 500 ms endpoint are counted apart (every rule splits there);
- ``end_pause_ms``: the mean pause at which the rule ends the real ends of turns (the decode
  time comes on top, in the service; a rule never ends a turn before its text exists).

It prints the table and writes ``bench-results/turn_tuning.json``; docs/vad.md (*End of turn*)
has the numbers the defaults come from. Pure of the service otherwise: no Redis, no workers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bench import report
from bench.corpus import audio, librispeech
from shared.audio import SAMPLE_RATE, float32_to_pcm16
from shared.schemas import AsrJob
from shared.settings import Settings
from workers.segmenter import Segment, Segmenter, SegmenterConfig, Tentative, TentativeVoid
from workers.turns import TurnConfig, looks_finished, turn_pause_ms

WINDOW = 512
TAIL_S = 1.5


@dataclass
class Pause:
    utt_id: str
    text: str
    speech_s: float
    end: bool
    """The pause is the end of the turn (True) or the speaker went on (False)."""
    length_ms: float
    """How long the pause lasted (``inf`` for the end of the turn)."""


def speculating_segmenter(settings: Settings, **overrides: Any) -> SegmenterConfig:
    """The service's segmentation (Silero's thresholds, pads, lengths) with tentatives on, as a
    session's VAD worker cuts it; ``overrides``: the fields a benchmark varies."""
    fields: dict[str, Any] = {
        "threshold": settings.vad_threshold,
        "min_silence_ms": settings.vad_min_silence_ms,
        "speech_pad_ms": settings.vad_speech_pad_ms,
        "speech_pad_end_ms": settings.vad_speech_pad_end_ms,
        "quiet_pad_end_ms": settings.vad_quiet_pad_end_ms,
        "min_speech_ms": settings.vad_min_speech_ms,
        "max_segment_s": settings.vad_max_segment_s,
        "tentative": True,
    }
    return SegmenterConfig(**(fields | overrides))


def pauses_of(utt: Any, vad: Any, settings: Settings, transcribe: Any) -> list[Pause]:
    x = np.concatenate([audio(utt.path), np.zeros(int(TAIL_S * SAMPLE_RATE), np.float32)])
    seg = Segmenter(vad.stream(), speculating_segmenter(settings))
    live: dict[tuple[int, int], tuple[Tentative, float]] = {}
    out: list[Pause] = []
    closed: dict[int, Pause] = {}
    last_segment = -1
    for i in range(0, len(x) - WINDOW + 1, WINDOW):
        before = seg.pause_ms
        for ev in seg.feed(x[i : i + WINDOW]):
            if isinstance(ev, Tentative):
                live[(ev.index, ev.rev)] = (ev, seg.speech_s)
            elif isinstance(ev, TentativeVoid) and (t := live.pop((ev.index, ev.rev), None)):
                out.append(Pause(utt.utt_id, transcribe(t[0]), t[1], False, before + 32))
            elif isinstance(ev, Segment):
                last_segment = ev.index
                t = live.pop((ev.index, ev.tentative_rev or 0), None)
                if t is not None:  # a pause reached the endpoint: mid-turn, unless the last
                    length = float(settings.vad_min_silence_ms)
                    out.append(Pause(utt.utt_id, transcribe(t[0]), t[1], False, length))
                    closed[ev.index] = out[-1]
    if last_segment in closed:  # the pause that closed the last segment ends the turn
        closed[last_segment].end, closed[last_segment].length_ms = True, math.inf
    return out


def transcribed_pauses(utts: list[Any]) -> list[Pause]:
    from workers.asr import DecodeOptions, Transcriber, load_model
    from workers.vad_backends import make_vad

    settings = Settings()
    vad = make_vad(settings)
    transcriber = Transcriber(load_model(settings), DecodeOptions.from_settings(settings))

    def transcribe(t: Tentative) -> str:
        job = AsrJob(session_id="tune", segment=t.index, start=0.0, end=0.0,
                     pcm=float32_to_pcm16(t.audio), language="en")  # fmt: skip
        return transcriber.transcribe(job, None).text

    pauses: list[Pause] = []
    for k, u in enumerate(utts):
        pauses += pauses_of(u, vad, settings, transcribe)
        print(f"{k + 1}/{len(utts)} {u.utt_id}: {len(pauses)} pauses", file=sys.stderr, flush=True)
    return pauses


def evaluate(pauses: list[Pause], cfg: TurnConfig, turns: int) -> dict[str, Any]:
    mid = [p for p in pauses if not p.end]
    ends = [p for p in pauses if p.end]
    early = sum(1 for p in mid if cfg.endpoint_ms > p.length_ms >= turn_pause_ms(p.text, p.speech_s, cfg))  # fmt: skip
    past = sum(1 for p in mid if p.length_ms >= cfg.endpoint_ms)
    end_pause = [turn_pause_ms(p.text, p.speech_s, cfg) for p in ends]
    return {
        **asdict(cfg),
        "all_splits_per_100_turns": round(100 * (early + past) / turns, 1),
        "splits_per_100_turns": round(100 * early / turns, 1),
        "splits_past_endpoint_per_100_turns": round(100 * past / turns, 1),
        "end_pause_ms": round(sum(end_pause) / len(end_pause)) if end_pause else None,
        "ends_early": sum(1 for x in end_pause if x < cfg.endpoint_ms),
        "ends": len(ends),
    }


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows no other row beats on both the end-of-turn pause and the splits."""
    out: list[dict[str, Any]] = []
    best = math.inf
    for r in sorted(rows, key=lambda r: (r["end_pause_ms"], r["all_splits_per_100_turns"])):
        if r["all_splits_per_100_turns"] < best:
            out.append(r)
            best = r["all_splits_per_100_turns"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.turn_tuning", description=__doc__)
    p.add_argument("--subset", default="train-clean-5", help="LibriSpeech subset to tune on")
    p.add_argument("--limit", type=int, default=0, help="at most this many utterances (0: all)")
    p.add_argument("--name", default="turn_tuning")
    p.add_argument(
        "--from-json", action="store_true", help="re-evaluate the pauses of the saved JSON"
    )
    args = p.parse_args(argv)
    utts = [u for u in librispeech() if u.subset == args.subset]
    utts = utts[: args.limit] if args.limit else utts
    if args.from_json:
        saved = json.loads((report.RESULTS / f"{args.name}.json").read_text())
        pauses = [Pause(**p) for p in saved["pauses_detail"]]
        utts = utts[: saved["turns"]]
    else:
        pauses = transcribed_pauses(utts)
    grid = [
        TurnConfig(smart=True, endpoint_ms=500, complete_ms=c, short_ms=s, short_s=t)
        for c, s, t in itertools.product(
            range(150, 501, 50), range(150, 501, 50), (0.0, 1.0, 1.5, 2.0, 3.0)
        )
    ] + [TurnConfig(smart=False, endpoint_ms=e) for e in range(200, 501, 50)]
    every = [evaluate(pauses, cfg, len(utts)) for cfg in grid]
    rows = [r for r in pareto(every) if r["smart"]] + [r for r in every if not r["smart"]]
    rows += [evaluate(pauses, TurnConfig(), len(utts))]  # the defaults
    finished = [p for p in pauses if looks_finished(p.text)]
    out = {
        "subset": args.subset,
        "turns": len(utts),
        "pauses": len(pauses),
        "mid_pauses": sum(1 for p in pauses if not p.end),
        "finished_looking": {
            "ends": sum(1 for p in finished if p.end),
            "mid": sum(1 for p in finished if not p.end),
            "ends_total": sum(1 for p in pauses if p.end),
        },
        "rows": rows,
        "pauses_detail": [asdict(p) for p in pauses],
    }
    print(f"wrote {report.save_json(args.name, out)}")
    cols = ["smart", "endpoint_ms", "complete_ms", "short_ms", "short_s", "all_splits_per_100_turns",
            "splits_per_100_turns",
            "splits_past_endpoint_per_100_turns", "end_pause_ms", "ends_early", "ends"]  # fmt: skip
    print(report.table(cols, [[r[c] for c in cols] for r in rows]))
    print(out["finished_looking"], f"mid pauses {out['mid_pauses']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
