"""The partial decoder's child process with the bundled model (workers/partial_decoder.py)."""

from __future__ import annotations

import pytest

from shared.audio import decode_file, float32_to_pcm16
from shared.schemas import AsrJob
from shared.settings import Settings
from workers.asr import resolve_auto
from workers.partial_decoder import PartialDecodeError, PartialDecoder


class RedisDown(Exception):
    pass


async def test_an_answer_to_an_abandoned_request_is_never_taken_for_the_next(corpus) -> None:
    """A wait cut short (the worker's Redis check failed mid-decode) leaves the child's answer
    in the pipe: the next request must get its own transcript, not that one."""
    decoder = PartialDecoder(resolve_auto(Settings(asr_cpu_threads=1)))
    await decoder.start()
    try:

        def job(path: str, sid: str) -> AsrJob:
            audio = decode_file(corpus / "librispeech" / path)
            pcm = float32_to_pcm16(audio)
            return AsrJob(
                session_id=sid, segment=0, start=0, end=len(audio) / 16000, pcm=pcm,
                language="en", final=False, rev=1,
            )  # fmt: skip

        async def fails() -> bool:
            raise RedisDown

        with pytest.raises(RedisDown):
            await decoder.transcribe(job("1089-134686-0000.flac", "a"), None, 1, fails)

        async def never() -> bool:
            return False

        result = await decoder.transcribe(job("1089-134691-0000.flac", "b"), None, 1, never)
        assert result.session_id == "b"
        assert "stew" not in result.text.lower()  # a's words ("he hoped there would be stew")
        assert result.text
    finally:
        await decoder.close()


async def test_a_job_the_child_cannot_decode_is_an_error_and_the_child_carries_on(
    corpus,
) -> None:
    decoder = PartialDecoder(resolve_auto(Settings(asr_cpu_threads=1)))
    await decoder.start()
    try:

        async def never() -> bool:
            return False

        bad = AsrJob(session_id="x", segment=0, start=0, end=1, pcm=b"\x00", language="en")
        with pytest.raises(PartialDecodeError):
            await decoder.transcribe(bad, None, 1, never)
        audio = decode_file(corpus / "librispeech" / "1089-134691-0000.flac")
        good = AsrJob(
            session_id="y", segment=0, start=0, end=len(audio) / 16000,
            pcm=float32_to_pcm16(audio), language="en", final=False,
        )  # fmt: skip
        assert (await decoder.transcribe(good, None, 1, never)).text
    finally:
        await decoder.close()
