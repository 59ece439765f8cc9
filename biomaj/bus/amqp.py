"""The RabbitMQ bus: the distributed-mode transport, on aio-pika (``amqp://`` and ``amqps://``).

Same contract and semantics as :class:`~biomaj.bus.memory.MemoryBus`. This module connects,
consumes, settles and subscribes; publishing, republishing and dead-lettering are
:mod:`biomaj.bus.amqp_publish`'s. How each part maps onto RabbitMQ:

* **Work queues** are durable classic queues, each with a durable ``<queue>.dead`` beside it.
  Messages are ``Message.encode()`` bytes, ``content_type=application/json``, persistent, sent
  on a channel with publisher confirms and ``mandatory``: a publish returns once the broker has
  the message, and publishing to a queue that does not exist raises :class:`BusError`.
* **Consumers** each get their own channel, with ``basic.qos(prefetch)`` from ``consume`` and
  manual acks: a message is acked only when the code settles its delivery.
* **Delivery counting.** Classic queues do not count redeliveries, so the count travels with
  the message in the ``x-biomaj-attempts`` header (deliveries made so far). ``nack(requeue=True)``
  republishes the message at the tail of its queue with the header incremented (and the reason
  in ``x-biomaj-reason``), confirmed, then acks the original; once the count reaches the
  queue's ``max_deliveries`` the message goes to ``<queue>.dead`` instead, with the reason and
  the count. A message RabbitMQ itself redelivers (``redelivered`` flag: its consumer died or
  lost its connection before settling) is counted the same way before anyone sees it again, so
  a message that crashes every worker still ends in the dead-letter queue. Quorum queues and
  ``x-delivery-limit`` were the alternative: they count reliably, but lose the reason, count
  messages a consumer never saw, and cannot tell us the limit of an existing queue either.
* **max_deliveries** lives in this bus instance (AMQP cannot read a queue's arguments back):
  redeclaring with another limit raises :class:`BusError` within one instance, like the memory
  bus, but two processes declaring different limits are not detected; the consumer's limit
  applies. Queues declared by another process can be used here; they get the default limit.
* **Closing a consumer** (``aclose``, or cancelling the task iterating it) cancels it and gives
  back what it holds: a delivery it yielded and never settled counts as an attempt ("consumer
  went away before settling"), one it had prefetched but not yet yielded does not. Both are
  republished at the tail of the queue (the memory bus puts them back at the head).
* **Events**: a durable topic exchange, :data:`names.EVENTS_EXCHANGE`. Each subscription is an
  exclusive auto-delete queue bound with its pattern, consumed without acks, capped with
  ``x-max-length`` = its buffer (the broker drops the oldest), feeding a
  :class:`~biomaj.bus.base.Subscription` that drops the oldest too: a slow subscriber never
  blocks a publisher.
* **Reconnection**: ``aio_pika.connect_robust``. After a connection drop, channels, queues,
  bindings and consumers are restored; an iterating consumer just keeps going (the deliveries
  it held come back through the broker, counted as above; settling one of them afterwards is
  logged and ignored). A publish that fails because the connection is down waits for the
  reconnection and is sent again, for up to :data:`PUBLISH_RETRY_TIMEOUT` seconds (so a message
  may be sent twice: delivery is at-least-once and work is idempotent). The URL may set
  aio-pika's options, e.g. ``?reconnect_interval=5&heartbeat=60``; this bus defaults
  ``reconnect_interval`` to :data:`RECONNECT_INTERVAL`.
* **join(queue)** polls the broker's count of ready messages (a passive declare) and adds the
  deliveries this bus instance holds unsettled; it needs two idle readings in a row. RabbitMQ
  does not report unacked counts over AMQP, so deliveries held by *other* processes are not
  seen: ``join`` is for tests and burst mode (``run_until_idle``), where the consumers run in
  this process.

**Consumer (delivery acknowledgement) timeout.** RabbitMQ closes the channel of a consumer that
holds a delivery unacked longer than ``consumer_timeout`` (30 minutes by default), and the
message is redelivered, which a long download would hit. A per-queue ``x-consumer-timeout``
argument (and ``consumer-timeout`` policy) only exists from RabbitMQ 3.12 (3.11.15), RabbitMQ
4.x documents it for quorum queues only, and queue arguments can never change once a queue
exists. The RabbitMQ installed for development is 3.10.8, which accepts the argument and
ignores it (checked: a 2 s value did not fire in 100 s). So this bus does not set it. Raise
the limit on the server instead, in ``rabbitmq.conf``::

    consumer_timeout = 86400000   # 24 h, in ms: longer than the longest single-file transfer

or, on RabbitMQ >= 3.12, with a policy on the work queues only::

    rabbitmqctl set_policy biomaj-long-work '^biomaj\\.(download|process|jobs)$' \\
        '{"consumer-timeout": 86400000}' --apply-to queues
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    AbstractRobustQueue,
)
from aio_pika.exceptions import AMQPError, ChannelNotFoundEntity
from yarl import URL

from biomaj.redaction import redact_url

from . import names
from .amqp_publish import (
    _CONNECTION_ERRORS,
    CONTENT_TYPE,
    OPERATION_TIMEOUT,
    AmqpPublishing,
    _alive,
    _Disconnected,
    _guarded,
    _int,
)
from .base import (
    Bus,
    BusClosed,
    BusError,
    BusTimeout,
    Delivery,
    Subscription,
    check_name,
    check_queue_declaration,
)
from .messages import Message, MessageError, decode

__all__ = ["AmqpBus"]

log = logging.getLogger("biomaj.bus")

RECONNECT_INTERVAL = 1.0
"""Seconds between reconnection attempts (aio-pika's default is 5), unless the URL sets it."""

CONNECT_TIMEOUT = 10.0
"""Seconds the first connection may take before the bus gives up with :class:`BusError`."""

SHUTDOWN_TIMEOUT = 10.0
"""Seconds a closing consumer may spend giving back its deliveries before it just drops its
channel (RabbitMQ then requeues them itself, and they count as attempts)."""

JOIN_POLL = 0.02
"""Seconds between two readings of a queue's message count in :meth:`AmqpBus.join`."""

class _Consumer:
    """One ``consume()`` generator: its channel, the messages RabbitMQ pushed to it, and the
    deliveries it yielded and that are not settled yet."""

    def __init__(self, queue: str, prefetch: int, limit: int | None) -> None:
        self.queue = queue
        self.prefetch = prefetch
        self.limit = limit  # None: a dead-letter queue (never counted, never dead-lettered)
        self.channel: AbstractRobustChannel | None = None
        self.amqp_queue: AbstractRobustQueue | None = None
        self.tag: str | None = None
        self.buffer: deque[AbstractIncomingMessage] = deque()  # received, not yet yielded
        self.held: dict[_AmqpDelivery, None] = {}  # yielded, not settled
        self.lock = asyncio.Lock()  # settling and shutting down do not interleave
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False  # no more yields
        self.finished = False  # deliveries handed back: ignore anything still arriving
        self.shutdown: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class _AmqpDelivery(Delivery):
    def __init__(
        self,
        bus: AmqpBus,
        consumer: _Consumer,
        incoming: AbstractIncomingMessage,
        message: Message,
        attempts: int,
    ) -> None:
        super().__init__(
            message,
            consumer.queue,
            attempts=attempts,
            redelivered=attempts > 1 or bool(incoming.redelivered),
        )
        self._bus = bus
        self._consumer = consumer
        self._incoming = incoming

    async def _settle(self, requeue: bool | None, reason: str) -> None:
        await self._bus._settle(self, requeue=requeue, reason=reason)


class AmqpBus(AmqpPublishing, Bus):
    """:class:`~biomaj.bus.base.Bus` over RabbitMQ. Connects on first use; see the module doc."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._id = uuid.uuid4().hex
        self.connection_name = f"biomaj {socket.gethostname()} pid {os.getpid()} bus {self._id[:12]}"
        self._conn: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._events: AbstractRobustExchange | None = None
        self._events_channel: AbstractRobustChannel | None = None
        self._connect_lock = asyncio.Lock()
        self._setup_lock = asyncio.Lock()
        self._limits: dict[str, int] = {}  # max_deliveries of the queues declared here
        self._unacked: Counter[str] = Counter()  # deliveries received here and not settled
        self._consumers: set[_Consumer] = set()
        self._subscriptions: dict[Subscription, tuple[AbstractRobustQueue, str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._names = itertools.count(1)
        self._closed = False

    def __repr__(self) -> str:
        state = " closed" if self._closed else (" connected" if self._conn is not None else "")
        return f"<AmqpBus {redact_url(self._url)}{state}>"

    # --- work queues -------------------------------------------------------------------------

    async def declare_queue(self, name: str, *, max_deliveries: int | None = None) -> None:
        self._check_open()
        check_queue_declaration(name, max_deliveries)
        if name not in self._limits:
            try:
                await _guarded(self._declare(name))
            except (AMQPError, *_CONNECTION_ERRORS) as exc:
                raise self._error(f"queue {name!r}: cannot declare it", exc) from None
        known = self._limits.setdefault(name, max_deliveries or names.max_deliveries(name))
        if max_deliveries is not None and known != max_deliveries:
            raise BusError(
                f"queue {name!r} is already declared with max_deliveries={known}, not {max_deliveries}"
            )

    async def _declare(self, name: str) -> None:
        async with self._channel() as channel:
            await channel.declare_queue(name, durable=True, timeout=OPERATION_TIMEOUT)
            await channel.declare_queue(names.dead_letter_queue(name), durable=True, timeout=OPERATION_TIMEOUT)

    async def publish(self, queue: str, message: Message) -> None:
        self._check_open()
        check_name("queue name", queue)
        await self._publish_work(queue, message)

    async def consume(self, queue: str, *, prefetch: int = 1) -> AsyncIterator[Delivery]:
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise BusError(f"prefetch must be an int >= 1, got {prefetch!r}")
        limit = await self._resolve(queue)
        consumer = _Consumer(queue, prefetch, limit)
        self._consumers.add(consumer)
        watched: dict[asyncio.Task[object], None] = {}

        def task_done(task: asyncio.Task[object]) -> None:
            # The task iterating this consumer was cancelled mid-message: give the messages back.
            if task.cancelled():
                self._spawn(self._shut_down(consumer))

        try:
            await self._start_consumer(consumer)
            while True:
                if consumer.buffer:
                    # Pass through the event loop even when a message is already here, so a
                    # busy consumer cannot starve the other tasks of the process.
                    await asyncio.sleep(0)
                while not consumer.buffer or consumer.closed:
                    if consumer.closed:
                        return
                    consumer.waiter = asyncio.get_running_loop().create_future()
                    try:
                        await consumer.waiter
                    finally:
                        consumer.waiter = None
                delivery = await self._admit(consumer, consumer.buffer.popleft())
                if delivery is None:
                    continue
                consumer.held[delivery] = None
                task = asyncio.current_task()
                if task is not None and task not in watched:
                    watched[task] = None
                    task.add_done_callback(task_done)
                yield delivery
        finally:
            for task in watched:
                task.remove_done_callback(task_done)
            await self._shut_down(consumer)

    async def join(self, queue: str, *, timeout: float | None = None) -> None:
        await self._resolve(queue)
        ready, idle = 0, 0
        try:
            async with asyncio.timeout(timeout):
                while True:
                    ready = await self._ready_count(queue)
                    # Two idle readings in a row: a message RabbitMQ was handing to one of our
                    # consumers at the first reading is counted by the second.
                    idle = idle + 1 if ready + self._unacked[queue] == 0 else 0
                    if idle >= 2:
                        return
                    await asyncio.sleep(JOIN_POLL)
        except TimeoutError:
            raise BusTimeout(
                f"queue {queue!r} still busy after {timeout}s: "
                f"{ready} ready, {self._unacked[queue]} unacked here"
            ) from None

    # --- events ------------------------------------------------------------------------------

    async def broadcast(self, topic: str, message: Message) -> None:
        self._check_open()
        check_name("topic", topic)
        body = message.encode()
        await self._connection()
        assert self._events is not None
        amqp_message = aio_pika.Message(
            body,
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            message_id=message.id,
            type=message.TYPE,
        )
        await self._publish(self._events, topic, amqp_message, mandatory=False)

    async def subscribe(self, pattern: str, *, buffer: int = 1000) -> Subscription:
        self._check_open()
        check_name("topic pattern", pattern, wildcards=True)
        sub = Subscription(pattern, buffer=buffer, on_close=self._unsubscribe)

        async def on_event(incoming: AbstractIncomingMessage) -> None:
            try:
                sub.put(decode(incoming.body))
            except MessageError as exc:
                log.warning("subscription %r: dropping an undecodable event: %s", pattern, exc)

        try:
            opened = await _guarded(self._open_subscription(pattern, buffer, on_event))
        except (AMQPError, *_CONNECTION_ERRORS) as exc:
            raise self._error(f"cannot subscribe to {pattern!r}", exc) from None
        self._subscriptions[sub] = opened
        return sub

    async def _open_subscription(
        self, pattern: str, buffer: int, on_event: Callable[[AbstractIncomingMessage], Awaitable[None]]
    ) -> tuple[AbstractRobustQueue, str]:
        async with self._setup_lock:
            if self._events_channel is None:
                conn = await self._connection()
                self._events_channel = await conn.channel(publisher_confirms=False)
        queue = await self._events_channel.declare_queue(
            f"{names.EVENTS_EXCHANGE}.{self._id}.{next(self._names)}",
            exclusive=True,
            auto_delete=True,
            arguments={"x-max-length": buffer},  # the broker drops the oldest, too
            timeout=OPERATION_TIMEOUT,
        )
        await queue.bind(names.EVENTS_EXCHANGE, routing_key=pattern, timeout=OPERATION_TIMEOUT)
        tag = await queue.consume(on_event, no_ack=True, timeout=OPERATION_TIMEOUT)
        return queue, tag

    async def _unsubscribe(self, sub: Subscription) -> None:
        opened = self._subscriptions.pop(sub, None)
        if opened is None or self._closed:
            return  # closing the connection deletes the (exclusive) queue
        queue, tag = opened
        if not self._connected():
            return  # its exclusive queue went with the lost connection; do not wait for the broker
        try:
            # cancel first: deleting a consumed queue makes the broker cancel the consumer (a warning)
            await _guarded(queue.cancel(tag, timeout=OPERATION_TIMEOUT))
            await _guarded(queue.delete(if_unused=False, if_empty=False, timeout=OPERATION_TIMEOUT))
        except (AMQPError, *_CONNECTION_ERRORS) as exc:
            log.warning("subscription %r: could not delete its queue %s: %s", sub.pattern, queue.name, exc)

    # --- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        consumers = list(self._consumers)
        for consumer in consumers:
            consumer.closed = True
            consumer.wake()
        if consumers:
            await asyncio.wait([asyncio.ensure_future(self._shut_down(c)) for c in consumers],
                               timeout=SHUTDOWN_TIMEOUT + 1)
        for sub in list(self._subscriptions):
            await sub.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=SHUTDOWN_TIMEOUT + 1)
        async with self._connect_lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(OPERATION_TIMEOUT):
                        await _guarded(self._conn.close())

    # --- connection and channels -------------------------------------------------------------

    def _connected(self) -> bool:
        """True while the connection to the broker is up (False during a reconnection).

        aio-pika clears ``connected`` only once aiormq has closed its writer, which can take
        seconds after the socket died; aiormq's own reader state says it at once, so a node
        stopping right after losing its broker does not wait for it to answer."""
        if self._conn is None or not self._conn.connected.is_set():
            return False
        transport = self._conn.transport
        return transport is not None and transport.connection.is_opened

    def is_connected(self) -> bool:
        return self._connected()

    async def queue_depths(self) -> dict[tuple[str, str], int]:
        """The ready count of the work queues and their dead-letter queues (a passive declare, as
        ``join``); RabbitMQ tells unacked counts per consumer only, so they are not reported. A
        queue the broker does not have gives no entry."""

        async def count(queue: str) -> int | None:
            try:
                return await self._ready_count(queue)
            except BusError:
                return None

        wanted = [q for queue in names.WORK_QUEUES for q in (queue, names.dead_letter_queue(queue))]
        counts = await asyncio.gather(*(count(q) for q in wanted))
        return {(q, "ready"): n for q, n in zip(wanted, counts) if n is not None}

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosed("the bus is closed")

    async def _connection(self) -> AbstractRobustConnection:
        """The connection, opened on first use together with the publishing channel."""
        self._check_open()
        if self._conn is not None:
            return self._conn
        async with self._connect_lock:
            self._check_open()
            if self._conn is None:
                try:
                    self._conn = await _guarded(self._connect())
                except (AMQPError, *_CONNECTION_ERRORS, ValueError) as exc:
                    raise self._error(f"cannot connect to RabbitMQ at {redact_url(self._url)}", exc) from None
                log.info("bus: connected to RabbitMQ at %s", redact_url(self._url))
        return self._conn

    async def _connect(self) -> AbstractRobustConnection:
        url = URL(self._url)
        if "reconnect_interval" not in url.query:
            url = url.update_query(reconnect_interval=RECONNECT_INTERVAL)
        props = {} if "name" in url.query else {"connection_name": self.connection_name}
        conn = await aio_pika.connect_robust(url, timeout=CONNECT_TIMEOUT, client_properties=props)
        try:
            publisher = await conn.channel(publisher_confirms=True, on_return_raises=True)
            self._events = await publisher.declare_exchange(
                names.EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True, timeout=OPERATION_TIMEOUT
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        self._publisher = publisher
        return conn

    @contextlib.asynccontextmanager
    async def _channel(self) -> AsyncIterator[AbstractChannel]:
        """A short-lived channel for declarations and probes: a failed one (404, 406) kills only it."""
        conn = await self._connection()
        async with asyncio.timeout(OPERATION_TIMEOUT):
            await conn.ready()  # reconnecting: wait for it
            # A plain channel, not a robust one: nothing to restore after a reconnection.
            channel = await aio_pika.Channel(conn, publisher_confirms=False)
        try:
            yield channel
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _ready_count(self, queue: str) -> int:
        """Messages ready in ``queue`` on the broker (passive declare); BusError if it is missing."""
        try:
            declared = await _guarded(self._declare_passive(queue))
        except ChannelNotFoundEntity:
            raise BusError(f"queue {queue!r} is not declared; call declare_queue({queue!r}) first") from None
        except (AMQPError, *_CONNECTION_ERRORS) as exc:
            raise self._error(f"queue {queue!r}: cannot read its message count", exc) from None
        return declared.declaration_result.message_count or 0

    async def _declare_passive(self, queue: str) -> AbstractQueue:
        async with self._channel() as channel:
            return await channel.declare_queue(queue, passive=True, timeout=OPERATION_TIMEOUT)

    async def _resolve(self, queue: str) -> int | None:
        """``queue``'s delivery limit (None for a dead-letter queue), checking that it exists."""
        self._check_open()
        check_name("queue name", queue)
        if queue in self._limits:
            return self._limits[queue]
        dead = names.is_dead_letter_queue(queue)
        if dead and queue[: -len(names.DEAD_LETTER_SUFFIX)] in self._limits:
            return None
        await self._ready_count(queue)  # declared by another process? BusError if not at all
        return None if dead else names.max_deliveries(queue)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _error(self, what: str, exc: BaseException) -> BusError:
        if self._closed:
            return BusClosed(f"{what}: the bus is closed")
        return BusError(f"{what}: {self._detail(exc)}")

    def _detail(self, exc: BaseException) -> str:
        """``exc`` as text for a message or a log, never with the password."""
        detail = str(exc) or type(exc).__name__
        password = URL(self._url).password if "://" in self._url else None
        return detail.replace(password, "***") if password else detail

    # --- consuming ---------------------------------------------------------------------------

    async def _start_consumer(self, consumer: _Consumer) -> None:
        async def on_message(incoming: AbstractIncomingMessage) -> None:
            if consumer.finished:
                return  # the channel is closing: RabbitMQ takes it back
            consumer.buffer.append(incoming)
            self._unacked[consumer.queue] += 1
            consumer.wake()

        async def start() -> None:
            conn = await self._connection()
            channel = await conn.channel(publisher_confirms=False)
            consumer.channel = channel
            await channel.set_qos(prefetch_count=consumer.prefetch, timeout=OPERATION_TIMEOUT)
            # Declared (not just looked up) on this robust channel, so that a reconnection
            # re-declares it and restores the consumer.
            queue = await channel.declare_queue(consumer.queue, durable=True, timeout=OPERATION_TIMEOUT)
            if consumer.limit is not None:
                await channel.declare_queue(names.dead_letter_queue(consumer.queue), durable=True,
                                            robust=False, timeout=OPERATION_TIMEOUT)
            consumer.amqp_queue = queue
            consumer.tag = await queue.consume(on_message, no_ack=False, timeout=OPERATION_TIMEOUT)

        try:
            await _guarded(start())
        except (AMQPError, *_CONNECTION_ERRORS) as exc:
            raise self._error(f"cannot consume {consumer.queue!r}", exc) from None

    async def _admit(self, consumer: _Consumer, incoming: AbstractIncomingMessage) -> _AmqpDelivery | None:
        """Turn a received message into a delivery, or deal with it here and return None.

        Not a delivery: a message whose channel died with the connection (RabbitMQ delivers it
        again), a redelivered one (counted and put back first), an undecodable one.
        """
        seen = _int(incoming.headers, names.ATTEMPTS_HEADER)
        try:
            if consumer.limit is None:  # a dead-letter queue: nothing is counted
                message = decode(incoming.body)
                if _alive(incoming):
                    return _AmqpDelivery(self, consumer, incoming, message, 2 if incoming.redelivered else 1)
            elif incoming.redelivered:
                # Delivered before and never settled (its consumer died or lost its
                # connection): count that delivery, then let it come round again.
                async with consumer.lock:
                    if _alive(incoming):  # (and the consumer did not close meanwhile)
                        await _guarded(self._retry_or_dead_letter(
                            consumer, incoming, seen + 1,
                            "delivered but never settled (its consumer died or lost its connection)",
                        ))
            else:
                message = decode(incoming.body)
                if _alive(incoming):
                    return _AmqpDelivery(self, consumer, incoming, message, seen + 1)
        except MessageError as exc:
            with contextlib.suppress(_Disconnected, BusClosed, AMQPError, *_CONNECTION_ERRORS):
                async with consumer.lock:
                    if _alive(incoming):
                        if consumer.limit is None:
                            log.error("queue %s: dropping an undecodable message: %s", consumer.queue, exc)
                        else:
                            await self._dead_letter(consumer.queue, incoming, seen + 1, f"cannot decode: {exc}")
                        await _guarded(incoming.ack())
        except (_Disconnected, BusClosed, AMQPError, *_CONNECTION_ERRORS) as exc:
            log.warning("queue %s: could not count a redelivered message (%s); RabbitMQ delivers it again",
                        consumer.queue, self._detail(exc))
        self._unacked[consumer.queue] -= 1
        return None

    async def _settle(self, delivery: _AmqpDelivery, *, requeue: bool | None, reason: str) -> None:
        consumer, incoming = delivery._consumer, delivery._incoming
        async with consumer.lock:
            delivery._claim(requeue, self._check_open)
            try:
                if not _alive(incoming):
                    log.warning(
                        "queue %s: %s was settled after its channel was lost; RabbitMQ delivers it again",
                        consumer.queue, delivery.message.describe(),
                    )
                else:
                    await _guarded(self._settle_on_broker(delivery, requeue, reason))
            except (_Disconnected, BusClosed, *_CONNECTION_ERRORS) as exc:
                # The connection went: the broker takes the message back and delivers it
                # again. Not the caller's problem (raising would stop a worker's loop).
                log.warning("queue %s: could not settle %s (%s); RabbitMQ delivers it again",
                            consumer.queue, delivery.message.describe(), self._detail(exc))
            except AMQPError as exc:
                raise self._error(f"queue {consumer.queue!r}: cannot settle {delivery.message.describe()}",
                                  exc) from None
            finally:
                consumer.held.pop(delivery, None)
                self._unacked[consumer.queue] -= 1

    async def _settle_on_broker(self, delivery: _AmqpDelivery, requeue: bool | None, reason: str) -> None:
        consumer, incoming = delivery._consumer, delivery._incoming
        if requeue is None:
            await incoming.ack()
        elif consumer.limit is None:  # dead-letter queues requeue in place, or drop
            if requeue:
                await incoming.nack(requeue=True)
            else:
                log.error("queue %s: dropping %s (%s): dead-letter queues do not dead-letter",
                          consumer.queue, delivery.message.describe(), reason or "rejected")
                await incoming.ack()
        elif requeue:
            await self._retry_or_dead_letter(consumer, incoming, delivery.attempts, reason or "nacked")
        else:
            await self._dead_letter(consumer.queue, incoming, delivery.attempts, reason or "rejected")
            await incoming.ack()

    async def _shut_down(self, consumer: _Consumer) -> None:
        """Stop ``consumer`` and give back what it holds (once; later calls wait for the first)."""
        consumer.closed = True
        consumer.wake()
        if consumer.shutdown is None:
            consumer.shutdown = asyncio.ensure_future(self._give_back(consumer))
        with contextlib.suppress(Exception):
            await asyncio.shield(consumer.shutdown)

    async def _give_back(self, consumer: _Consumer) -> None:
        taken = 0
        try:
            if not self._connected():
                return  # the broker requeued what this connection held when it was lost
            async with asyncio.timeout(SHUTDOWN_TIMEOUT):
                if consumer.tag is not None and consumer.amqp_queue is not None and _open(consumer.channel):
                    # No more deliveries (those already sent arrive before the reply).
                    await _guarded(consumer.amqp_queue.cancel(consumer.tag, timeout=OPERATION_TIMEOUT))
                async with consumer.lock:
                    held, unseen = _take_all(consumer)
                    taken = len(held) + len(unseen)
                    await _guarded(self._return(consumer, held, unseen))
        except (TimeoutError, BusError, AMQPError, *_CONNECTION_ERRORS) as exc:
            log.warning("queue %s: a closing consumer could not give its messages back (%s); "
                        "RabbitMQ requeues them", consumer.queue, self._detail(exc))
        finally:
            held, unseen = _take_all(consumer)  # left there if the above failed early
            self._unacked[consumer.queue] -= taken + len(held) + len(unseen)
            if consumer.channel is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(OPERATION_TIMEOUT):
                        # RabbitMQ requeues anything still unacked on it.
                        await _guarded(consumer.channel.close())
            self._consumers.discard(consumer)

    async def _return(
        self, consumer: _Consumer, held: list[_AmqpDelivery], unseen: list[AbstractIncomingMessage]
    ) -> None:
        """Put back what a closing consumer held, in the order it came. Yielded and not
        settled: that was an attempt. Prefetched and never yielded: not one."""
        for delivery in held:
            if not _alive(delivery._incoming):
                continue
            if consumer.limit is None:
                await delivery._incoming.nack(requeue=True)
            else:
                await self._retry_or_dead_letter(consumer, delivery._incoming, delivery.attempts,
                                                 "consumer went away before settling")
        for incoming in unseen:
            if not _alive(incoming):
                continue
            if consumer.limit is None or incoming.redelivered:
                await incoming.nack(requeue=True)  # (counted when it comes back)
            else:
                await self._republish(consumer.queue, incoming, _int(incoming.headers, names.ATTEMPTS_HEADER), "")
                await incoming.ack()


# --- helpers ---------------------------------------------------------------------------------

def _take_all(consumer: _Consumer) -> tuple[list[_AmqpDelivery], list[AbstractIncomingMessage]]:
    """Stop ``consumer`` for good and take what it holds: unsettled deliveries (now
    "returned"), and messages received but never yielded."""
    consumer.finished = True
    held = [d for d in consumer.held if not d.settled]
    for delivery in held:
        delivery._return()
    unseen = list(consumer.buffer)
    consumer.held.clear()
    consumer.buffer.clear()
    return held, unseen


def _open(channel: AbstractRobustChannel | None) -> bool:
    return channel is not None and not channel.is_closed

