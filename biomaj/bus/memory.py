"""The in-process bus: production transport of the single-binary mode, on asyncio primitives.

Messages are encoded on publish and decoded on delivery, exactly as over RabbitMQ: a message
that would not survive the network fails here too, and every consumer gets its own copy.
Dispatch is synchronous (on publish, settle, consumer arrival or departure), so no background
task is needed and ``join`` is exact.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from . import names
from .base import (
    Bus,
    BusClosed,
    BusError,
    BusTimeout,
    DeadLetter,
    Delivery,
    Subscription,
    check_name,
    check_queue_declaration,
    topic_matches,
)
from .messages import DeadLettered, Message, MessageError, decode

__all__ = ["MemoryBus"]

log = logging.getLogger("biomaj.bus")


@dataclass(eq=False)
class _Item:
    """A message at rest in a queue, with its envelope."""

    body: bytes
    describe: str  # "type id", for logs
    attempts: int = 0
    # set when dead-lettered
    origin: str = ""
    reason: str = ""
    dead_attempts: int = 0
    dead_at: float = 0.0


class _Queue:
    def __init__(self, name: str, max_deliveries: int | None, dead: _Queue | None) -> None:
        self.name = name
        self.max_deliveries = max_deliveries  # None: requeue forever (dead-letter queues)
        self.dead = dead
        self.ready: deque[_Item] = deque()
        self.consumers: list[_Consumer] = []
        self.unacked = 0
        self.next = 0  # round-robin position in consumers
        self.idle = asyncio.Event()
        self.idle.set()

    def update_idle(self) -> None:
        if self.ready or self.unacked:
            self.idle.clear()
        else:
            self.idle.set()


class _Consumer:
    def __init__(self, queue: _Queue, prefetch: int) -> None:
        self.queue = queue
        self.prefetch = prefetch
        self.buffer: deque[_MemoryDelivery] = deque()  # dispatched, not yet yielded
        self.held: dict[_MemoryDelivery, None] = {}  # every unsettled delivery, in order
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False

    @property
    def capacity(self) -> int:
        return 0 if self.closed else self.prefetch - len(self.held)

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class _MemoryDelivery(Delivery):
    def __init__(self, bus: MemoryBus, consumer: _Consumer, item: _Item, message: Message) -> None:
        super().__init__(
            message,
            consumer.queue.name,
            attempts=item.attempts,
            redelivered=item.attempts > 1,
        )
        self._bus = bus
        self._consumer = consumer
        self._item = item
        self._yielded = False

    async def _settle(self, requeue: bool | None, reason: str) -> None:
        self._bus._settle(self, requeue=requeue, reason=reason)


class MemoryBus(Bus):
    """In-process :class:`~biomaj.bus.base.Bus`: fair, prefetch-bounded, at-least-once."""

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self._subscriptions: list[Subscription] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"<MemoryBus {len(self._queues)} queues{' closed' if self._closed else ''}>"

    # --- work queues -------------------------------------------------------------------------

    async def declare_queue(self, name: str, *, max_deliveries: int | None = None) -> None:
        self._check_open()
        check_queue_declaration(name, max_deliveries)
        queue = self._queues.get(name)
        if queue is not None:
            if max_deliveries is not None and queue.max_deliveries != max_deliveries:
                raise BusError(
                    f"queue {name!r} is already declared with max_deliveries="
                    f"{queue.max_deliveries}, not {max_deliveries}"
                )
            return
        dead_name = names.dead_letter_queue(name)
        dead = _Queue(dead_name, None, None)
        self._queues[dead_name] = dead
        self._queues[name] = _Queue(name, max_deliveries or names.max_deliveries(name), dead)

    async def publish(self, queue: str, message: Message) -> None:
        self._put(self._queue(queue), message)

    async def consume(self, queue: str, *, prefetch: int = 1) -> AsyncIterator[Delivery]:
        q = self._queue(queue)
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise BusError(f"prefetch must be an int >= 1, got {prefetch!r}")
        consumer = _Consumer(q, prefetch)
        q.consumers.append(consumer)
        watched: dict[asyncio.Task[object], None] = {}

        def task_done(task: asyncio.Task[object]) -> None:
            # The task iterating this consumer was cancelled mid-message: give the messages back.
            if task.cancelled():
                self._close_consumer(consumer)

        try:
            self._dispatch(q)
            while True:
                if consumer.buffer:
                    # Pass through the event loop even when a message is already here, so a
                    # busy consumer cannot starve the other tasks of the process.
                    await asyncio.sleep(0)
                while not consumer.buffer:
                    if consumer.closed:
                        return
                    consumer.waiter = asyncio.get_running_loop().create_future()
                    try:
                        await consumer.waiter
                    finally:
                        consumer.waiter = None
                delivery = consumer.buffer.popleft()
                delivery._yielded = True
                task = asyncio.current_task()
                if task is not None and task not in watched:
                    watched[task] = None
                    task.add_done_callback(task_done)
                yield delivery
        finally:
            for task in watched:
                task.remove_done_callback(task_done)
            self._close_consumer(consumer)

    async def dead_letters(self, queue: str) -> list[DeadLetter]:
        q = self._queue(queue)
        if q.dead is None:
            return []
        letters = []
        for item in q.dead.ready:
            try:
                msg: Message | None = decode(item.body)
            except MessageError:
                msg = None
            letters.append(
                DeadLetter(item.origin, msg, item.body, item.reason, item.dead_attempts, item.dead_at)
            )
        return letters

    async def queue_depths(self) -> dict[tuple[str, str], int]:
        """Both counts of every queue, dead-letter queues included."""
        depths: dict[tuple[str, str], int] = {}
        for name, queue in self._queues.items():
            depths[(name, "ready")] = len(queue.ready)
            depths[(name, "unacked")] = queue.unacked
        return depths

    async def join(self, queue: str, *, timeout: float | None = None) -> None:
        q = self._queue(queue)
        try:
            async with asyncio.timeout(timeout):
                while q.ready or q.unacked:
                    await q.idle.wait()
        except TimeoutError:
            raise BusTimeout(
                f"queue {queue!r} still busy after {timeout}s: "
                f"{len(q.ready)} ready, {q.unacked} unacked"
            ) from None

    # --- events ------------------------------------------------------------------------------

    async def broadcast(self, topic: str, message: Message) -> None:
        self._check_open()
        check_name("topic", topic)
        self._fan_out(topic, message.encode())

    def _fan_out(self, topic: str, body: bytes) -> None:
        for sub in list(self._subscriptions):
            if topic_matches(sub.pattern, topic):
                sub.put(decode(body))

    async def subscribe(self, pattern: str, *, buffer: int = 1000) -> Subscription:
        self._check_open()
        check_name("topic pattern", pattern, wildcards=True)
        sub = Subscription(pattern, buffer=buffer, on_close=self._unsubscribe)
        self._subscriptions.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)

    # --- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for q in self._queues.values():
            for consumer in q.consumers:
                consumer.closed = True
                consumer.wake()
        for sub in list(self._subscriptions):
            await sub.close()

    # --- internals ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosed("the bus is closed")

    def _queue(self, name: str) -> _Queue:
        self._check_open()
        queue = self._queues.get(name)
        if queue is None:
            raise BusError(f"queue {name!r} is not declared; call declare_queue({name!r}) first")
        return queue

    def _put(self, q: _Queue, message: Message) -> None:
        item = _Item(message.encode(), message.describe())
        q.ready.append(item)
        self._dispatch(q)

    def _dispatch(self, q: _Queue) -> None:
        """Hand ready messages to consumers with room, round-robin from ``q.next``."""
        while q.ready and q.consumers:
            count = len(q.consumers)
            for step in range(count):
                consumer = q.consumers[(q.next + step) % count]
                if consumer.capacity > 0:
                    break
            else:
                break
            q.next = (q.next + step + 1) % count
            item = q.ready.popleft()
            item.attempts += 1
            try:
                message = decode(item.body)
            except MessageError as exc:
                self._dead_letter(q, item, f"cannot decode: {exc}")
                continue
            delivery = _MemoryDelivery(self, consumer, item, message)
            consumer.held[delivery] = None
            consumer.buffer.append(delivery)
            q.unacked += 1
            consumer.wake()
        q.update_idle()

    def _settle(self, delivery: _MemoryDelivery, *, requeue: bool | None, reason: str) -> None:
        delivery._claim(requeue, self._check_open)
        consumer, q = delivery._consumer, delivery._consumer.queue
        del consumer.held[delivery]
        q.unacked -= 1
        if requeue is True:
            self._requeue(q, delivery._item, reason or "nacked", front=False)
        elif requeue is False:
            self._dead_letter(q, delivery._item, reason or "rejected")
        self._dispatch(q)

    def _close_consumer(self, consumer: _Consumer) -> None:
        """Unregister ``consumer`` and give back, in order, every delivery it still holds."""
        q = consumer.queue
        consumer.closed = True
        if consumer in q.consumers:
            q.consumers.remove(consumer)
        returned = list(consumer.held)
        consumer.held.clear()
        consumer.buffer.clear()
        q.unacked -= len(returned)
        for delivery in reversed(returned):
            delivery._return()
            if delivery._yielded:
                self._requeue(q, delivery._item, "consumer went away before settling", front=True)
            else:  # never seen by the consumer: not an attempt
                delivery._item.attempts -= 1
                q.ready.appendleft(delivery._item)
        consumer.wake()
        if not self._closed:
            self._dispatch(q)
        else:
            q.update_idle()

    def _requeue(self, q: _Queue, item: _Item, reason: str, *, front: bool) -> None:
        if q.max_deliveries is not None and item.attempts >= q.max_deliveries:
            self._dead_letter(q, item, reason)
        elif front:
            q.ready.appendleft(item)
        else:
            q.ready.append(item)

    def _dead_letter(self, q: _Queue, item: _Item, reason: str) -> None:
        if q.dead is None:
            log.error("queue %s: dropping %s (%s): dead-letter queues do not dead-letter",
                      q.name, item.describe, reason)
            return
        log.warning("queue %s: %s dead-lettered after %d deliveries: %s",
                    q.name, item.describe, item.attempts, reason)
        dead = _Item(item.body, item.describe, origin=q.name, reason=reason,
                     dead_attempts=item.attempts, dead_at=time.time())
        q.dead.ready.append(dead)
        self._dispatch(q.dead)
        message_type, _, message_id = item.describe.partition(" ")
        notice = DeadLettered(queue=q.name, message_id=message_id, message_type=message_type, reason=reason,
                              attempts=item.attempts)
        self._fan_out(notice.topic(), notice.encode())
