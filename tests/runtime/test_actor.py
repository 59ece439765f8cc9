"""The actor base: failures, graceful stop, burst mode, hooks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import pytest

from biomaj.bus import Delivery, MemoryBus
from biomaj.runtime.actor import Actor, ActorSettings
from biomaj.runtime.hooks import Hooks
from biomaj.runtime.metrics_hooks import ActorCounts, MetricsHooks
from tests.bus.note import Note

WAIT = 5.0


@dataclass(frozen=True, kw_only=True)
class RecorderSettings(ActorSettings):
    fail_on: str = "boom"


class Recorder(Actor):
    """Records payloads; fails on ``settings.fail_on``; waits on ``gate`` for payload 'slow'."""

    name = "recorder"
    queue = "test.recorder"
    settings_class = RecorderSettings
    settings: RecorderSettings

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.seen: list[str] = []
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    async def handle(self, delivery: Delivery) -> None:
        payload = delivery.message.payload  # type: ignore[attr-defined]
        if payload == self.settings.fail_on:
            raise ValueError(payload)
        if payload == "slow":
            self.started.set()
            await self.gate.wait()
        self.seen.append(payload)


class Journal(Hooks):
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def on_actor_start(self, actor: Actor) -> None:
        self.calls.append(("actor_start", actor.name))

    async def on_actor_stop(self, actor: Actor) -> None:
        self.calls.append(("actor_stop", actor.name))

    async def on_message_start(self, actor: Actor, delivery: Delivery) -> None:
        self.calls.append(("start", delivery.message.payload))  # type: ignore[attr-defined]

    async def on_message_done(self, actor: Actor, delivery: Delivery, error: BaseException | None) -> None:
        self.calls.append(("done", delivery.message.payload, type(error).__name__ if error else ""))  # type: ignore[attr-defined]


class Broken(Hooks):
    async def on_message_start(self, actor: Actor, delivery: Delivery) -> None:
        raise RuntimeError("metrics backend down")


async def publish(bus: MemoryBus, *payloads: str, max_deliveries: int | None = None) -> None:
    await bus.declare_queue(Recorder.queue, max_deliveries=max_deliveries)
    for payload in payloads:
        await bus.publish(Recorder.queue, Note(payload=payload))


async def test_failing_handler_is_logged_and_the_actor_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    bus = MemoryBus()
    metrics = MetricsHooks()
    actor = Recorder(bus, RecorderSettings(max_deliveries=2), hooks=[metrics])
    await publish(bus, "boom", "ok1", "ok2", max_deliveries=2)
    with caplog.at_level(logging.ERROR, logger="biomaj.runtime.actor"):
        handled = await actor.run_until_idle(timeout=WAIT)
    assert handled == 4  # boom twice (then dead-lettered), ok1, ok2
    assert actor.seen == ["ok1", "ok2"]
    assert metrics.actors == {"recorder": ActorCounts("recorder", succeeded=2, failed=2)}
    failures = [r for r in caplog.records if r.name == "biomaj.runtime.actor"]
    assert len(failures) == 2
    assert all("recorder" in r.getMessage() and "test.note" in r.getMessage() and "ValueError: boom" in r.getMessage()
               for r in failures)
    assert failures[0].exc_info is not None  # the traceback is logged
    [dead] = await bus.dead_letters(Recorder.queue)
    assert (dead.reason, dead.attempts) == ("ValueError: boom", 2)
    assert not actor.running


async def test_run_until_idle_uses_concurrency() -> None:
    bus = MemoryBus()
    barrier = asyncio.Barrier(3)
    peak = 0

    class Trio(Recorder):
        async def handle(self, delivery: Delivery) -> None:
            nonlocal peak
            await barrier.wait()  # only passes when three messages are in flight together
            peak = max(peak, self.in_flight)
            await super().handle(delivery)

    actor = Trio(bus, RecorderSettings(concurrency=3))
    await publish(bus, *map(str, range(9)))
    assert await actor.run_until_idle(timeout=WAIT) == 9
    assert sorted(actor.seen) == [str(n) for n in range(9)]
    assert peak == 3


async def test_run_until_idle_leaves_a_running_actor_running() -> None:
    bus = MemoryBus()
    actor = Recorder(bus)
    await actor.start()
    await publish(bus, "a")
    assert await actor.run_until_idle(timeout=WAIT) == 1
    assert actor.running
    await actor.stop()
    assert not actor.running


async def test_graceful_stop_lets_in_flight_work_finish() -> None:
    bus = MemoryBus()
    actor = Recorder(bus)
    await publish(bus, "slow", "next")
    await actor.start()
    async with asyncio.timeout(WAIT):
        await actor.started.wait()
    stopper = asyncio.create_task(actor.stop(grace=WAIT))
    await asyncio.sleep(0)  # a scheduling yield: let stop() begin, checked just below
    assert actor.stopping and actor.in_flight == 1
    actor.gate.set()
    await stopper
    assert actor.seen == ["slow"]  # finished and acked; "next" was not taken
    async with contextlib.aclosing(bus.consume(Recorder.queue)) as deliveries:
        async with asyncio.timeout(WAIT):
            left = await anext(deliveries)
        assert left.message.payload == "next" and left.attempts == 1  # type: ignore[attr-defined]
        await left.ack()
    await bus.join(Recorder.queue, timeout=WAIT)


async def test_stop_cancels_handlers_after_grace_and_returns_their_messages(caplog: pytest.LogCaptureFixture) -> None:
    bus = MemoryBus()
    journal, metrics = Journal(), MetricsHooks()
    actor = Recorder(bus, hooks=[journal, metrics])
    await publish(bus, "slow")
    await actor.start()
    async with asyncio.timeout(WAIT):
        await actor.started.wait()
    assert metrics.actors["recorder"].in_flight == 1
    with caplog.at_level(logging.WARNING, logger="biomaj.runtime.actor"):
        await actor.stop(grace=0)
    assert "cancelling 1 handler" in caplog.text
    assert ("done", "slow", "CancelledError") in journal.calls
    assert metrics.actors == {"recorder": ActorCounts("recorder")}  # given back: neither outcome
    assert actor.seen == []
    async with contextlib.aclosing(bus.consume(Recorder.queue)) as deliveries:
        async with asyncio.timeout(WAIT):
            back = await anext(deliveries)
        assert back.redelivered and back.attempts == 2
        await back.ack()


async def test_hooks_run_around_every_message() -> None:
    bus = MemoryBus()
    journal = Journal()
    actor = Recorder(bus, RecorderSettings(max_deliveries=1), hooks=[Broken(), journal])
    await publish(bus, "ok", "boom", max_deliveries=1)
    await actor.run_until_idle(timeout=WAIT)
    assert journal.calls == [
        ("actor_start", "recorder"),
        ("start", "ok"),
        ("done", "ok", ""),
        ("start", "boom"),
        ("done", "boom", "ValueError"),
        ("actor_stop", "recorder"),
    ]
    assert actor.seen == ["ok"]  # the broken hook changed nothing


async def test_handler_may_settle_the_delivery_itself() -> None:
    bus = MemoryBus()

    class Echo(Actor):
        name = "echo"
        queue = "test.echo"
        acked: list[str] = []

        async def handle(self, delivery: Delivery) -> None:
            note = delivery.message
            assert isinstance(note, Note)
            if note.payload == "reject":
                await delivery.nack(requeue=False, reason="rejected on purpose")
                return
            await delivery.ack()
            self.acked.append(note.payload)

    metrics = MetricsHooks()
    actor = Echo(bus, hooks=[metrics])
    await actor.start()
    try:
        await bus.publish(Echo.queue, Note(payload="hi"))
        await bus.publish(Echo.queue, Note(payload="reject"))
        await actor.run_until_idle(timeout=WAIT)
    finally:
        await actor.stop()
    assert actor.acked == ["hi"]
    [dead] = await bus.dead_letters(Echo.queue)
    assert (dead.reason, dead.attempts) == ("rejected on purpose", 1)
    assert metrics.actors == {"echo": ActorCounts("echo", succeeded=2)}


def test_an_actor_needs_a_queue_and_sane_settings() -> None:
    with pytest.raises(TypeError, match="queue"):
        Actor(MemoryBus())
    with pytest.raises(ValueError):
        ActorSettings(concurrency=0)
