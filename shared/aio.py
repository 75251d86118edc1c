"""A fix to asyncio that every process of the service needs on Python 3.11.

Python 3.11's ``asyncio.wait_for`` swallows a cancellation that arrives as the awaited operation
completes (CPython gh-86296, fixed in 3.12 by rebuilding ``wait_for`` on ``asyncio.timeout``): it
returns the operation's result and the cancelled task runs on as if nothing had happened.
redis-py wraps every command's write in ``asyncio.wait_for`` (``socket_timeout``), so on 3.11 a
task cancelled while it talks to Redis survives the cancel about half the time (measured: 13 of
30 cancelled ``GET`` loops against a real redis-server; 0 of 300 with the fix). In the gateway
that was a session that never ended: its coalescing ticker, cancelled before the session's
``audio_end`` is written, kept ticking, and the socket loop waited for it for ever (every final
out, no ``Metadata``, no close). :func:`install` puts a ``wait_for`` with 3.12's semantics in
place; on 3.12 and later it does nothing.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """``aw``'s result, or :class:`TimeoutError` once ``timeout`` seconds have passed (``aw`` is
    then cancelled); a cancellation of the caller always propagates, done or not."""
    async with asyncio.timeout(timeout):
        return await aw


def install() -> None:
    """On Python < 3.12, replace ``asyncio.wait_for`` (looked up at each call by redis-py,
    uvicorn and our own code) with :func:`wait_for`. Idempotent."""
    if sys.version_info >= (3, 12) or asyncio.wait_for is wait_for:
        return
    asyncio.wait_for = wait_for  # type: ignore[assignment]
    asyncio.tasks.wait_for = wait_for  # type: ignore[assignment]
