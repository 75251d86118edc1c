"""What the ASR core asks faster-whisper for (pure: a fake model records the call)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from shared.schemas import AsrJob
from shared.settings import Settings
from workers.asr import FALLBACK_TEMPERATURES, DecodeOptions, Transcriber, resolve_auto


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def transcribe(self, audio: Any, **kwargs: Any) -> tuple[Any, Any]:
        self.calls.append(kwargs)
        return [], SimpleNamespace(language="en", language_probability=1.0)


def _job(final: bool = True) -> AsrJob:
    return AsrJob(session_id="s", segment=0, start=0, end=1, pcm=b"\0\0" * 16000, final=final)


def test_decoding_is_at_temperature_zero_unless_the_fallback_is_asked_for() -> None:
    model = Recorder()
    Transcriber(model, DecodeOptions.from_settings(Settings())).transcribe(_job())
    assert model.calls[-1]["temperature"] == [0.0]
    fallback = DecodeOptions.from_settings(Settings(asr_temperature_fallback=True))
    Transcriber(model, fallback).transcribe(_job())
    assert model.calls[-1]["temperature"] == list(FALLBACK_TEMPERATURES)


def test_finals_and_partials_differ_only_in_beam_and_word_times() -> None:
    model = Recorder()
    t = Transcriber(model, DecodeOptions(beam_size=5))
    t.transcribe(_job(final=True))
    t.transcribe(_job(final=False), beam_size=1)
    final, partial = model.calls
    assert (final.pop("beam_size"), partial.pop("beam_size")) == (5, 1)
    assert (final.pop("word_timestamps"), partial.pop("word_timestamps")) == (True, False)
    assert final == partial
    # the same options the offline reference of `make bench` passes
    assert DecodeOptions(beam_size=5).whisper_kwargs().items() <= final.items()


def test_the_beam_is_greedy_on_a_cpu_and_five_wide_on_a_gpu_unless_set() -> None:
    assert DecodeOptions.from_settings(Settings(asr_device="cpu")).beam_size == 1
    assert DecodeOptions.from_settings(Settings(asr_device="cuda")).beam_size == 5
    assert DecodeOptions.from_settings(Settings(asr_device="cpu", asr_beam_size=5)).beam_size == 5


def test_every_auto_setting_is_resolved_once_for_the_device() -> None:
    cpu = resolve_auto(Settings(asr_device="cpu"))
    assert (cpu.asr_compute_type, cpu.asr_beam_size, cpu.asr_batch_size) == ("int8", 1, 1)
    assert cpu.asr_continuation is False  # its longer decode is latency on a CPU
    gpu = resolve_auto(Settings(asr_device="cuda"))
    assert (gpu.asr_compute_type, gpu.asr_beam_size, gpu.asr_batch_size) == ("float16", 5, 8)
    assert gpu.asr_continuation is True
    chosen = Settings(asr_device="cuda", asr_compute_type="int8", asr_beam_size=3, asr_batch_size=2,
                      asr_continuation=False)  # fmt: skip
    assert resolve_auto(chosen) == chosen
    assert DecodeOptions.from_settings(
        Settings(asr_device="cpu", asr_continuation=True)
    ).continuation


def test_key_terms_reach_the_decoder_as_hotwords() -> None:
    model = Recorder()
    job = _job()
    job.keyterms = ["Bartley", "Beaumont"]
    Transcriber(model, DecodeOptions()).transcribe(job)
    assert model.calls[-1]["hotwords"] == "Bartley, Beaumont"
    Transcriber(model, DecodeOptions()).transcribe(_job())
    assert model.calls[-1]["hotwords"] is None


def _seg(text: str, window_ratio: float, seek: int = 0) -> SimpleNamespace:
    return SimpleNamespace(seek=seek, text=text, words=[], start=0.0, end=4.0,
                           compression_ratio=window_ratio, no_speech_prob=0.0, avg_logprob=-0.3)  # fmt: skip


def test_repetition_is_judged_on_the_text_kept_not_on_what_the_decoder_said_past_the_audio() -> (
    None
):
    from workers.asr import is_hallucination, kept_ratios

    opts = DecodeOptions()
    # the window's decode looped in the encoder's padding (ratio 5.3); what was kept is a sentence
    heard = [_seg(" could wait no longer. Experience proves this.", 5.28)]
    assert not is_hallucination(heard[0], opts, kept_ratios(heard)[0])
    assert is_hallucination(heard[0], opts)  # the window's own ratio alone would drop it
    # a loop inside the audio is still one
    loop = [_seg(" Thank you." * 12, 6.0), _seg(" Experience proves this.", 1.0, seek=3000)]
    kept = kept_ratios(loop)
    assert is_hallucination(loop[0], opts, kept[0])
    assert not is_hallucination(loop[1], opts, kept[3000])  # another window, judged apart
