"""The host budget: never more slots than the limit, every waiter served in turn, fewer after a
throttle and one more per recovery period; shared by budgets on one state (two nodes of a
cluster), where a holder that stops renewing loses its slots after the TTL and a throttle is
seen by every budget.

The shared tests run on the memory state (one process standing for the cluster) and on Redis
(``service``: skipped on a laptop without it, a failure when CI=true). TTLs move with the
state's injected clock only.
"""

from __future__ import annotations

import asyncio

import pytest

from biomaj.download.limits import HostBudget
from biomaj.state import MemoryState, State, open_state
from tests.state.conftest import REDIS_DEFAULT_URL, REDIS_URL_VARIABLE, FakeClock, unique_prefix

HOST = "ftp.example.org:21"


class Peak:
    """Slots held at once, over every budget of a test."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def hold(self, budget: HostBudget, seconds: float = 0.001) -> None:
        async with budget.slot(HOST):
            self.now += 1
            self.peak = max(self.peak, self.now)
            await asyncio.sleep(seconds)
            self.now -= 1


# --- one process ----------------------------------------------------------------------------------


async def test_never_more_than_the_limit_and_every_waiter_is_served():
    budget, peak = HostBudget(3), Peak()
    await asyncio.wait_for(asyncio.gather(*(peak.hold(budget) for _ in range(200))), 10)
    assert peak.peak == 3 and budget.limit(HOST) == 3
    assert await budget.try_acquire(HOST) is not None  # all given back


async def test_waiters_are_served_in_turn():
    budget = HostBudget(1)
    first = await budget.acquire(HOST)
    order: list[int] = []

    async def wait(n: int) -> None:
        async with budget.slot(HOST):
            order.append(n)

    waiting = [asyncio.create_task(wait(n)) for n in range(5)]
    await asyncio.sleep(0)
    async with budget.try_slot(HOST) as free:
        assert not free  # others wait: nobody jumps the queue
    first.release()
    await asyncio.gather(*waiting)
    assert order == [0, 1, 2, 3, 4]


async def test_try_slot_answers_at_once():
    budget = HostBudget(2)
    async with budget.try_slot(HOST) as one, budget.try_slot(HOST) as two:
        async with budget.try_slot(HOST) as three:
            assert (one, two, three) == (True, True, False)
    async with budget.try_slot(HOST) as again:
        assert again


async def test_a_cancelled_waiter_takes_no_slot():
    budget = HostBudget(1)
    held = await budget.acquire(HOST)
    waiter = asyncio.create_task(budget.acquire(HOST))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    held.release()
    async with budget.try_slot(HOST) as free:
        assert free


def test_limits_per_host_by_name_or_address():
    budget = HostBudget(4, {"ftp.ncbi.nlm.nih.gov": 3, "ftp.ebi.ac.uk:21": 1, "ftp.ebi.ac.uk": 6})
    assert budget.limit("ftp.ncbi.nlm.nih.gov:21") == 3  # the host name covers every port
    assert budget.limit("FTP.NCBI.NLM.NIH.GOV") == 3
    assert budget.limit("ftp.ebi.ac.uk:21") == 1  # host:port wins over the host name
    assert budget.limit("ftp.ebi.ac.uk:443") == 6
    assert budget.limit("other.org:80") == 4
    with pytest.raises(ValueError):
        HostBudget(4, {"x": 0})


async def test_a_throttle_takes_a_slot_away_and_recovery_gives_them_back_one_by_one():
    now = [0.0]
    budget = HostBudget(3, recovery=30.0, clock=lambda: now[0])
    budget.throttled(HOST)
    budget.throttled(HOST)
    assert budget.limit(HOST) == 1
    peak = Peak()
    await asyncio.wait_for(asyncio.gather(*(peak.hold(budget) for _ in range(20))), 10)
    assert peak.peak == 1
    now[0] = 30.0  # a recovery period without complaint: one more
    assert budget.limit(HOST) == 2
    now[0] = 60.0
    assert budget.limit(HOST) == 3
    peak = Peak()
    await asyncio.wait_for(asyncio.gather(*(peak.hold(budget) for _ in range(20))), 10)
    assert peak.peak == 3


async def test_retry_after_holds_the_lowered_limit_longer():
    now = [0.0]
    budget = HostBudget(2, recovery=30.0, clock=lambda: now[0])
    budget.throttled(HOST, retry_after=120)
    now[0] = 119.0
    assert budget.limit(HOST) == 1
    now[0] = 120.0
    assert budget.limit(HOST) == 2


async def test_a_waiter_held_back_by_a_throttle_goes_when_the_limit_grows():
    budget = HostBudget(2, recovery=0.2)
    first = await budget.acquire(HOST)
    budget.throttled(HOST)  # at most 1 for 0.2 s: the second waits, though 2 is the limit
    second = asyncio.create_task(budget.acquire(HOST))
    await asyncio.sleep(0.05)
    assert not second.done()
    slot = await asyncio.wait_for(second, 2)  # grown back without any release
    slot.release()
    first.release()


# --- a cluster: budgets on one shared state -------------------------------------------------------

SHARED = ["memory", pytest.param("redis", marks=pytest.mark.service)]


@pytest.fixture(params=SHARED)
async def shared_state(request, service_url, clock: FakeClock):
    """One state for the budgets of a test, as the nodes of a cluster see Redis."""
    if request.param == "memory":
        state: State = MemoryState(clock=clock)
    else:
        url = service_url(REDIS_URL_VARIABLE, REDIS_DEFAULT_URL, "Redis")
        state = open_state(url, clock=clock, prefix=unique_prefix())
    yield state
    if request.param == "redis":
        await state.purge()  # type: ignore[attr-defined]
    await state.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_two_budgets_never_exceed_the_limit_together(shared_state):
    one = HostBudget(3, state=shared_state, node_id="n1")
    two = HostBudget(3, state=shared_state, node_id="n2")
    peak = Peak()
    try:
        await asyncio.wait_for(asyncio.gather(*(peak.hold(b, 0.005) for _ in range(15) for b in (one, two))), 30)
    finally:
        await one.close()
        await two.close()
    assert peak.peak == 3
    assert (await shared_state.slot_holders(f"host:{HOST}")).total == 0  # all given back


async def test_a_holder_that_stops_renewing_loses_its_slots_after_the_ttl(shared_state, clock):
    dead = HostBudget(2, state=shared_state, node_id="dead", lease_ttl=30)
    alive = HostBudget(2, state=shared_state, node_id="alive", lease_ttl=30)
    try:
        await dead.acquire(HOST)
        await dead.acquire(HOST)  # then killed: never renewed, never released
        async with alive.try_slot(HOST) as free:
            assert not free
        clock.advance(29)
        async with alive.try_slot(HOST) as free:
            assert not free
        clock.advance(1)
        async with alive.try_slot(HOST) as one, alive.try_slot(HOST) as two:
            assert one and two
    finally:
        await alive.close()
        await dead.close()


async def test_closing_a_budget_gives_its_slots_back_at_once(shared_state):
    leaving = HostBudget(2, state=shared_state, node_id="leaving")
    staying = HostBudget(2, state=shared_state, node_id="staying")
    try:
        await leaving.acquire(HOST)
        await leaving.acquire(HOST)
        await leaving.close()  # a node stopping (SIGTERM)
        async with staying.try_slot(HOST) as one, staying.try_slot(HOST) as two:
            assert one and two
    finally:
        await staying.close()


async def test_a_waiter_gets_the_slot_another_node_gives_back(shared_state):
    one = HostBudget(1, state=shared_state, node_id="n1")
    two = HostBudget(1, state=shared_state, node_id="n2")
    try:
        held = await one.acquire(HOST)
        waiting = asyncio.create_task(two.acquire(HOST))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        assert "n2" in {h.split("/")[0] for h in (await shared_state.slot_holders(f"host:{HOST}")).waiting}
        held.release()
        (await asyncio.wait_for(waiting, 5)).release()  # within a poll or two
    finally:
        await one.close()
        await two.close()


async def test_a_throttle_is_seen_by_every_budget(shared_state, clock):
    one = HostBudget(4, state=shared_state, node_id="n1", recovery=30)
    two = HostBudget(4, state=shared_state, node_id="n2", recovery=30)
    try:
        one.throttled(HOST)
        one.throttled(HOST)
        await asyncio.gather(*one._tasks)  # written to the state
        assert one.limit(HOST) == 2
        async with two.try_slot(HOST) as free:  # its first look at the host reads the state
            assert free
        assert two.limit(HOST) == 2
        holders = [await two.acquire(HOST), await two.acquire(HOST)]
        async with two.try_slot(HOST) as free:
            assert not free  # 2 for the whole cluster now
        clock.advance(30)
        assert two.limit(HOST) == 3  # one more per recovery period
        clock.advance(30)
        assert two.limit(HOST) == 4
        for slot in holders:
            slot.release()
    finally:
        await one.close()
        await two.close()


async def test_a_busy_node_yields_its_share_to_a_waiting_one(shared_state):
    """Node one keeps all its slots busy; node two, waiting, gets one within a few refreshes:
    one gives back what it holds above its fair share as its slots come back."""
    busy = HostBudget(4, state=shared_state, node_id="busy")
    late = HostBudget(4, state=shared_state, node_id="late")
    stop = asyncio.Event()

    async def keep_busy() -> None:
        while not stop.is_set():
            async with busy.slot(HOST):
                await asyncio.sleep(0.01)

    workers = [asyncio.create_task(keep_busy()) for _ in range(8)]
    try:
        await asyncio.sleep(0.1)
        slot = await asyncio.wait_for(late.acquire(HOST), 10)
        slot.release()
    finally:
        stop.set()
        await asyncio.gather(*workers)
        await busy.close()
        await late.close()
