"""The limit: faster-whisper alone, in this process, over the same files with the same model and
decoding settings as the ASR worker (workers/asr.py: beam, thresholds, temperatures, word
timestamps, no VAD filter, no conditioning on previous text), and faster-whisper's own encoder
context (whole 30 s windows: ``ASR_CONTEXT_PAD_S=0``, where the worker fits it to the utterance,
workers/context.py)."""

from __future__ import annotations

import gc
import time
from typing import Any

import psutil

from bench.corpus import Utterance, audio
from shared.settings import Settings
from workers.asr import DecodeOptions, load_model


def stock_settings(env: dict[str, str]) -> Settings:
    """The service's settings of ``env`` for an offline reference: the worker's model and
    decoding, with stock faster-whisper's whole 30 s encoder windows."""
    known = {k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields}
    return Settings(**known).model_copy(update={"asr_context_pad_s": 0.0})


def offline(utts: list[Utterance], env: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    settings = stock_settings(env)
    opts = DecodeOptions.from_settings(settings)
    model = load_model(settings)
    for u in utts[:1]:  # warm-up, not timed
        list(model.transcribe(audio(u.path), language="en", beam_size=opts.beam_size)[0])
    me = psutil.Process()
    cpu0 = sum(me.cpu_times()[:2])
    texts: dict[str, str] = {}
    seconds = 0.0
    started = time.monotonic()
    for u in utts:
        x = audio(u.path)
        seconds += len(x) / 16000
        segments, _ = model.transcribe(
            x,
            language="en",
            beam_size=opts.beam_size,
            word_timestamps=True,
            **opts.whisper_kwargs(),
        )
        texts[u.utt_id] = "".join(s.text for s in segments).strip()
    wall = time.monotonic() - started
    cpu = sum(me.cpu_times()[:2]) - cpu0
    del model
    gc.collect()
    return {
        "files": len(utts),
        "audio_s": round(seconds, 1),
        "wall_s": round(wall, 2),
        "audio_s_per_s": round(seconds / wall, 2),
        "cpu_s": round(cpu, 2),
        "cores_busy": round(cpu / wall, 2),
        "cpu_threads": settings.asr_cpu_threads,
        "beam_size": opts.beam_size,
        "temperatures": list(opts.temperatures),
    }, texts
