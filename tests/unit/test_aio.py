"""shared/aio.py: a cancellation that arrives as the awaited operation completes is never
swallowed (Python 3.11's ``asyncio.wait_for`` returned the result and the task ran on)."""

from __future__ import annotations

import asyncio

import shared  # noqa: F401 (installs the fix, as every process of the service does)
from shared import aio


async def _cancelled_as_it_completes(wait_for: object) -> asyncio.Task[None]:
    """A task in ``wait_for(fut)``, cancelled in the same loop step that ``fut`` completes in;
    if the cancel were swallowed it would go on to sleep for a minute."""
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def waiter() -> None:
        await wait_for(fut, 30)  # type: ignore[operator]
        await asyncio.sleep(60)

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # the task is now waiting in wait_for
    fut.set_result(1)
    task.cancel()
    await asyncio.wait({task}, timeout=2)
    return task


async def test_our_wait_for_lets_the_cancel_through() -> None:
    task = await _cancelled_as_it_completes(aio.wait_for)
    assert task.cancelled()


async def test_asyncio_wait_for_is_ours_once_shared_is_imported() -> None:
    task = await _cancelled_as_it_completes(asyncio.wait_for)
    assert task.cancelled()


async def test_it_still_times_out_and_returns_results() -> None:
    assert await aio.wait_for(asyncio.sleep(0, result=7), 1) == 7
    assert await aio.wait_for(asyncio.sleep(0, result=8), None) == 8
    try:
        await aio.wait_for(asyncio.sleep(5), 0.05)
    except TimeoutError:
        pass
    else:
        raise AssertionError("no TimeoutError")
