"""Bank leases on the in-memory state and on Redis: one holder per bank, kept alive by renewal,
gone after its holder stops renewing, and a holder told when it lost its lease."""

from __future__ import annotations

import asyncio

import pytest

from biomaj.runtime.lease import BankBusy, BankLease, holder_of, lease_name
from biomaj.state import LockOwner, MemoryState, State, open_state
from tests.state.conftest import REDIS_DEFAULT_URL, REDIS_URL_VARIABLE, STATES, unique_prefix

TTL = 0.6  # the lease renews every TTL/3


@pytest.fixture(params=STATES)
async def state(request: pytest.FixtureRequest, service_url) -> State:
    """A state on the real clock (leases renew in real time)."""
    if request.param == "memory":
        instance: State = MemoryState()
    else:
        url = service_url(REDIS_URL_VARIABLE, REDIS_DEFAULT_URL, "Redis")
        instance = open_state(url, prefix=unique_prefix())
    yield instance
    if request.param == "redis":
        await instance.purge()
    await instance.close()


def owner(job: str, node: str = "manager-1") -> LockOwner:
    return LockOwner("host", 1234, job, node)


async def test_one_job_per_bank(state: State):
    async with BankLease(state, "alu", owner("job-1"), ttl=TTL):
        with pytest.raises(BankBusy, match="bank alu is being worked on by job job-1 on node manager-1"):
            async with BankLease(state, "alu", owner("job-2", "manager-2"), ttl=TTL):
                pass
        async with BankLease(state, "other", owner("job-2", "manager-2"), ttl=TTL):  # other banks run
            pass
    assert await holder_of(state, "alu") is None  # released at the end
    async with BankLease(state, "alu", owner("job-2", "manager-2"), ttl=TTL):
        pass


async def test_a_live_holder_keeps_its_lease_beyond_the_ttl(state: State):
    async with BankLease(state, "alu", owner("job-1"), ttl=TTL) as lease:
        await asyncio.sleep(TTL * 3)
        holder = await holder_of(state, "alu")
        assert holder is not None and holder.owner.job_id == "job-1"
        assert lease.lost is None


async def test_a_dead_holders_lease_expires(state: State):
    assert await state.acquire_lock(lease_name("alu"), owner("job-1"), TTL)  # taken, never renewed
    with pytest.raises(BankBusy):
        async with BankLease(state, "alu", owner("job-2"), ttl=TTL):
            pass
    await asyncio.sleep(TTL * 1.5)
    async with BankLease(state, "alu", owner("job-2"), ttl=TTL):
        assert (await holder_of(state, "alu")).owner.job_id == "job-2"


async def test_the_same_job_resumed_takes_over_its_dead_runs_lease(state: State):
    dead_run = LockOwner("host", 1111, "job-1", "manager-1")
    assert await state.acquire_lock(lease_name("alu"), dead_run, 60)
    async with BankLease(state, "alu", LockOwner("host", 2222, "job-1", "manager-1"), ttl=TTL):
        assert (await holder_of(state, "alu")).owner.pid == 2222


async def test_a_broken_lease_stops_its_job(state: State):
    lost: list[str] = []
    async with BankLease(state, "alu", owner("job-1"), ttl=TTL, on_lost=lost.append) as lease:
        await state.break_lock(lease_name("alu"))  # an admin, or an expiry while Redis was away
        await state.acquire_lock(lease_name("alu"), owner("job-2", "manager-2"), 60)
        for _ in range(50):
            if lost:
                break
            await asyncio.sleep(TTL / 6)
    assert lost == ["its lease was taken or broken"] and lease.lost == lost[0]
    assert (await holder_of(state, "alu")).owner.job_id == "job-2"  # not released by the loser
