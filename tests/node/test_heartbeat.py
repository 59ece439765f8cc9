"""The node heartbeat: a node registers, announces itself, is forgotten when it stops or falls silent."""

from __future__ import annotations

import asyncio

import pytest

from biomaj.bus import MemoryBus, names
from biomaj.bus.messages import NodeHeartbeat
from biomaj.node.heartbeat import Heartbeat
from biomaj.state import MemoryState

WAIT = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_heartbeat_registers_announces_and_forgets_the_node() -> None:
    bus, clock = MemoryBus(), Clock()
    state = MemoryState(clock=clock)
    events = await bus.subscribe("node.*")
    beat = Heartbeat(state, bus, node_id="n1", roles=["download"], actors=["downloader"],
                     in_flight=lambda: 2, interval=5, ttl=15, clock=clock)
    await beat.start()
    try:
        [info] = await state.nodes()
        assert (info.node_id, info.roles, info.actors, info.in_flight) == ("n1", ("download",), ("downloader",), 2)
        assert info.last_seen == clock.now and info.pid > 0 and info.host
        async with asyncio.timeout(WAIT):
            event = await anext(events)
        assert isinstance(event, NodeHeartbeat) and event.topic() == names.NODE_TOPIC
        assert (event.node_id, event.roles, event.in_flight, event.at) == ("n1", ["download"], 2, clock.now)
    finally:
        await beat.stop()
    assert await state.nodes() == []  # gone at once, not after the TTL
    await events.close()


async def test_a_silent_node_expires() -> None:
    clock = Clock()
    state = MemoryState(clock=clock)
    beat = Heartbeat(state, None, node_id="n1", interval=5, ttl=15, clock=clock)
    await beat.beat()  # one beat, no background task: the node then "dies"
    clock.now += 14
    assert [n.node_id for n in await state.nodes()] == ["n1"]
    clock.now += 1
    assert await state.nodes() == []


def test_heartbeat_ttl_must_exceed_interval() -> None:
    with pytest.raises(ValueError):
        Heartbeat(MemoryState(), None, interval=5, ttl=5)
