"""The per-host connection limit: never more slots than the limit, every waiter served, fewer
after a throttle and one more per recovery period."""

from __future__ import annotations

import asyncio

from biomaj.download.limits import HostLimit


async def hold(limit: HostLimit, seen: list[int], finished: list[int], n: int) -> None:
    async with limit.slot():
        seen.append(limit.active)
        await asyncio.sleep(0.001)
    finished.append(n)


async def test_never_more_than_the_limit_and_every_waiter_is_served():
    limit = HostLimit("h", 3)
    seen: list[int] = []
    finished: list[int] = []
    await asyncio.wait_for(asyncio.gather(*(hold(limit, seen, finished, n) for n in range(200))), 10)
    assert sorted(finished) == list(range(200))
    assert max(seen) == 3 and limit.active == 0


async def test_a_throttle_takes_a_slot_away_and_recovery_gives_it_back():
    now = [0.0]
    limit = HostLimit("h", 2, recovery=30.0, clock=lambda: now[0])
    limit.throttled()
    assert limit.limit == 1
    seen: list[int] = []
    finished: list[int] = []
    await asyncio.wait_for(asyncio.gather(*(hold(limit, seen, finished, n) for n in range(20))), 10)
    assert max(seen) == 1
    now[0] = 31.0  # a recovery period without complaint
    seen.clear()
    await asyncio.wait_for(asyncio.gather(*(hold(limit, seen, finished, n) for n in range(20))), 10)
    assert limit.limit == 2 and max(seen) == 2
