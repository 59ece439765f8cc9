"""Behaviour specific to the in-memory bus, plus open_bus and topic matching."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from biomaj.bus import BusError, Delivery, MemoryBus, open_bus, topic_matches
from biomaj.bus.messages import JobEvent
from tests.bus.note import Note
from biomaj.errors import ConfigError


async def take(deliveries, timeout: float = 5.0) -> Delivery:
    async with asyncio.timeout(timeout):
        return await anext(deliveries)


async def test_nack_requeues_at_the_end() -> None:
    bus = MemoryBus()
    await bus.declare_queue("q")
    await bus.publish("q", Note(payload="a"))
    await bus.publish("q", Note(payload="b"))
    async with contextlib.aclosing(bus.consume("q")) as deliveries:
        first = await take(deliveries)
        await first.nack(reason="later")
        order = []
        for _ in range(2):
            delivery = await take(deliveries)
            order.append(delivery.message.payload)
            await delivery.ack()
    assert order == ["b", "a"]


async def test_returned_messages_keep_their_order_and_unseen_ones_are_not_attempts() -> None:
    bus = MemoryBus()
    await bus.declare_queue("q")
    for name in "abc":
        await bus.publish("q", Note(payload=name))
    first = bus.consume("q", prefetch=3)
    seen = await take(first)  # a is seen; b and c are only buffered
    await first.aclose()
    async with contextlib.aclosing(bus.consume("q", prefetch=3)) as deliveries:
        again = [await take(deliveries) for _ in range(3)]
        assert [d.message.payload for d in again] == ["a", "b", "c"]
        assert [d.attempts for d in again] == [2, 1, 1]
        assert again[0].message == seen.message
        for delivery in again:
            await delivery.ack()
    await bus.join("q", timeout=1)


async def test_consumer_lost_at_max_deliveries_dead_letters() -> None:
    bus = MemoryBus()
    await bus.declare_queue("q", max_deliveries=1)
    await bus.publish("q", Note())
    first = bus.consume("q")
    await take(first)
    await first.aclose()
    await bus.join("q", timeout=1)
    [dead] = await bus.dead_letters("q")
    assert dead.attempts == 1 and "consumer went away" in dead.reason


async def test_work_queues_never_drop() -> None:
    bus = MemoryBus()
    await bus.declare_queue("q")
    for n in range(5000):
        await bus.publish("q", Note(payload=str(n)))
    count = 0
    async with contextlib.aclosing(bus.consume("q", prefetch=100)) as deliveries:
        for _ in range(5000):
            await (await take(deliveries)).ack()
            count += 1
    assert count == 5000
    await bus.join("q", timeout=1)


async def test_slow_subscriber_drops_oldest_events_and_never_blocks(caplog: pytest.LogCaptureFixture) -> None:
    bus = MemoryBus()
    slow = await bus.subscribe("job.*", buffer=3)
    fast = await bus.subscribe("job.*", buffer=100)
    with caplog.at_level(logging.WARNING, logger="biomaj.bus"):
        for n in range(10):  # no reader runs meanwhile: broadcast must not wait for one
            await bus.broadcast("job.alu", JobEvent(job_id=str(n), bank="alu", kind="update", state="running"))
    assert slow.dropped == 7 and fast.dropped == 0
    assert "dropped its oldest event" in caplog.text
    assert [(await anext(slow)).job_id for _ in range(3)] == ["7", "8", "9"]
    assert [(await anext(fast)).job_id for _ in range(10)] == [str(n) for n in range(10)]


async def test_every_consumer_gets_its_own_copy() -> None:
    bus = MemoryBus()
    a = await bus.subscribe("#")
    b = await bus.subscribe("#")
    await bus.broadcast("job.x", JobEvent(job_id="j", bank="x", kind="update", state="running",
                                          progress={"done": 1}))
    first, second = await anext(a), await anext(b)
    first.progress["done"] = 99
    assert second.progress == {"done": 1}


@pytest.mark.parametrize("name", ["", "a*b", "x#", "q.dead"])
async def test_bad_queue_names(name: str) -> None:
    with pytest.raises(BusError):
        await MemoryBus().declare_queue(name)


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("job.*", "job.alu", True),
        ("job.*", "job.alu.done", False),
        ("job.*", "job", False),
        ("job.#", "job", True),
        ("job.#", "job.alu.done", True),
        ("#", "node.heartbeat", True),
        ("*.heartbeat", "node.heartbeat", True),
        ("#.done", "job.alu.done", True),
        ("job.#.done", "job.done", True),
        ("job.#.done", "job.alu.x.done", True),
        ("job.#.done", "job.alu.failed", False),
        ("node.heartbeat", "node.heartbeat", True),
        ("node.heartbeat", "node.heartbeats", False),
    ],
)
def test_topic_matches(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected


@pytest.mark.parametrize("url", [None, "", "memory://", "MEMORY://", "memory"])
def test_open_bus_memory(url: str | None) -> None:
    assert isinstance(open_bus(url), MemoryBus)


def test_open_bus_rejects_other_urls_without_leaking_passwords() -> None:
    with pytest.raises(ConfigError) as info:
        open_bus("redis://admin:s3cret@host:6379/0")
    text = str(info.value)
    assert text.startswith("bus.url:") and "memory://" in text and "amqp://" in text
    assert "s3cret" not in text
