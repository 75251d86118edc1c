"""A task cancelled while it talks to a real redis-server stops (shared/aio.py): on Python 3.11
without the fix about half of these cancels were swallowed inside redis-py's command write, and
the task ran on."""

from __future__ import annotations

import asyncio
import random

import redis.asyncio as aioredis

import shared  # noqa: F401 (installs the fix, as every process of the service does)


async def test_every_cancel_of_a_task_in_a_redis_command_stops_it(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    async def loop() -> None:
        while True:
            await asyncio.sleep(0.0005)
            await redis_client.get(f"{key_prefix}k")

    rng = random.Random(7)
    survived = 0
    for _ in range(60):
        task = asyncio.create_task(loop())
        await asyncio.sleep(rng.uniform(0, 0.01))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        if not done:
            survived += 1
            while not task.done():  # stop it for real before the next round
                task.cancel()
                await asyncio.sleep(0.01)
    assert survived == 0
