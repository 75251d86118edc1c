"""The realtime session's event logic with a fake socket (no Redis: nothing is announced):
append-only deltas of the stable prefix, VAD turns as speech_started/stopped/committed, finals as
completed, items without speech completed empty, errors as OpenAI error events."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from gateway.realtime import RealtimeSession
from shared.keys import Keys
from shared.schemas import Transcript, VadEvent
from shared.settings import Settings


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_json(self, obj: dict[str, Any]) -> None:
        self.sent.append(obj)


def session() -> tuple[RealtimeSession, FakeSocket]:
    ws = FakeSocket()
    ctx = SimpleNamespace(settings=Settings(), keys=Keys("t:"), router=None)
    return RealtimeSession(ws, ctx), ws  # type: ignore[arg-type]


def t(segment: int, text: str, rev: int = 0, final: bool = False) -> Transcript:
    return Transcript(session_id="s", segment=segment, start=0.0, end=1.0, text=text, rev=rev,
                      final=final)  # fmt: skip


async def test_deltas_are_the_growing_stable_prefix_and_completed_follows_commit() -> None:
    rt, ws = session()
    await rt._vad_event(VadEvent(session_id="s", kind="speech_started", segment=0, time=0.5))
    for rev, text in enumerate(["and so", "and so my fellow", "and so my fellow Americans"], 1):
        await rt._partial(t(0, text, rev))
    await rt._partial(t(0, "and so", 2))  # an older revision late: ignored
    await rt._vad_event(VadEvent(session_id="s", kind="utterance_end", segment=0, time=2.0))
    await rt._final(t(0, "And so my fellow Americans, ask not.", final=True))
    kinds = [m["type"] for m in ws.sent]
    assert kinds[0] == "input_audio_buffer.speech_started"
    deltas = [m["delta"] for m in ws.sent if m["type"].endswith(".delta")]
    assert deltas == ["and so", " my fellow", " Americans, ask not."]
    assert (
        kinds.index("input_audio_buffer.speech_stopped")
        < kinds.index("input_audio_buffer.committed")
        < kinds.index("conversation.item.input_audio_transcription.completed")
    )
    done = ws.sent[-1]
    assert done["transcript"] == "And so my fellow Americans, ask not."
    assert done["item_id"] == ws.sent[0]["item_id"] == rt.item_id(0)


async def test_an_item_without_speech_completes_empty() -> None:
    rt, ws = session()
    await rt._vad_event(VadEvent(session_id="s", kind="speech_started", segment=0, time=0.5))
    rt.downlink.reorder.skip_to(1)
    await rt._after_finals()
    assert [m["type"] for m in ws.sent][-2:] == [
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert ws.sent[-1]["transcript"] == ""


async def test_bad_events_are_error_events_and_the_session_goes_on() -> None:
    rt, ws = session()
    assert await rt.handle_text(json.dumps({"type": "conversation.item.create"})) is False
    assert await rt.handle_text(json.dumps({"type": "input_audio_buffer.commit"})) is False
    update = {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcmu"}, "turn_detection": None}}}}  # fmt: skip
    assert await rt.handle_text(json.dumps(update)) is False
    assert [m["type"] for m in ws.sent] == ["error", "error", "session.updated"]
    assert ws.sent[1]["error"]["code"] == "input_audio_buffer_commit_empty"
    assert rt.uplink.input_format.encoding == "mulaw" and rt.uplink.min_silence_ms == 10_000


async def test_a_final_before_the_vads_utterance_end_keeps_openais_order() -> None:
    """A speculative final can be published before the VAD's ``utterance_end`` reaches the
    gateway: the item still gets speech_stopped, committed, completed in that order, and the
    late utterance_end sends no second speech_stopped."""
    rt, ws = session()
    await rt._vad_event(VadEvent(session_id="s", kind="speech_started", segment=0, time=0.5))
    await rt._final(Transcript(session_id="s", segment=0, start=0.5, end=2.25, text="Yes.",
                               final=True))  # fmt: skip
    await rt._vad_event(VadEvent(session_id="s", kind="utterance_end", segment=0, time=2.2))
    kinds = [m["type"] for m in ws.sent]
    assert kinds == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    ], kinds
    assert ws.sent[1]["audio_end_ms"] == 2250 and ws.sent[1]["item_id"] == rt.item_id(0)


async def test_a_late_utterance_end_of_a_completed_and_released_item_sends_nothing() -> None:
    rt, ws = session()
    await rt._vad_event(VadEvent(session_id="s", kind="speech_started", segment=0, time=0.5))
    await rt._final(Transcript(session_id="s", segment=0, start=0.5, end=2.25, text="Yes.",
                               final=True))  # fmt: skip
    rt.downlink.reorder.skip_to(1)  # the downlink released segment 0
    await rt._after_finals()
    sent = len(ws.sent)
    await rt._vad_event(VadEvent(session_id="s", kind="utterance_end", segment=0, time=2.2))
    assert ws.sent[sent:] == []  # no second speech_stopped, no second committed
