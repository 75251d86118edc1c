"""Other languages through the running pipeline with the bundled multilingual model (Whisper
base): transcription in the language spoken (detected per utterance), a session that switches
from German to English, live and file translation into English (the real ``openai`` SDK), and
the translation targets Whisper does not have.

Bounds are what the same model reaches offline on the same files (stock faster-whisper, greedy
as the pipeline decodes on a CPU, measured when these tests were written: German WER 0.40,
Chinese CER 0.50 (the model writes traditional characters for this simplified reference),
German->English chrF 41.9), with a margin for the VAD's cut."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sacrebleu
import websockets

from shared.audio import decode_file, float32_to_pcm16
from tests.conftest import Service, librispeech, running_service
from tests.e2e.test_native import receive_all, stream
from whisper_streaming.corpus import Recording, other_languages
from whisper_streaming.evaluation import error_rate
from whisper_streaming.replay import load_pcm
from whisper_streaming.up import EmbeddedRedis

pytestmark = pytest.mark.e2e

ERROR_BOUND = {"de": 0.55, "zh": 0.65}
CHRF_BOUND = 30.0
FILES = {"de": "de_picovoice.wav", "zh": "zh_aishell_BAC009S0724W0121.wav"}


@pytest.fixture(scope="module")
def multilingual(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """One gateway, one VAD worker and one ASR worker with the bundled multilingual ``base``."""
    log_dir = tmp_path_factory.mktemp("multilingual")
    asr = [{"ASR_MODEL": "base", "ASR_CPU_THREADS": "2"}]
    with running_service(redis_server, log_dir, asr, prefix="ml") as svc:
        yield svc


@pytest.fixture(scope="module")
def recordings() -> dict[str, Recording]:
    return {r.name: r for r in other_languages()}


async def listen(base: str, query: str, pcm: bytes) -> tuple[list[dict[str, Any]], int | None]:
    """Stream ``pcm`` at real time to ``/v1/listen?query``; every message and the close code."""
    messages: list[dict[str, Any]] = []
    async with websockets.connect(f"{base}/v1/listen?{query}", max_size=None) as ws:
        reader = asyncio.create_task(receive_all(ws, messages))
        await stream(ws, pcm)
        await ws.send(json.dumps({"type": "eof"}))
        await asyncio.wait_for(reader, 240)
    return messages, ws.close_code


@pytest.mark.parametrize("language", ["de", "zh"])
async def test_speech_is_transcribed_in_its_detected_language(
    multilingual: Service, recordings: dict[str, Recording], language: str
) -> None:
    """No language given: each final carries the language detected for its utterance."""
    rec = recordings[FILES[language]]
    messages, code = await listen(multilingual.ws, "interim_results=false", load_pcm(rec.path))
    finals = [m for m in messages if m["type"] == "final"]
    assert code == 1000 and finals, messages
    assert all(f["language"] == language and f["language_probability"] > 0.5 for f in finals)
    text = "".join(f["text"] for f in finals)
    rate = error_rate(language, [(rec.reference, text)])
    assert rate.wer <= ERROR_BOUND[language], text


async def test_a_session_switching_from_german_to_english_gets_each_in_its_language(
    multilingual: Service, recordings: dict[str, Recording]
) -> None:
    """German, then two short English utterances (3.3 s and 2.1 s) in the same session."""
    gap = np.zeros(16000, dtype=np.float32)
    german = decode_file(recordings[FILES["de"]].path)
    utts = {u.utt_id: u for u in librispeech()}
    english = [decode_file(utts[i].path) for i in ("1089-134686-0001", "1089-134691-0000")]
    switch_at = (len(german) + len(gap) / 2) / 16000
    pcm = float32_to_pcm16(np.concatenate([german, gap, english[0], gap, english[1], gap]))
    messages, code = await listen(multilingual.ws, "interim_results=false", pcm)
    finals = [m for m in messages if m["type"] == "final"]
    assert code == 1000
    spoken = [("de" if f["end"] <= switch_at else "en", f["language"]) for f in finals]
    assert {want for want, _got in spoken} == {"de", "en"}, finals
    assert all(want == got for want, got in spoken), spoken
    en_text = " ".join(f["text"] for f in finals if f["language"] == "en")
    en_ref = " ".join(utts[i].reference for i in ("1089-134686-0001", "1089-134691-0000"))
    assert error_rate("en", [(en_ref, en_text)]).wer <= 0.5, en_text


async def test_live_translation_of_german_on_the_predecessor_endpoint(
    multilingual: Service, recordings: dict[str, Recording]
) -> None:
    """``/?lang=de&dest_lang=en`` (the low-latency page's query): each final keeps its German
    text, in the predecessor's fields too, and carries its English translation."""
    rec = recordings[FILES["de"]]
    pcm = load_pcm(rec.path)
    async with websockets.connect(f"{multilingual.ws}/?lang=de&dest_lang=en", max_size=None) as ws:
        await stream(ws, pcm)
        await ws.send(json.dumps({"type": "eof"}))
        finals = [json.loads(m) async for m in ws]
    assert ws.close_code == 1000 and finals
    for f in finals:
        assert f["type"] == "final" and f["Transcript"] == f["text"] and f["language"] == "de"
        assert f["translation"]["language"] == "en"
    german = "".join(f["text"] for f in finals)
    english = " ".join(f["translation"]["text"] for f in finals)
    assert error_rate("de", [(rec.reference, german)]).wer <= ERROR_BOUND["de"], german
    assert sacrebleu.corpus_chrf([english], [[rec.english]]).score >= CHRF_BOUND, english


def test_file_translation_with_the_openai_sdk(
    multilingual: Service, recordings: dict[str, Recording]
) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=multilingual.http + "/v1", api_key="unused", timeout=240)
    rec = recordings[FILES["de"]]
    # the SDK marks the endpoint deprecated (OpenAI serves it with whisper-1 only); it works
    with rec.path.open("rb") as fh, pytest.warns(DeprecationWarning, match="deprecated"):
        result = client.audio.translations.create(
            model="whisper-1", file=fh, response_format="verbose_json", temperature=0
        )
    assert result.language == "english" and result.segments
    assert sacrebleu.corpus_chrf([result.text], [[rec.english]]).score >= CHRF_BOUND, result.text


@pytest.mark.parametrize("path", ["/v1/listen?translate=fr", "/?lang=de&dest_lang=fr"])
async def test_translation_into_another_language_is_refused(
    multilingual: Service, path: str
) -> None:
    async with websockets.connect(multilingual.ws + path, max_size=None) as ws:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert msg["type"] == "error" and msg["code"] == "unsupported_translation_target"
    assert "English" in msg["message"] and ws.close_code == 1003
