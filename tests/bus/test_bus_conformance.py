"""What every Bus must do, written once against the interface (dramatiq's broker tests).

These tests use only the public Bus API and unique queue names, so they run unchanged on the
RabbitMQ bus. They wait on deliveries, events and ``join``, never on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from biomaj.bus import Bus, BusError, BusTimeout, Delivery, Message, names
from biomaj.bus.messages import (
    DeadLettered,
    CancelJob,
    DownloadRequest,
    DownloadResult,
    JobEvent,
    JobRequest,
    NodeHeartbeat,
    ProcessRequest,
    ProcessResult,
    registered_types,
)
from tests.bus.note import Note

WAIT = 5.0  # generous upper bound on anything that should happen "at once"


async def take(deliveries: AsyncIterator[Delivery], timeout: float = WAIT) -> Delivery:
    """Next delivery, in the current task (asyncio.wait_for would run it in another one)."""
    async with asyncio.timeout(timeout):
        return await anext(deliveries)


async def next_event(sub: AsyncIterator[Message], timeout: float = WAIT) -> Message:
    async with asyncio.timeout(timeout):
        return await anext(sub)


def payloads(deliveries: list[Delivery]) -> list[str]:
    return [d.message.payload for d in deliveries]  # type: ignore[attr-defined]


async def test_publish_then_consume_in_order(bus: Bus, queue_name: str) -> None:
    await bus.declare_queue(queue_name)
    for n in range(5):
        await bus.publish(queue_name, Note(payload=str(n)))
    got = []
    async with contextlib.aclosing(bus.consume(queue_name)) as deliveries:
        for _ in range(5):
            delivery = await take(deliveries)
            assert delivery.attempts == 1 and not delivery.redelivered
            assert delivery.queue == queue_name
            got.append(delivery)
            await delivery.ack()
    assert payloads(got) == ["0", "1", "2", "3", "4"]
    await bus.join(queue_name, timeout=WAIT)


async def test_ack_removes_the_message(bus: Bus, queue_name: str) -> None:
    await bus.declare_queue(queue_name)
    await bus.publish(queue_name, Note(payload="once"))
    async with contextlib.aclosing(bus.consume(queue_name)) as deliveries:
        delivery = await take(deliveries)
        await delivery.ack()
        assert delivery.settled
    await bus.join(queue_name, timeout=WAIT)  # nothing ready, nothing unacked
    assert await bus.dead_letters(queue_name) == []


async def test_settling_twice_is_an_error(bus: Bus, queue_name: str) -> None:
    await bus.declare_queue(queue_name)
    await bus.publish(queue_name, Note())
    async with contextlib.aclosing(bus.consume(queue_name)) as deliveries:
        delivery = await take(deliveries)
        await delivery.ack()
        with pytest.raises(BusError):
            await delivery.ack()
        with pytest.raises(BusError):
            await delivery.nack()


async def test_nack_requeues_and_counts_attempts(bus: Bus, queue_name: str) -> None:
    await bus.declare_queue(queue_name, max_deliveries=5)
    sent = Note(payload="again")
    await bus.publish(queue_name, sent)
    async with contextlib.aclosing(bus.consume(queue_name)) as deliveries:
        first = await take(deliveries)
        assert (first.attempts, first.redelivered) == (1, False)
        await first.nack(reason="try later")
        second = await take(deliveries)
        assert second.message == sent
        assert (second.attempts, second.redelivered) == (2, True)
        await second.ack()
    await bus.join(queue_name, timeout=WAIT)


async def test_dead_letter_after_max_deliveries(bus: Bus, queue_name: str) -> None:
    await bus.declare_queue(queue_name, max_deliveries=3)
    sent = Note(payload="poison")
    await bus.publish(queue_name, sent)
    async with contextlib.aclosing(bus.consume(queue_name)) as deliveries:
        for attempt in (1, 2, 3):
            delivery = await take(deliveries)
            assert delivery.attempts == attempt
            await delivery.nack(reason=f"boom {attempt}")
    await bus.join(queue_name, timeout=WAIT)  # dead letters do not keep the queue busy
    [dead] = await bus.dead_letters(queue_name)
    assert dead.queue == queue_name
    assert dead.message == sent
    assert dead.attempts == 3
    assert dead.reason == "boom 3"
    assert dead.body == sent.encode()


async def test_dead_lettering_is_announced_on_the_events_topic(bus: Bus, queue_name: str) -> None:
    await bus.declare_queue(queue_name, max_deliveries=2)
    notices = await bus.subscribe(names.DEAD_LETTER_TOPIC)
    async with notices:
        sent = Note(payload="poison")
        await bus.publish(queue_name, sent)
        async with contextlib.aclosing(bus.consume(queue_name)) as deliveries:
            for attempt in (1, 2):
                await (await take(deliveries)).nack(reason=f"worker crashed {attempt}")
        notice = await next_event(notices)
    assert isinstance(notice, DeadLettered)
    assert (notice.queue, notice.message_id, notice.message_type) == (queue_name, sent.id, Note.TYPE)
    assert (notice.reason, notice.attempts) == ("worker crashed 2", 2)


async def test_nack_without_requeue_dead_letters_at_once(bus: Bus, queue_name: str) -> None:
    await bus.declare_queue(queue_name, max_deliveries=5)
    await bus.publish(queue_name, Note(payload="bad input"))
    async with contextlib.aclosing(bus.consume(queue_name)) as deliveries:
        delivery = await take(deliveries)
        await delivery.nack(requeue=False, reason="malformed bank file")
    await bus.join(queue_name, timeout=WAIT)
    [dead] = await bus.dead_letters(queue_name)
    assert (dead.reason, dead.attempts) == ("malformed bank file", 1)


async def test_dead_letter_queue_can_be_consumed(bus: Bus, queue_name: str) -> None:
    await bus.declare_queue(queue_name, max_deliveries=1)
    sent = Note(payload="replay me")
    await bus.publish(queue_name, sent)
    async with contextlib.aclosing(bus.consume(queue_name)) as deliveries:
        await (await take(deliveries)).nack(reason="nope")
    dead_queue = names.dead_letter_queue(queue_name)
    async with contextlib.aclosing(bus.consume(dead_queue)) as deliveries:
        delivery = await take(deliveries)
        assert delivery.message == sent
        await delivery.ack()
    assert await bus.dead_letters(queue_name) == []


async def test_cancelled_consumer_gives_its_message_to_another(bus: Bus, queue_name: str) -> None:
    await bus.declare_queue(queue_name)
    sent = Note(payload="orphan")
    await bus.publish(queue_name, sent)
    received = asyncio.Event()
    kept = []  # the generator outlives its task and is never closed: only the cancel returns it

    async def stuck_worker() -> None:
        deliveries = bus.consume(queue_name)
        kept.append(deliveries)
        async for _delivery in deliveries:
            received.set()
            await asyncio.Event().wait()  # dies mid-message

    worker = asyncio.create_task(stuck_worker())
    async with asyncio.timeout(WAIT):
        await received.wait()
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker
    async with contextlib.aclosing(bus.consume(queue_name)) as deliveries:
        delivery = await take(deliveries)
        assert delivery.message == sent
        assert delivery.redelivered and delivery.attempts == 2
        await delivery.ack()
    await bus.join(queue_name, timeout=WAIT)


async def test_closing_a_consumer_returns_what_it_holds(bus: Bus, queue_name: str) -> None:
    await bus.declare_queue(queue_name)
    await bus.publish(queue_name, Note(payload="held"))
    first = bus.consume(queue_name)
    delivery = await take(first)
    await first.aclose()  # type: ignore[attr-defined]
    with pytest.raises(BusError):
        await delivery.ack()  # it went back to the queue
    async with contextlib.aclosing(bus.consume(queue_name)) as deliveries:
        again = await take(deliveries)
        assert again.message == delivery.message and again.redelivered
        await again.ack()


async def test_prefetch_limits_unacked_deliveries(bus: Bus, queue_name: str) -> None:
    await bus.declare_queue(queue_name)
    for n in range(3):
        await bus.publish(queue_name, Note(payload=str(n)))
    async with (
        contextlib.aclosing(bus.consume(queue_name, prefetch=2)) as a,
        contextlib.aclosing(bus.consume(queue_name, prefetch=1)) as b,
    ):
        held = [await take(a), await take(a)]
        assert payloads(held) == ["0", "1"]
        third = await take(b)  # A is full, so the third message went to B
        assert payloads([third]) == ["2"]
        await held[0].ack()
        await bus.publish(queue_name, Note(payload="3"))
        fourth = await take(a)  # B still holds one: only A has room
        assert payloads([fourth]) == ["3"]
        for delivery in (held[1], third, fourth):
            await delivery.ack()
    await bus.join(queue_name, timeout=WAIT)


async def test_round_robin_between_two_consumers(bus: Bus, queue_name: str) -> None:
    await bus.declare_queue(queue_name)
    got: dict[str, list[str]] = {"a": [], "b": []}
    ready = {"a": asyncio.Event(), "b": asyncio.Event()}
    go = asyncio.Event()

    async def worker(name: str) -> None:
        async with contextlib.aclosing(bus.consume(queue_name, prefetch=1)) as deliveries:
            async for delivery in deliveries:
                got[name].append(delivery.message.payload)  # type: ignore[attr-defined]
                ready[name].set()
                await go.wait()
                await delivery.ack()

    workers = [asyncio.create_task(worker("a")), asyncio.create_task(worker("b"))]
    try:
        # Two warm-up messages: with prefetch 1 and no ack, each consumer must hold one.
        await bus.publish(queue_name, Note(payload="w1"))
        await bus.publish(queue_name, Note(payload="w2"))
        async with asyncio.timeout(WAIT):
            await ready["a"].wait()
            await ready["b"].wait()
        for n in range(8):
            await bus.publish(queue_name, Note(payload=str(n)))
        go.set()
        await bus.join(queue_name, timeout=WAIT)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    assert sorted(got["a"] + got["b"]) == sorted(["w1", "w2", *map(str, range(8))])
    assert len(got["a"]) >= 3 and len(got["b"]) >= 3, got  # shared, not one consumer takes all


async def test_broadcast_reaches_every_matching_subscriber(bus: Bus) -> None:
    jobs = await bus.subscribe("job.*")
    everything = await bus.subscribe("#")
    nodes = await bus.subscribe("node.#")
    event = JobEvent(job_id="j1", bank="alu", kind="update", state="running", step="download")
    beat = NodeHeartbeat(
        node_id="n1", host="h", pid=1, roles=["download"], actors=["downloader"],
        version="0.1.0", in_flight=0, started=1.0, at=2.0,
    )
    done = JobEvent(job_id="j1", bank="alu", kind="update", state="done")
    await bus.broadcast(event.topic(), event)
    await bus.broadcast(beat.topic(), beat)
    await bus.broadcast(done.topic(), done)
    assert [await next_event(jobs), await next_event(jobs)] == [event, done]
    assert [await next_event(everything) for _ in range(3)] == [event, beat, done]
    assert await next_event(nodes) == beat
    await bus.broadcast("node.heartbeat", beat)
    assert await next_event(nodes) == beat  # the job events never reached it
    for sub in (jobs, everything, nodes):
        await sub.close()


async def test_closed_subscription_ends_and_receives_nothing(bus: Bus) -> None:
    sub = await bus.subscribe("job.#")
    await sub.close()
    await bus.broadcast("job.alu", JobEvent(job_id="j", bank="alu", kind="update", state="done"))
    assert [event async for event in sub] == []


async def test_join_waits_for_acks(bus: Bus, queue_name: str) -> None:
    await bus.declare_queue(queue_name)
    await bus.publish(queue_name, Note())
    with pytest.raises(BusTimeout):
        await bus.join(queue_name, timeout=0.05)  # ready
    async with contextlib.aclosing(bus.consume(queue_name)) as deliveries:
        delivery = await take(deliveries)
        with pytest.raises(BusTimeout):
            await bus.join(queue_name, timeout=0.05)  # delivered but unacked
        joined = asyncio.create_task(bus.join(queue_name, timeout=WAIT))
        await delivery.ack()
        await joined


async def test_undeclared_queue_is_an_error(bus: Bus, queue_name: str) -> None:
    with pytest.raises(BusError):
        await bus.publish(queue_name, Note())


async def test_redeclaring_with_other_settings_is_an_error(bus: Bus, queue_name: str) -> None:
    await bus.declare_queue(queue_name, max_deliveries=3)
    await bus.declare_queue(queue_name, max_deliveries=3)  # same settings: fine
    await bus.declare_queue(queue_name)  # no opinion: keeps 3
    with pytest.raises(BusError):
        await bus.declare_queue(queue_name, max_deliveries=4)


async def test_default_delivery_limit_comes_from_names(bus: Bus, queue_name: str) -> None:
    await bus.declare_queue(queue_name)
    sent = Note()
    await bus.publish(queue_name, sent)
    async with contextlib.aclosing(bus.consume(queue_name)) as deliveries:
        for _ in range(names.max_deliveries(queue_name)):
            await (await take(deliveries)).nack(reason="no")
    await bus.join(queue_name, timeout=WAIT)
    [dead] = await bus.dead_letters(queue_name)
    assert dead.attempts == names.DEFAULT_MAX_DELIVERIES == 5


async def test_close_ends_consumers(bus: Bus, queue_name: str) -> None:
    await bus.declare_queue(queue_name)
    received = asyncio.Event()

    async def consumer() -> None:
        async for _delivery in bus.consume(queue_name):
            received.set()

    task = asyncio.create_task(consumer())
    await bus.publish(queue_name, Note())
    async with asyncio.timeout(WAIT):
        await received.wait()
    await bus.close()
    async with asyncio.timeout(WAIT):
        await task  # the generator ended by itself
    await bus.close()  # idempotent
    with pytest.raises(BusError):
        await bus.publish(queue_name, Note())


def samples() -> list[Message]:
    """One instance of every message type biomaj defines, with non-default values."""
    return [
        JobRequest(job_id="update:alu", kind="update", bank="alu",
                   options={"fromscratch": True, "stop_after": "download", "n": 2}, user="ada"),
        CancelJob(job_id="update:alu", bank="alu"),
        DeadLettered(queue="biomaj.download", message_id="m1", message_type="download.request", reason="boom", attempts=5),
        JobEvent(job_id="update:alu", bank="alu", kind="update", state="running", step="download",
                 message="3/10 files", progress={"done": 3, "total": 10, "bytes": 1.5e9}),
        DownloadRequest(job_id="update:alu", bank="alu", session_id="s1",
                        remote={"protocol": "ftp", "host": "ftp.ncbi.nlm.nih.gov", "root": "/blast/db/FASTA/"},
                        offline_dir="/data/offline/alu",
                        files=[{"path": "alu.n.gz", "save_as": "alu.n.gz", "size": 1234, "mtime": 1.7e9,
                                "hash": "abc", "digest": "md5"}, {"path": "alu.a.gz", "save_as": "a/alu.a.gz"}],
                        secrets={"credentials": "server.credentials"},
                        check_archive=False, stop_condition="stop_after_attempt(5)"),
        DownloadResult(job_id="update:alu", bank="alu", session_id="s1", request_id="r1",
                       files=[{"save_as": "alu.n.gz", "ok": False, "error": "550", "transferred": 10, "attempts": 3,
                               "retryable": True, "elapsed": 0.25}], final=False, node_id="n1"),
        ProcessRequest(job_id="update:alu", bank="alu", session_id="s1", name="formatdb",
                       exe="makeblastdb", args=["-in", "alu.n", "-dbtype", "nucl"],
                       env={"datadir": "/data"}, phase="postprocess", block="BLOCK1", meta="META0",
                       log_dir="/log/alu/1", cwd="/proc", shell_expand=True, timeout=3600.0,
                       docker={"image": "debian:12", "sudo": False, "workdir": "/d/alu", "volumes": [["/d", "/d", "rw"]]}),
        ProcessResult(job_id="update:alu", bank="alu", session_id="s1", request_id="r2",
                      name="formatdb", exit_code=0, ok=True,
                      metadata=[{"format": "blast", "files": ["alu.n.nhr"]}], elapsed=12.5),
        NodeHeartbeat(node_id="n1", host="h1", pid=42, roles=["download"], actors=["downloader"],
                      version="0.1.0", in_flight=2, started=1.7e9, at=1.7e9 + 5),
    ]


def test_samples_cover_every_message_type() -> None:
    builtin = {t for t, cls in registered_types().items() if cls.__module__ == "biomaj.bus.messages"}
    assert {m.TYPE for m in samples()} == builtin


async def test_every_message_type_round_trips_through_the_bus(bus: Bus, queue_name: str) -> None:
    await bus.declare_queue(queue_name)
    sent = samples()
    for msg in sent:
        await bus.publish(queue_name, msg)
    received = []
    async with contextlib.aclosing(bus.consume(queue_name, prefetch=len(sent))) as deliveries:
        for _ in sent:
            delivery = await take(deliveries)
            received.append(delivery.message)
            await delivery.ack()
    assert received == sent
    assert [type(m) for m in received] == [type(m) for m in sent]
