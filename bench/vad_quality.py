"""VAD quality: detection error of a VAD backend against the RTTM references of the corpus.

Speech is the union of a file's RTTM segments, scored inside its UEM ranges (the whole file
where there is no .uem), on a 10 ms grid. Detection error = (missed speech + false alarm) / total
speech, summed over the files. Two hypotheses per backend:

- ``frames``: windows whose probability reaches the onset threshold (the model itself);
- ``segments``: the utterances the VAD worker would cut (``Segmenter`` with the configured
  thresholds, minimum durations and ``VAD_SPEECH_PAD_MS`` padding), i.e. what ASR receives.

    python -m bench.vad_quality                       # Silero, settings from the environment
    VAD_BACKEND=pyannote PYANNOTE_MODEL=... python -m bench.vad_quality --backend pyannote
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.audio import SAMPLE_RATE, decode_file
from shared.settings import Settings
from workers.segmenter import Segment, Segmenter, SegmenterConfig
from workers.vad_backends import detection_params, make_vad

STEP = 0.01
WINDOW = 512
FEED = 1600
"""Audio is fed 100 ms at a time, as the gateway's coalesced entries arrive."""


def corpus_vad_dir() -> Path:
    root = Path(__file__).resolve().parents[1]
    return Path(os.environ.get("WHISPER_CORPUS", root.parent / "shared" / "corpus")) / "vad"


def read_ranges(path: Path, start_col: int, dur_col: int | None, end_col: int | None) -> list:
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) <= start_col or line.startswith("#"):
            continue
        start = float(parts[start_col])
        end = start + float(parts[dur_col]) if dur_col is not None else float(parts[end_col or 0])
        out.append((start, end))
    return out


def mask(ranges: list[tuple[float, float]], n: int) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    for start, end in ranges:
        m[max(0, round(start / STEP)) : max(0, round(end / STEP))] = True
    return m


@dataclass
class Score:
    speech: float = 0.0
    missed: float = 0.0
    false_alarm: float = 0.0

    def add(self, ref: np.ndarray, hyp: np.ndarray, uem: np.ndarray) -> None:
        self.speech += float((ref & uem).sum()) * STEP
        self.missed += float((ref & ~hyp & uem).sum()) * STEP
        self.false_alarm += float((hyp & ~ref & uem).sum()) * STEP

    @property
    def error(self) -> float:
        return (self.missed + self.false_alarm) / self.speech if self.speech else 0.0

    def row(self) -> dict[str, float]:
        return {
            "speech_s": round(self.speech, 2),
            "missed_s": round(self.missed, 2),
            "false_alarm_s": round(self.false_alarm, 2),
            "detection_error": round(self.error, 4),
        }


def run_file(settings: Settings, vad, audio: np.ndarray) -> tuple[list, list]:
    det = detection_params(settings)
    cfg = SegmenterConfig(
        threshold=det.threshold,
        neg_threshold=det.neg_threshold,
        min_silence_ms=det.min_silence_ms,
        speech_pad_ms=settings.vad_speech_pad_ms,
        min_speech_ms=det.min_speech_ms,
        max_segment_s=settings.vad_max_segment_s,
    )
    probs: list[np.ndarray] = []
    stream = vad.stream()

    def recording(windows: np.ndarray) -> np.ndarray:
        p = np.asarray(stream(windows), dtype=np.float32)
        probs.append(p)
        return p

    seg = Segmenter(recording, cfg)
    events = [e for i in range(0, audio.size, FEED) for e in seg.feed(audio[i : i + FEED])]
    segments = [e.seconds() for e in events + seg.flush() if isinstance(e, Segment)]
    p = np.concatenate(probs) if probs else np.zeros(0)
    frames = [
        (i * WINDOW / SAMPLE_RATE, (i + 1) * WINDOW / SAMPLE_RATE)
        for i in np.flatnonzero(p >= det.threshold)
    ]
    return frames, segments


def evaluate(settings: Settings, corpus: Path) -> dict:
    vad = make_vad(settings)
    scores = {"frames": Score(), "segments": Score()}
    files = sorted(corpus.glob("*.rttm"))
    audio_s = 0.0
    started = time.perf_counter()
    for rttm in files:
        wav = rttm.with_suffix(".wav")
        if not wav.is_file():
            continue
        audio = decode_file(wav)
        n = int(np.ceil(audio.size / SAMPLE_RATE / STEP))
        audio_s += audio.size / SAMPLE_RATE
        ref = mask(read_ranges(rttm, 3, 4, None), n)
        uem_path = rttm.with_suffix(".uem")
        uem = mask(read_ranges(uem_path, 2, None, 3), n) if uem_path.is_file() else np.ones(n, bool)
        frames, segments = run_file(settings, vad, audio)
        scores["frames"].add(ref, mask(frames, n), uem)
        scores["segments"].add(ref, mask(segments, n), uem)
    elapsed = time.perf_counter() - started
    return {
        "backend": settings.vad_backend,
        "model": settings.pyannote_model if settings.vad_backend == "pyannote" else "silero_vad_v6",
        "files": len(files),
        "audio_s": round(audio_s, 1),
        "rtf": round(elapsed / audio_s, 4) if audio_s else None,
        **{kind: score.row() for kind, score in scores.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", choices=["silero", "pyannote"])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    corpus = corpus_vad_dir()
    results = []
    for backend in args.backend or [Settings().vad_backend]:
        results.append(evaluate(Settings(vad_backend=backend), corpus))
    print(f"VAD detection error on {corpus} ({platform.node()}, {time.strftime('%Y-%m-%d')})")
    print("| backend | hypothesis | speech s | missed s | false alarm s | detection error | RTF |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for kind in ("frames", "segments"):
            row = r[kind]
            print(
                f"| {r['backend']} | {kind} | {row['speech_s']} | {row['missed_s']} | "
                f"{row['false_alarm_s']} | {row['detection_error']:.1%} | {r['rtf']} |"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
