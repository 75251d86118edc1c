"""Turn-taking through the running service (real gateway, VAD and ASR workers, tiny.en): a
client's ``finalize`` during the pause returns the utterance's final, the same one waiting gives;
``end_of_turn_eager`` comes before its final; a resumed turn sends ``turn_resumed`` and then one
final for the whole utterance."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets

from shared.audio import decode_file, float32_to_pcm16
from tests.conftest import EmbeddedRedis, Service, librispeech, running_service
from tests.e2e.test_native import receive_all, stream
from whisper_streaming.evaluation import wer
from whisper_streaming.listen import CLOSE_STREAM

pytestmark = pytest.mark.e2e


def pcm_of(*parts: str | float) -> tuple[bytes, str]:
    """LibriSpeech utterances (by id) and silences (seconds), joined; and their reference."""
    utts = {u.utt_id: u for u in librispeech()}
    audio, refs = [], []
    for p in parts:
        if isinstance(p, str):
            audio.append(decode_file(utts[p].path))
            refs.append(utts[p].reference)
        else:
            audio.append(np.zeros(int(16000 * p), dtype=np.float32))
    return float32_to_pcm16(np.concatenate(audio)), " ".join(refs)


async def session(
    service: Service, query: str, *pieces: bytes | dict[str, Any]
) -> list[dict[str, Any]]:
    """One session: audio pieces streamed at real time, control frames sent as they come, then
    eof; every message until the close."""
    msgs: list[dict[str, Any]] = []
    async with websockets.connect(
        f"{service.ws}/v1/listen?language=en&session_started=true&{query}"
    ) as ws:
        rx = asyncio.create_task(receive_all(ws, msgs))
        for piece in pieces:
            if isinstance(piece, bytes):
                await stream(ws, piece, speed=1.0, chunk=640)
            else:
                await ws.send(json.dumps(piece))
        await ws.send(CLOSE_STREAM)
        await asyncio.wait_for(rx, 120)
    assert not [m for m in msgs if m["type"] == "error"], msgs
    return msgs


def finals(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in msgs if m["type"] == "final"]


async def test_finalize_in_the_pause_gives_the_final_waiting_gives(service: Service) -> None:
    speech, reference = pcm_of("6930-75918-0000")
    waited = finals(await session(service, "interim_results=false", speech + pcm_of(1.5)[0]))
    asked = await session(
        service,
        "interim_results=false",
        speech + pcm_of(0.2)[0],  # a voice agent's own VAD: 200 ms after the speech ended
        {"type": "Finalize"},
        pcm_of(1.3)[0],
    )
    got = finals(asked)
    assert len(waited) == 1 and len(got) == 1, (waited, got)
    assert got[0]["speech_final"] is True
    # the finalize ended the utterance at the same sample (its speculative final): same text
    assert (got[0]["start"], got[0]["end"]) == (waited[0]["start"], waited[0]["end"])
    assert got[0]["text"] == waited[0]["text"]
    assert wer([(reference, got[0]["text"])]).wer <= 0.3


async def test_eager_end_of_turn_comes_before_its_final(service: Service) -> None:
    # pauses of 4 s, and an endpoint of 3.5 s: the speculative final is stored before the
    # endpoint even on a busy machine (else the commit comes first and there is nothing eager
    # to say: the final itself goes out)
    ids = ["1089-134686-0001", "2830-3980-0043"]
    pcm, reference = pcm_of(ids[0], 4.0, ids[1], 4.0)
    msgs = await session(service, "interim_results=false&eager_eot=true&endpointing=3500", pcm)
    assert msgs[0]["settings"]["eager_eot"] is True
    out = finals(msgs)
    assert [f["segment"] for f in out] == list(range(len(out)))
    eager = [(i, m) for i, m in enumerate(msgs) if m["type"] == "end_of_turn_eager"]
    assert eager, [m["type"] for m in msgs]
    for i, ev in eager:
        final_at = next(
            j for j, m in enumerate(msgs) if m["type"] == "final" and m["segment"] == ev["segment"]
        )
        assert i < final_at
    turn = [m for m in msgs if m["type"] in ("end_of_turn_eager", "turn_resumed")]
    for f in out:  # unless resumed, the final is its last eager event's text (same audio)
        last = [m for m in turn if m["segment"] == f["segment"]][-1:]
        if last and last[0]["type"] == "end_of_turn_eager":
            assert f["text"] == last[0]["text"]
            assert (f["start"], f["end"]) == (last[0]["start"], last[0]["end"])
    assert wer([(reference, " ".join(f["text"] for f in out))]).wer <= 0.35  # 11 words


async def test_a_resumed_turn_sends_turn_resumed_then_one_final(service: Service) -> None:
    # a 3 s pause inside a 5 s endpoint: the speculative final of the first sentence exists (the
    # eager event), then the speaker goes on, and the utterance's one final holds both sentences
    pcm, reference = pcm_of("1089-134691-0000", 3.0, "2830-3980-0043", 6.0)
    msgs = await session(service, "interim_results=false&eager_eot=true&endpointing=5000", pcm)
    kinds = [m["type"] for m in msgs if m["type"] in ("end_of_turn_eager", "turn_resumed", "final")]
    assert kinds[:2] == ["end_of_turn_eager", "turn_resumed"], kinds
    assert kinds.count("final") == 1 and kinds.index("final") > 1, kinds
    (final,) = finals(msgs)
    first = next(m for m in msgs if m["type"] == "end_of_turn_eager")
    resumed = next(m for m in msgs if m["type"] == "turn_resumed")
    assert first["segment"] == resumed["segment"] == final["segment"] == 0
    assert final["start"] <= first["start"] and final["end"] > first["end"] + 3.0
    assert wer([(reference, final["text"])]).wer <= 0.3


async def test_a_segment_that_continues_its_turn_is_decoded_after_the_one_before(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    # two utterances, their own silences cut, with 1.2 s between them and a 1 s endpoint: two
    # segments, the first's speculative final stored before its commit (~0.9 s to decode it),
    # and the second's audio starts ~0.65 s after the first's ends: the ASR worker decodes it
    # behind the first's last 3 s with their words as the prefix (workers/continuation.py),
    # and keeps only what follows them
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    ids = ["2830-3980-0043", "1089-134691-0000"]
    utts = {u.utt_id: u for u in librispeech()}

    def speech(utt_id: str) -> np.ndarray:
        x = decode_file(utts[utt_id].path)
        ts = get_speech_timestamps(x, VadOptions(speech_pad_ms=0, min_silence_duration_ms=100))
        return x[ts[0]["start"] : ts[-1]["end"]]

    gap, tail = np.zeros(int(1.2 * 16000), np.float32), np.zeros(24000, np.float32)
    pcm = float32_to_pcm16(np.concatenate([speech(ids[0]), gap, speech(ids[1]), tail]))
    # on CPU an ASR worker decodes each segment alone unless told (ASR_CONTINUATION)
    with running_service(redis_server, tmp_path, [{"ASR_CONTINUATION": "true"}]) as service:
        out = finals(await session(service, "interim_results=false&endpointing=1000", pcm))
        logs = "".join(p.log() for p in service.procs if p.role == "asr-worker")
    assert [f["segment"] for f in out] == [0, 1], out
    assert "segment=1: continued after" in logs, logs[-3000:]
    second = out[1]
    assert all(second["start"] - 0.05 <= w["start"] <= second["end"] for w in second["words"])
    # the prefix is not in the second final: the first's words, repeated, would be insertions
    assert wer([(utts[ids[1]].reference, second["text"])]).wer <= 0.3, out
    assert wer([(utts[ids[0]].reference, out[0]["text"])]).wer <= 0.3, out
