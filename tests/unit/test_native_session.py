"""The Deepgram-compatible session's event order with a fake socket (no Redis: nothing is
announced): ``UtteranceEnd`` comes after the utterance's final, as Deepgram sends it."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

from gateway.native import NativeSession
from gateway.native_protocol import parse_options
from shared.keys import Keys
from shared.schemas import Transcript, VadEvent, Word
from shared.settings import Settings

SID = uuid.uuid4().hex


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_json(self, obj: dict[str, Any]) -> None:
        self.sent.append(obj)


def session(**query: Any) -> tuple[NativeSession, FakeSocket]:
    ws = FakeSocket()
    ctx = SimpleNamespace(settings=Settings(), keys=Keys("t:"), router=None)
    return NativeSession(ws, ctx, parse_options(query)), ws  # type: ignore[arg-type]


def final(segment: int, text: str, start: float, end: float) -> Transcript:
    words = [Word(word=w, start=start + i * 0.3, end=start + i * 0.3 + 0.25, probability=0.9)
             for i, w in enumerate(text.split())]  # fmt: skip
    return Transcript(session_id=SID, segment=segment, start=start, end=end, text=text,
                      words=words, final=True)  # fmt: skip


def ended(segment: int, time: float) -> VadEvent:
    return VadEvent(session_id=SID, kind="utterance_end", segment=segment, time=time)


def kinds(ws: FakeSocket) -> list[tuple[str, int]]:
    return [(m["type"], m["segment"]) for m in ws.sent]


async def test_an_utterance_end_before_its_final_waits_for_it() -> None:
    dg, ws = session(utterance_end_ms="1000")
    await dg._vad_event(ended(0, 2.4))  # the VAD's event first, as it usually is
    assert ws.sent == []
    await dg.downlink.handle(final(0, "ask not what", 0.5, 2.4))
    assert kinds(ws) == [("Results", 0), ("UtteranceEnd", 0)]
    assert ws.sent[1]["last_word_end"] == 0.5 + 0.6 + 0.25  # the final's last word


async def test_an_utterance_end_after_its_final_goes_at_once() -> None:
    dg, ws = session(utterance_end_ms="1000")
    await dg.downlink.handle(final(0, "yes", 0.5, 1.0))  # a speculative final first
    await dg._vad_event(ended(0, 1.0))
    assert kinds(ws) == [("Results", 0), ("UtteranceEnd", 0)]


async def test_held_utterance_ends_keep_segment_order_and_empty_finals_release_them() -> None:
    dg, ws = session(utterance_end_ms="1000")
    await dg._vad_event(ended(0, 1.0))
    await dg._vad_event(ended(1, 3.0))
    await dg.downlink.handle(final(1, "second one", 2.0, 3.0))  # held: segment 0 is first
    assert ws.sent == []
    await dg.downlink.handle(final(0, "", 0.0, 1.0))  # nothing said: no Results
    assert kinds(ws) == [("UtteranceEnd", 0), ("Results", 1), ("UtteranceEnd", 1)]
    assert ws.sent[0]["last_word_end"] == 1.0  # no words: the segment's end


async def test_without_utterance_end_ms_none_is_sent() -> None:
    dg, ws = session()
    await dg._vad_event(ended(0, 1.0))
    await dg.downlink.handle(final(0, "hello", 0.0, 1.0))
    assert kinds(ws) == [("Results", 0)]
