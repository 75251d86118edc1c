"""The benchmark audio: LibriSpeech utterances from the shared corpus, joined into streams with
silent gaps, and the ground-truth speech regions of each stream.

Ground truth is computed on the clean source recordings, independently of the service: faster-
whisper's offline Silero helper ``get_speech_timestamps`` over each whole utterance file (no
padding, 500 ms minimum silence, threshold 0.5), shifted to where the utterance sits in the stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from bench.stats import Region, merge_regions
from shared.audio import SAMPLE_RATE, decode_file
from whisper_streaming.corpus import Utterance, corpus_dir, librispeech  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
GT_MIN_SILENCE_MS = 500
GT_MIN_SPEECH_MS = 250


@cache
def audio(path: Path) -> np.ndarray:
    return decode_file(path)


@cache
def speech_regions(path: Path) -> tuple[Region, ...]:
    """Ground-truth speech of one clean recording (seconds from its start)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    opts = VadOptions(
        threshold=0.5,
        min_speech_duration_ms=GT_MIN_SPEECH_MS,
        min_silence_duration_ms=GT_MIN_SILENCE_MS,
        speech_pad_ms=0,
    )
    stamps = get_speech_timestamps(audio(path), opts)
    regs = [Region(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]
    return tuple(merge_regions(regs, GT_MIN_SILENCE_MS / 1000))


@dataclass
class Stream:
    """One session's audio: utterances joined with silence, its references and speech regions."""

    name: str
    pcm: np.ndarray
    utterances: list[Utterance] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    turns: list[Region] = field(default_factory=list)
    """Per utterance, from its first to its last ground-truth speech: one speaker's turn."""

    @property
    def seconds(self) -> float:
        return len(self.pcm) / SAMPLE_RATE

    @property
    def reference(self) -> str:
        return " ".join(u.reference for u in self.utterances)


def build_stream(
    name: str, utts: list[Utterance], lead_s: float = 0.5, gap_s: float = 1.5, tail_s: float = 2.0
) -> Stream:
    parts: list[np.ndarray] = [np.zeros(int(lead_s * SAMPLE_RATE), np.float32)]
    regions: list[Region] = []
    turns: list[Region] = []
    pos = lead_s
    for i, u in enumerate(utts):
        if i:
            parts.append(np.zeros(int(gap_s * SAMPLE_RATE), np.float32))
            pos += int(gap_s * SAMPLE_RATE) / SAMPLE_RATE
        a = audio(u.path)
        own = [Region(pos + r.start, pos + r.end) for r in speech_regions(u.path)]
        regions.extend(own)
        if own:
            turns.append(Region(own[0].start, own[-1].end))
        parts.append(a)
        pos += len(a) / SAMPLE_RATE
    parts.append(np.zeros(int(tail_s * SAMPLE_RATE), np.float32))
    return Stream(name, np.concatenate(parts), list(utts), regions, turns)


def rotating_streams(
    utts: list[Utterance], n: int, target_s: float = 35.0, stride: int = 5, gap_s: float = 1.5
) -> list[Stream]:
    """``n`` streams of about ``target_s`` each; stream i starts ``i * stride`` utterances into the
    (cyclic) list, so concurrent streams speak different text at different times."""
    streams = []
    for i in range(n):
        chosen: list[Utterance] = []
        total, k = 0.0, (i * stride) % len(utts)
        while total < target_s:
            u = utts[k % len(utts)]
            chosen.append(u)
            total += len(audio(u.path)) / SAMPLE_RATE + gap_s
            k += 1
        streams.append(build_stream(f"s{i}", chosen, gap_s=gap_s))
    return streams


def to_pcm16(x: np.ndarray) -> bytes:
    from shared.audio import float32_to_pcm16

    return float32_to_pcm16(x)
