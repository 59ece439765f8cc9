"""What every State must do, written once against the interface (memory now, Redis later).

Time moves only through the injected ``clock`` fixture: no test sleeps.
"""

from __future__ import annotations

from typing import Protocol

import pytest

from biomaj.state import LockOwner, NodeInfo, State, StateError


class FakeClock(Protocol):
    """The ``clock`` fixture (tests/state/conftest.py)."""

    def __call__(self) -> float: ...

    def advance(self, seconds: float) -> None: ...


OWNER = LockOwner(host="h1", pid=100, job_id="update:alu", node_id="n1")
OTHER = LockOwner(host="h2", pid=200, job_id="update:alu", node_id="n2")


def node(node_id: str, *, clock: FakeClock, in_flight: int = 0) -> NodeInfo:
    return NodeInfo(node_id=node_id, host="h", pid=1, roles=("download",), actors=("downloader",),
                    version="0.1.0", in_flight=in_flight, started=clock() - 60, last_seen=clock())


# --- locks -----------------------------------------------------------------------------------


async def test_lock_is_exclusive(state: State) -> None:
    assert await state.acquire_lock("alu", OWNER, ttl=60)
    assert not await state.acquire_lock("alu", OTHER, ttl=60)
    assert await state.acquire_lock("pdb", OTHER, ttl=60)  # another bank, another lock


async def test_lock_info(state: State, clock: FakeClock) -> None:
    assert await state.get_lock("alu") is None
    await state.acquire_lock("alu", OWNER, ttl=60)
    info = await state.get_lock("alu")
    assert info is not None
    assert (info.name, info.owner) == ("alu", OWNER)
    assert info.acquired == pytest.approx(clock())
    assert info.expires == pytest.approx(clock() + 60)


async def test_reacquire_by_the_same_owner_renews(state: State, clock: FakeClock) -> None:
    await state.acquire_lock("alu", OWNER, ttl=10)
    clock.advance(8)
    assert await state.acquire_lock("alu", OWNER, ttl=10)
    clock.advance(8)
    assert not await state.acquire_lock("alu", OTHER, ttl=10)


async def test_renewal_extends_the_lock(state: State, clock: FakeClock) -> None:
    await state.acquire_lock("alu", OWNER, ttl=10)
    clock.advance(8)
    assert await state.renew_lock("alu", OWNER, ttl=10)
    clock.advance(8)  # 16 s after acquiring: alive only thanks to the renewal
    info = await state.get_lock("alu")
    assert info is not None and info.owner == OWNER
    assert info.expires == pytest.approx(clock() + 2)
    assert not await state.renew_lock("alu", OTHER, ttl=10)


async def test_lock_expires(state: State, clock: FakeClock) -> None:
    await state.acquire_lock("alu", OWNER, ttl=10)
    clock.advance(10)
    assert await state.get_lock("alu") is None
    assert not await state.renew_lock("alu", OWNER, ttl=10)  # too late: must acquire again
    assert await state.acquire_lock("alu", OTHER, ttl=10)
    info = await state.get_lock("alu")
    assert info is not None and info.owner == OTHER
    assert info.acquired == pytest.approx(clock())


async def test_release_only_by_owner(state: State) -> None:
    await state.acquire_lock("alu", OWNER, ttl=60)
    assert not await state.release_lock("alu", OTHER)
    assert (await state.get_lock("alu")).owner == OWNER  # type: ignore[union-attr]
    assert await state.release_lock("alu", OWNER)
    assert await state.get_lock("alu") is None
    assert not await state.release_lock("alu", OWNER)  # already free
    assert await state.acquire_lock("alu", OTHER, ttl=60)


async def test_release_after_expiry_does_not_free_the_next_owner(state: State, clock: FakeClock) -> None:
    await state.acquire_lock("alu", OWNER, ttl=10)
    clock.advance(11)
    await state.acquire_lock("alu", OTHER, ttl=10)
    assert not await state.release_lock("alu", OWNER)
    assert (await state.get_lock("alu")).owner == OTHER  # type: ignore[union-attr]


async def test_owner_identity_is_every_field(state: State) -> None:
    await state.acquire_lock("alu", OWNER, ttl=60)
    same_node_other_job = LockOwner(host="h1", pid=100, job_id="repair:alu", node_id="n1")
    assert not await state.acquire_lock("alu", same_node_other_job, ttl=60)
    assert not await state.release_lock("alu", same_node_other_job)


async def test_break_lock(state: State) -> None:
    assert not await state.break_lock("alu")
    await state.acquire_lock("alu", OWNER, ttl=60)
    assert await state.break_lock("alu")
    assert await state.get_lock("alu") is None
    assert not await state.renew_lock("alu", OWNER, ttl=60)


async def test_list_locks(state: State, clock: FakeClock) -> None:
    await state.acquire_lock("pdb", OWNER, ttl=60)
    await state.acquire_lock("alu", OTHER, ttl=60)
    await state.acquire_lock("old", OWNER, ttl=5)
    clock.advance(5)
    assert [(lock.name, lock.owner) for lock in await state.locks()] == [("alu", OTHER), ("pdb", OWNER)]


@pytest.mark.parametrize("ttl", [0, -1, "10", None])
async def test_bad_ttl(state: State, ttl: object) -> None:
    with pytest.raises(ValueError):
        await state.acquire_lock("alu", OWNER, ttl=ttl)  # type: ignore[arg-type]


# --- node registry ---------------------------------------------------------------------------


async def test_node_registry_ttl(state: State, clock: FakeClock) -> None:
    await state.heartbeat(node("n2", clock=clock), ttl=15)
    await state.heartbeat(node("n1", clock=clock, in_flight=3), ttl=15)
    listed = await state.nodes()
    assert [n.node_id for n in listed] == ["n1", "n2"]
    assert listed[0] == node("n1", clock=clock, in_flight=3)  # stored as given
    clock.advance(10)
    await state.heartbeat(node("n1", clock=clock), ttl=15)  # n1 keeps beating, n2 went silent
    clock.advance(10)
    assert [n.node_id for n in await state.nodes()] == ["n1"]
    clock.advance(15)
    assert await state.nodes() == []


async def test_forget_node(state: State, clock: FakeClock) -> None:
    await state.heartbeat(node("n1", clock=clock), ttl=15)
    assert await state.forget_node("n1")
    assert await state.nodes() == []
    assert not await state.forget_node("n1")


def test_node_info_dict_round_trip() -> None:
    info = NodeInfo(node_id="n", host="h", pid=1, roles=("manager", "web"), actors=("manager",))
    assert NodeInfo.from_dict(info.to_dict()) == info
    assert info.to_dict()["roles"] == ["manager", "web"]


# --- cancel flags ----------------------------------------------------------------------------


async def test_cancel_flags(state: State) -> None:
    assert not await state.is_cancelled("update:alu")
    await state.set_cancel("update:alu")
    assert await state.is_cancelled("update:alu")
    assert not await state.is_cancelled("update:pdb")
    assert await state.clear_cancel("update:alu")
    assert not await state.is_cancelled("update:alu")
    assert not await state.clear_cancel("update:alu")


async def test_cancel_flag_ttl(state: State, clock: FakeClock) -> None:
    await state.set_cancel("update:alu", ttl=30)
    clock.advance(29)
    assert await state.is_cancelled("update:alu")
    clock.advance(1)
    assert not await state.is_cancelled("update:alu")
    assert not await state.clear_cancel("update:alu")


# --- progress counters -----------------------------------------------------------------------


async def test_progress_counters(state: State) -> None:
    assert await state.get_progress("j1") == {}
    assert await state.incr_progress("j1", "done") == 1
    assert await state.incr_progress("j1", "done", 4) == 5
    assert await state.incr_progress("j1", "errors", 1) == 1
    await state.set_progress("j1", {"total": 10, "step": "download", "rate": 1.5, "final": False})
    assert await state.get_progress("j1") == {
        "done": 5, "errors": 1, "total": 10, "step": "download", "rate": 1.5, "final": False,
    }
    await state.set_progress("j1", {"step": "postprocess"})  # merges, keeps the rest
    assert (await state.get_progress("j1"))["done"] == 5
    assert await state.get_progress("j2") == {}  # jobs are separate


async def test_progress_is_a_copy(state: State) -> None:
    await state.set_progress("j1", {"total": 10})
    snapshot = await state.get_progress("j1")
    snapshot["total"] = 0
    assert await state.get_progress("j1") == {"total": 10}


async def test_clear_progress(state: State) -> None:
    await state.incr_progress("j1", "done")
    await state.clear_progress("j1")
    assert await state.get_progress("j1") == {}
    await state.clear_progress("never-seen")


async def test_progress_value_rules(state: State) -> None:
    await state.set_progress("j1", {"step": "download"})
    with pytest.raises(StateError):
        await state.incr_progress("j1", "step")
    with pytest.raises(TypeError):
        await state.incr_progress("j1", "done", 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await state.set_progress("j1", {"files": ["a", "b"]})  # type: ignore[dict-item]


# --- counting semaphores ---------------------------------------------------------------------

SEM = "host:ftp.example.org:21"


async def test_slots_up_to_the_limit_across_holders(state: State) -> None:
    assert await state.acquire_slot(SEM, "n1", limit=3, ttl=30)
    assert await state.acquire_slot(SEM, "n1", limit=3, ttl=30)
    assert await state.acquire_slot(SEM, "n2", limit=3, ttl=30)
    assert not await state.acquire_slot(SEM, "n2", limit=3, ttl=30)  # 3 taken, whoever holds them
    assert not await state.acquire_slot(SEM, "n3", limit=3, ttl=30)
    assert await state.acquire_slot("host:other", "n3", limit=3, ttl=30)  # another server, another budget
    holders = await state.slot_holders(SEM)
    assert (dict(holders.held), holders.total, holders.waiting) == ({"n1": 2, "n2": 1}, 3, frozenset())
    assert await state.acquire_slot(SEM, "n3", limit=4, ttl=30)  # the caller's limit decides


async def test_release_gives_one_slot_back(state: State) -> None:
    await state.acquire_slot(SEM, "n1", limit=2, ttl=30)
    await state.acquire_slot(SEM, "n1", limit=2, ttl=30)
    assert not await state.release_slot(SEM, "n2")  # holds none
    assert await state.release_slot(SEM, "n1")
    assert (await state.slot_holders(SEM)).held == {"n1": 1}
    assert await state.acquire_slot(SEM, "n2", limit=2, ttl=30)
    assert await state.release_slot(SEM, "n1")
    assert not await state.release_slot(SEM, "n1")
    assert (await state.slot_holders(SEM)).held == {"n2": 1}


async def test_a_dead_holders_slots_come_back_after_its_ttl(state: State, clock: FakeClock) -> None:
    await state.acquire_slot(SEM, "dead", limit=2, ttl=30)
    await state.acquire_slot(SEM, "dead", limit=2, ttl=30)
    await state.acquire_slot(SEM, "alive", limit=3, ttl=30)
    clock.advance(20)
    assert await state.renew_slots(SEM, "alive", ttl=30) == 1
    assert not await state.acquire_slot(SEM, "alive", limit=3, ttl=30)
    clock.advance(10)  # "dead" never renewed: its two slots are free again, all at once
    assert (await state.slot_holders(SEM)).held == {"alive": 1}
    assert await state.acquire_slot(SEM, "alive", limit=3, ttl=30)
    assert await state.acquire_slot(SEM, "alive", limit=3, ttl=30)
    assert await state.renew_slots(SEM, "dead", ttl=30) == 0  # too late: it must acquire again
    assert not await state.release_slot(SEM, "dead")


async def test_taking_a_slot_renews_the_holders_lease(state: State, clock: FakeClock) -> None:
    await state.acquire_slot(SEM, "n1", limit=3, ttl=10)
    clock.advance(8)
    await state.acquire_slot(SEM, "n1", limit=3, ttl=10)
    clock.advance(8)  # 16 s after the first: alive thanks to the second
    assert (await state.slot_holders(SEM)).held == {"n1": 2}
    assert await state.renew_slots(SEM, "n1", ttl=10) == 2
    assert await state.renew_slots(SEM, "n2", ttl=10) == 0


async def test_a_refused_holder_is_seen_waiting(state: State, clock: FakeClock) -> None:
    await state.acquire_slot(SEM, "n1", limit=1, ttl=30)
    assert not await state.acquire_slot(SEM, "n2", limit=1, ttl=30)  # no mark asked for
    assert (await state.slot_holders(SEM)).waiting == frozenset()
    assert not await state.acquire_slot(SEM, "n2", limit=1, ttl=30, wait_ttl=2)
    assert not await state.acquire_slot(SEM, "n1", limit=1, ttl=30, wait_ttl=2)  # a holder may want more
    holders = await state.slot_holders(SEM)
    assert (dict(holders.held), holders.waiting) == ({"n1": 1}, frozenset({"n1", "n2"}))
    clock.advance(2)  # the marks lapse unless the holders ask again; n1's slot stays
    holders = await state.slot_holders(SEM)
    assert (dict(holders.held), holders.waiting) == ({"n1": 1}, frozenset())
    assert not await state.acquire_slot(SEM, "n2", limit=1, ttl=30, wait_ttl=2)
    assert await state.release_slot(SEM, "n1")
    assert await state.acquire_slot(SEM, "n2", limit=1, ttl=30, wait_ttl=2)  # taken: no longer waiting
    holders = await state.slot_holders(SEM)
    assert (dict(holders.held), holders.waiting) == ({"n2": 1}, frozenset())


async def test_slot_argument_checks(state: State) -> None:
    for limit in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            await state.acquire_slot(SEM, "n1", limit=limit, ttl=30)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await state.acquire_slot(SEM, "n1", limit=1, ttl=0)
    with pytest.raises(ValueError):
        await state.renew_slots(SEM, "n1", ttl=-1)


# --- throttles -------------------------------------------------------------------------------


async def test_throttle_until_it_expires(state: State, clock: FakeClock) -> None:
    assert await state.get_throttle(SEM) is None
    await state.set_throttle(SEM, 2, ttl=30)
    throttle = await state.get_throttle(SEM)
    assert throttle is not None and throttle.limit == 2
    assert throttle.expires == pytest.approx(clock() + 30)
    await state.set_throttle(SEM, 3, ttl=60)  # the last one set wins
    assert (await state.get_throttle(SEM)).limit == 3  # type: ignore[union-attr]
    clock.advance(60)
    assert await state.get_throttle(SEM) is None
    with pytest.raises(ValueError):
        await state.set_throttle(SEM, 0, ttl=30)
