"""The deadline on ending a session (gateway/session.py ``_end_within_deadline``): a step that
never finishes cannot keep a socket open for ever. The protocol is a stand-in here (this is the
loop's own logic); the e2e tests end real sessions through real workers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from gateway import session as session_mod
from gateway.attachment import Attachment
from gateway.context import GatewayContext
from gateway.protocol import CLOSE_INTERNAL_ERROR, ProtocolError
from shared.keys import Keys
from shared.settings import Settings


class _Client:
    def __init__(self) -> None:
        self.gone = False
        self.sent: list[dict[str, Any]] = []

    async def send(self, obj: dict[str, Any]) -> None:
        self.sent.append(obj)


class _Uplink:
    announced = True
    ended = True  # audio_end is written: the end waits for the finals
    attachment = Attachment()


class _Reorder:
    next = 2


class _Downlink:
    total = 2
    reorder = _Reorder()

    async def wait(self, timeout_s: float) -> bool:
        return True


class _Proto:
    session_id = "s-1"

    def __init__(self, closing_hangs: bool) -> None:
        self.client, self.uplink, self.downlink = _Client(), _Uplink(), _Downlink()
        self.closing_hangs = closing_hangs
        self.closings = 0

    async def closing(self) -> None:
        self.closings += 1
        if self.closing_hangs:
            await asyncio.Event().wait()  # a send that never completes

    def error_frame(self, exc: ProtocolError) -> dict[str, Any]:
        return exc.frame()

    def close_for(self, exc: ProtocolError) -> tuple[int, str]:
        return exc.close_code, exc.code


def _ctx() -> GatewayContext:
    settings = Settings(eof_timeout_s=0.1, redis_outage_tolerance_s=0)
    return GatewayContext(settings=settings, redis=None, keys=Keys("t"), router=None)  # type: ignore[arg-type]


async def test_an_end_that_finishes_keeps_the_normal_close() -> None:
    proto = _Proto(closing_hangs=False)
    assert await session_mod._end_within_deadline(_ctx(), proto, "eof") is None  # type: ignore[arg-type]
    assert proto.closings == 1 and proto.client.sent == []


async def test_a_stuck_end_is_cut_at_its_deadline_with_an_error_the_client_can_read(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(session_mod, "END_SLACK_S", 0.2)
    proto = _Proto(closing_hangs=True)
    with caplog.at_level(logging.ERROR, logger="gateway.session"):
        close = await asyncio.wait_for(
            session_mod._end_within_deadline(_ctx(), proto, "eof"),  # type: ignore[arg-type]
            5,
        )
    assert close == (CLOSE_INTERNAL_ERROR, "internal_error")
    assert [m["code"] for m in proto.client.sent] == ["internal_error"]
    assert "stuck sending the closing message" in caplog.text


async def test_a_timeout_raised_inside_the_end_is_not_taken_for_the_deadline() -> None:
    class _Failing(_Proto):
        async def closing(self) -> None:
            raise TimeoutError("a step's own timeout")

    with pytest.raises(TimeoutError, match="own timeout"):
        await session_mod._end_within_deadline(_ctx(), _Failing(False), "eof")  # type: ignore[arg-type]


async def test_a_ticker_that_outlives_its_cancel_is_not_waited_for_for_ever(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What Python 3.11's wait_for did inside redis-py (shared/aio.py): the cancel is lost and
    the ticker goes on ticking; the socket loop must still get to the end of the session."""
    monkeypatch.setattr(session_mod, "TICKER_STOP_S", 0.2)

    swallowed: list[bool] = []

    async def deaf_ticker() -> None:
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)  # the first cancel is lost, as the bug lost it
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    ticker = asyncio.create_task(deaf_ticker())
    await asyncio.sleep(0.02)
    with caplog.at_level(logging.ERROR, logger="gateway.session"):
        await asyncio.wait_for(session_mod._stop(ticker, "s-1"), 5)
    assert "still running" in caplog.text
    await asyncio.wait({ticker}, timeout=2)
    assert ticker.cancelled()  # the second cancel got through
