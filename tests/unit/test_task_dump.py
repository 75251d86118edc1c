"""Where a task waits (shared/runtime.py ``await_chain``), as the SIGUSR1 task dump logs it."""

from __future__ import annotations

import asyncio

from shared.runtime import await_chain


async def _leaf(event: asyncio.Event) -> None:
    await event.wait()


async def _middle(event: asyncio.Event) -> None:
    await _leaf(event)


async def test_the_chain_names_each_coroutine_outermost_first_down_to_the_future() -> None:
    event = asyncio.Event()
    task = asyncio.create_task(_middle(event), name="waiting")
    await asyncio.sleep(0)
    chain = await_chain(task).split(" > ")
    names = [hop.split(" ")[-1] for hop in chain]
    assert names[:3] == ["_middle", "_leaf", "wait"], chain
    assert chain[0].startswith("test_task_dump.py:") and chain[-1] == "Future"
    event.set()
    await task
    assert await_chain(task) == "(done)"
