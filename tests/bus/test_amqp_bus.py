"""What is specific to the RabbitMQ bus: durability, wire format, confirms, counting, reconnection.

The shared behaviour is in test_bus_conformance.py. These tests look at the broker directly
with aio-pika where the Bus API cannot show something (headers, delivery mode, exclusivity).
Each test runs on its own RabbitMQ virtual host (``amqp_url``), deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aiormq.exceptions import ChannelPreconditionFailed

from biomaj.bus import Bus, BusError, Delivery, Message, names, open_bus, topic_matches
from biomaj.bus.amqp import AmqpBus
from biomaj.bus.messages import JobEvent, NodeHeartbeat
from biomaj.errors import ConfigError
from tests.bus.note import Note

WAIT = 5.0
RECONNECT_WAIT = 20.0  # broker-side close, then aio-pika's reconnection (1 s interval)


async def take(deliveries: AsyncIterator[Delivery], timeout: float = WAIT) -> Delivery:
    async with asyncio.timeout(timeout):
        return await anext(deliveries)


async def next_event(sub: AsyncIterator[Message], timeout: float = WAIT) -> Message:
    async with asyncio.timeout(timeout):
        return await anext(sub)


@contextlib.asynccontextmanager
async def raw_channel(url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A plain aio-pika channel, to look at the broker behind the bus's back."""
    connection = await aio_pika.connect(url)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def raw_get(url: str, queue: str) -> aio_pika.abc.AbstractIncomingMessage:
    async with raw_channel(url) as channel:
        q = await channel.declare_queue(queue, passive=True)
        incoming = await q.get(no_ack=True, timeout=WAIT)
        assert incoming is not None
        return incoming


async def force_close(bus: AmqpBus) -> str:
    """Close the bus's connection as a broker restart or a network cut would; say how.

    With ``rabbitmqctl`` (RabbitMQ's own CLI; the management plugin is not enabled here) the
    broker closes it (CONNECTION_FORCED). Without it, a stand-in: the client's side of the
    connection is closed under aio-pika's feet, which takes the same reconnection path.
    """
    ctl = shutil.which("rabbitmqctl")
    if ctl:
        listing = await asyncio.create_subprocess_exec(
            ctl, "-q", "list_connections", "--no-table-headers", "pid", "client_properties",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(listing.communicate(), 30)
        for line in out.decode(errors="replace").splitlines() if listing.returncode == 0 else []:
            if bus.connection_name in line:  # pid <rabbit@host.N.N.N>, then the properties
                closing = await asyncio.create_subprocess_exec(
                    ctl, "-q", "close_connection", line.split("\t", 1)[0], "biomaj test",
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )
                if await asyncio.wait_for(closing.wait(), 30) == 0:
                    return "rabbitmqctl close_connection"
    assert bus._conn is not None and bus._conn.transport is not None
    await bus._conn.transport.connection.close(ConnectionResetError("closed by the biomaj tests"))
    return "client-side close (stand-in)"


def reconnection(bus: AmqpBus) -> asyncio.Event:
    """An event set once the bus's connection has been re-established."""
    done = asyncio.Event()
    assert bus._conn is not None
    bus._conn.reconnect_callbacks.add(lambda *_: done.set())
    return done


@pytest.fixture
async def amqp_bus(amqp_url: str) -> AsyncIterator[AmqpBus]:
    bus = open_bus(amqp_url)
    assert isinstance(bus, AmqpBus)
    try:
        yield bus
    finally:
        await bus.close()


@pytest.fixture
def queue(queue_name: str) -> str:
    return queue_name


# --- open_bus (no broker needed) -------------------------------------------------------------


@pytest.mark.parametrize("url", ["amqp://guest:s3cret@localhost:5672/", "amqps://rabbit/vhost", "AMQP://h"])
def test_open_bus_amqp_gives_the_rabbitmq_bus_without_connecting(url: str) -> None:
    bus = open_bus(url)
    assert isinstance(bus, AmqpBus)
    assert "s3cret" not in repr(bus)


def test_open_bus_amqp_without_a_host_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^bus\.url: no host"):
        open_bus("amqp://")


async def test_unreachable_broker_is_a_bus_error_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bus = open_bus("amqp://biomaj:s3cret@127.0.0.1:1/")
    try:
        with pytest.raises(BusError) as info:
            await bus.publish("biomaj.jobs", Note())
    finally:
        await bus.close()
    assert "127.0.0.1:1" in str(info.value)
    assert "s3cret" not in str(info.value) and "s3cret" not in caplog.text


# --- durability and wire format --------------------------------------------------------------

@pytest.mark.service
async def test_messages_survive_a_new_bus_instance(amqp_url: str, queue: str) -> None:
    sent = [Note(payload=str(n)) for n in range(3)]
    first = open_bus(amqp_url)
    try:
        await first.declare_queue(queue)
        for message in sent:
            await first.publish(queue, message)  # confirmed: the broker has it
    finally:
        await first.close()
    second = open_bus(amqp_url)
    try:
        await second.declare_queue(queue)
        async with contextlib.aclosing(second.consume(queue, prefetch=3)) as deliveries:
            got = [await take(deliveries) for _ in sent]
            for delivery in got:
                await delivery.ack()
        assert [d.message for d in got] == sent
        assert [d.attempts for d in got] == [1, 1, 1]
        await second.join(queue, timeout=WAIT)
    finally:
        await second.close()


@pytest.mark.service
async def test_work_messages_are_persistent_json_in_durable_queues(
    amqp_url: str, amqp_bus: AmqpBus, queue: str
) -> None:
    sent = Note(payload="on disk")
    await amqp_bus.declare_queue(queue)
    await amqp_bus.publish(queue, sent)
    incoming = await raw_get(amqp_url, queue)
    assert incoming.body == sent.encode()
    assert incoming.content_type == "application/json"
    assert incoming.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert (incoming.message_id, incoming.type) == (sent.id, sent.TYPE)
    for name in (queue, names.dead_letter_queue(queue)):
        async with raw_channel(amqp_url) as channel:
            with pytest.raises(ChannelPreconditionFailed):  # it exists, and it is durable
                await channel.declare_queue(name, durable=False)


# --- publisher confirms ----------------------------------------------------------------------


@pytest.mark.service
async def test_publishing_to_a_missing_queue_is_an_error_not_silent(amqp_bus: AmqpBus, queue_name: str) -> None:
    with pytest.raises(BusError, match="not declared"):
        await amqp_bus.publish(queue_name, Note())
    await amqp_bus.broadcast("job.nobody-listens", JobEvent(job_id="j", bank="b", kind="update", state="done"))


@pytest.mark.service
async def test_consuming_a_missing_queue_is_an_error(amqp_bus: AmqpBus, queue_name: str) -> None:
    with pytest.raises(BusError, match="not declared"):
        await take(amqp_bus.consume(queue_name))
    with pytest.raises(BusError, match="not declared"):
        await amqp_bus.join(queue_name, timeout=WAIT)


# --- delivery counting and dead letters ------------------------------------------------------


@pytest.mark.service
async def test_dead_letter_carries_the_reason_and_attempts_headers(
    amqp_url: str, amqp_bus: AmqpBus, queue: str
) -> None:
    await amqp_bus.declare_queue(queue, max_deliveries=2)
    sent = Note(payload="poison")
    before = time.time()
    await amqp_bus.publish(queue, sent)
    async with contextlib.aclosing(amqp_bus.consume(queue)) as deliveries:
        await (await take(deliveries)).nack(reason="first failure")
        second = await take(deliveries)
        assert (second.attempts, second.redelivered) == (2, True)
        await second.nack(reason="checksum mismatch: é")
    await amqp_bus.join(queue, timeout=WAIT)
    [letter] = await amqp_bus.dead_letters(queue)
    assert (letter.queue, letter.message, letter.attempts) == (queue, sent, 2)
    assert letter.reason == "checksum mismatch: é"
    assert before - 1 <= letter.at <= time.time() + 1
    assert len(await amqp_bus.dead_letters(queue)) == 1  # reading them does not remove them
    dead = await raw_get(amqp_url, names.dead_letter_queue(queue))
    assert dead.headers[names.REASON_HEADER] == "checksum mismatch: é"
    assert dead.headers[names.ATTEMPTS_HEADER] == 2
    assert dead.body == sent.encode() and dead.delivery_mode == aio_pika.DeliveryMode.PERSISTENT


@pytest.mark.service
async def test_a_consumer_that_dies_holding_a_message_counts_as_an_attempt(
    amqp_url: str, amqp_bus: AmqpBus, queue: str
) -> None:
    """RabbitMQ redelivers what a dead consumer held; the bus counts that delivery, so a
    message that kills every worker still ends in the dead-letter queue."""

    async def crash() -> None:
        """A worker in another process takes the next message and dies without settling it."""
        connection = await aio_pika.connect(amqp_url)
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        assert await q.get(no_ack=False, timeout=WAIT) is not None
        await connection.close()  # RabbitMQ puts it back, flagged "redelivered"

    await amqp_bus.declare_queue(queue, max_deliveries=3)
    sent = Note(payload="kills workers")
    await amqp_bus.publish(queue, sent)
    await crash()  # attempt 1
    async with contextlib.aclosing(amqp_bus.consume(queue)) as deliveries:
        delivery = await take(deliveries)
        assert delivery.message == sent
        assert (delivery.attempts, delivery.redelivered) == (2, True)
        await delivery.nack(reason="still failing")  # attempt 2
    await crash()  # attempt 3: the last one
    marker = Note(payload="next")
    await amqp_bus.publish(queue, marker)
    async with contextlib.aclosing(amqp_bus.consume(queue)) as deliveries:
        delivery = await take(deliveries)  # the poison went to the dead letters on the way
        assert delivery.message == marker
        await delivery.ack()
    await amqp_bus.join(queue, timeout=WAIT)
    [letter] = await amqp_bus.dead_letters(queue)
    assert letter.message == sent and letter.attempts == 3
    assert "never settled" in letter.reason


@pytest.mark.service
async def test_an_undecodable_message_is_dead_lettered_not_delivered(
    amqp_url: str, amqp_bus: AmqpBus, queue: str
) -> None:
    await amqp_bus.declare_queue(queue)
    body = b'{"type": "from.a.newer.node", "version": 1, "fields": {}}'
    async with raw_channel(amqp_url) as channel:
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)
    marker = Note(payload="next")
    await amqp_bus.publish(queue, marker)
    async with contextlib.aclosing(amqp_bus.consume(queue)) as deliveries:
        delivery = await take(deliveries)
        assert delivery.message == marker
        await delivery.ack()
    await amqp_bus.join(queue, timeout=WAIT)
    [letter] = await amqp_bus.dead_letters(queue)
    assert (letter.message, letter.body, letter.attempts) == (None, body, 1)
    assert letter.reason.startswith("cannot decode")


@pytest.mark.service
async def test_closing_a_consumer_counts_what_it_yielded_not_what_it_prefetched(
    amqp_bus: AmqpBus, queue: str
) -> None:
    await amqp_bus.declare_queue(queue)
    for name in "abc":
        await amqp_bus.publish(queue, Note(payload=name))
    first = amqp_bus.consume(queue, prefetch=3)
    seen = await take(first)  # a is yielded; b and c only prefetched
    await first.aclose()  # type: ignore[attr-defined]
    async with contextlib.aclosing(amqp_bus.consume(queue, prefetch=3)) as deliveries:
        again = [await take(deliveries) for _ in range(3)]
        assert [d.message.payload for d in again] == ["a", "b", "c"]  # type: ignore[attr-defined]
        assert [d.attempts for d in again] == [2, 1, 1]
        assert again[0].message == seen.message
        for delivery in again:
            await delivery.ack()
    await amqp_bus.join(queue, timeout=WAIT)


# --- reconnection ----------------------------------------------------------------------------


@pytest.mark.service
async def test_consumer_keeps_consuming_after_the_connection_is_closed(
    amqp_bus: AmqpBus, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    await amqp_bus.declare_queue(queue)
    async with contextlib.aclosing(amqp_bus.consume(queue)) as deliveries:
        await amqp_bus.publish(queue, Note(payload="before"))
        await (await take(deliveries)).ack()

        await amqp_bus.publish(queue, Note(payload="in flight"))
        held = await take(deliveries)
        reconnected = reconnection(amqp_bus)
        how = await force_close(amqp_bus)
        # The publisher waits for the reconnection and sends it then.
        await amqp_bus.publish(queue, Note(payload="after"))
        async with asyncio.timeout(RECONNECT_WAIT):
            await reconnected.wait()
        await held.ack()  # too late: its channel is gone; logged, not raised
        assert "settled after its channel was lost" in caplog.text

        got = {}
        for _ in range(2):
            delivery = await take(deliveries, timeout=RECONNECT_WAIT)
            got[delivery.message.payload] = delivery.attempts  # type: ignore[attr-defined]
            await delivery.ack()
        # The held message came back through the broker, counted; the new one is fresh.
        assert got == {"in flight": 2, "after": 1}, how
    await amqp_bus.join(queue, timeout=WAIT)


@pytest.mark.service
async def test_subscriptions_survive_a_reconnection(amqp_bus: AmqpBus) -> None:
    sub = await amqp_bus.subscribe("node.#")
    try:
        reconnected = reconnection(amqp_bus)
        await force_close(amqp_bus)
        async with asyncio.timeout(RECONNECT_WAIT):
            await reconnected.wait()
        beat = NodeHeartbeat(node_id="n", host="h", pid=1, roles=[], actors=[], version="0",
                             in_flight=0, started=0.0, at=1.0)
        # Restoration of every channel can trail the connection by a moment: send until one arrives.
        async with asyncio.timeout(RECONNECT_WAIT):
            while True:
                await amqp_bus.broadcast(beat.topic(), beat)
                try:
                    assert await next_event(sub, timeout=1.0) == beat
                    break
                except TimeoutError:
                    continue
    finally:
        await sub.close()


# --- events ----------------------------------------------------------------------------------


@pytest.mark.service
async def test_subscribe_patterns_follow_amqp_topic_rules(amqp_bus: AmqpBus) -> None:
    patterns = ["job.*", "job.#", "*.heartbeat", "#", "job.alu", "node.*.x"]
    subs = {p: await amqp_bus.subscribe(p) for p in patterns}
    topics = ["job.alu", "job.alu.extra", "job", "node.heartbeat", "job.pdb", "node.a.x", "other"]
    # One closing marker per pattern, so each subscription provably got nothing more.
    markers = ["job.zz", "job.zz", "zz.heartbeat", "zz", "job.alu", "node.zz.x"]
    sent = []
    for n, topic in enumerate(topics + markers):
        event = JobEvent(job_id=str(n), bank="b", kind="update", state="running", message=topic)
        sent.append((topic, event))
        await amqp_bus.broadcast(topic, event)
    try:
        for pattern, sub in subs.items():
            expected = [event for topic, event in sent if topic_matches(pattern, topic)]
            got = [await next_event(sub) for _ in expected]
            assert got == expected, pattern
    finally:
        for sub in subs.values():
            await sub.close()


@pytest.mark.service
async def test_a_slow_subscriber_never_blocks_publishers(amqp_bus: AmqpBus) -> None:
    slow = await amqp_bus.subscribe("job.#", buffer=5)
    async with asyncio.timeout(30):
        for n in range(200):
            await amqp_bus.broadcast("job.alu", JobEvent(job_id=str(n), bank="alu", kind="update", state="running"))
        await amqp_bus.broadcast("job.alu", JobEvent(job_id="last", bank="alu", kind="update", state="done"))
    ids = []
    while not ids or ids[-1] != "last":
        ids.append((await next_event(slow)).job_id)  # type: ignore[attr-defined]
    assert slow.dropped > 0 and len(ids) < 200
    numbers = [int(i) for i in ids[:-1]]
    assert numbers == sorted(numbers)  # what is kept is the newest, in order
    await slow.close()
