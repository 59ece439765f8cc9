"""The message bus contract every transport implements: :class:`~biomaj.bus.memory.MemoryBus`
(the single-binary mode) and :class:`~biomaj.bus.amqp.AmqpBus` (RabbitMQ, the distributed mode).

Two kinds of traffic:

* **work queues** (``declare_queue``, ``publish``, ``consume``): each message goes to exactly one
  consumer, which must settle it with :meth:`Delivery.ack` (done) or :meth:`Delivery.nack`
  (failed). Delivery is at-least-once: a nacked message, or one still held by a consumer that
  goes away, comes back (``redelivered``) until ``max_deliveries`` is reached; then it moves to
  the queue's dead-letter queue ``<queue>.dead`` with the reason. Nothing is ever dropped.
* **events** (``broadcast``, ``subscribe``): every subscriber whose AMQP topic pattern matches
  gets a copy. Events are for watching (progress, heartbeats); a subscriber too slow to keep
  up loses its oldest events, never blocks the publisher.

``join`` waits until a queue is empty and nothing is unacked: run-until-idle and tests use it.

A consumer is an async generator. Closing it (``aclose``, leaving ``async with aclosing(...)``,
or cancelling the task that iterates it) returns every delivery it holds unsettled to the queue.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .messages import Message

__all__ = [
    "Bus",
    "BusClosed",
    "BusError",
    "BusTimeout",
    "DeadLetter",
    "Delivery",
    "Subscription",
    "topic_matches",
]

log = logging.getLogger("biomaj.bus")


class BusError(Exception):
    """The bus refused an operation (undeclared queue, settled twice, closed bus ...)."""


class BusTimeout(BusError, TimeoutError):
    """``join`` did not see the queue idle in time."""


class BusClosed(BusError):
    """The bus was closed."""


@dataclass(frozen=True)
class DeadLetter:
    """A message a queue gave up on."""

    queue: str  # the work queue it failed on (not the .dead queue)
    message: Message | None  # None when the body could not be decoded
    body: bytes
    reason: str
    attempts: int  # deliveries made before it was dead-lettered
    at: float  # wall-clock time it was dead-lettered


class Delivery(abc.ABC):
    """One message handed to one consumer, plus its envelope (attempts, redelivered).

    Settle it exactly once with :meth:`ack` or :meth:`nack`; settling twice raises
    :class:`BusError`. Every transport shares this settle state (held, then acked, nacked, or
    returned when its consumer closed) and implements :meth:`_settle`, which tells its queue.
    """

    def __init__(
        self,
        message: Message,
        queue: str,
        *,
        attempts: int,
        redelivered: bool,
    ) -> None:
        self.message = message
        self.queue = queue
        self.attempts = attempts  # 1 on the first delivery
        self.redelivered = redelivered  # delivered before, to this or another consumer
        self._state = "held"  # held, acked, nacked, returned

    @property
    def settled(self) -> bool:
        """True once acked, nacked, or returned to the queue."""
        return self._state != "held"

    async def ack(self) -> None:
        """The work is done: remove the message from the queue."""
        await self._settle(None, "")

    async def nack(self, requeue: bool = True, reason: str = "") -> None:
        """The work failed: requeue (at the end), or dead-letter at once when ``requeue`` is False.

        A requeued message that has been delivered ``max_deliveries`` times is dead-lettered
        with ``reason`` instead.
        """
        await self._settle(bool(requeue), reason)

    @abc.abstractmethod
    async def _settle(self, requeue: bool | None, reason: str) -> None:
        """Settle on the transport: ``requeue`` None acks, True requeues, False dead-letters.

        Begins with :meth:`_claim`, which raises when the delivery cannot be settled any more.
        """

    def _claim(self, requeue: bool | None, check_open: Callable[[], None]) -> None:
        """Move from held to acked (``requeue`` None) or nacked, or raise :class:`BusError`:
        already settled, returned to the queue, or (``check_open``) the bus is closed."""
        if self._state == "returned":
            raise BusError(
                f"{self.message.describe()} was returned to {self.queue!r} when its "
                "consumer closed; it can no longer be settled here"
            )
        if self._state != "held":
            raise BusError(f"{self.message.describe()} is already {self._state}")
        check_open()
        self._state = "acked" if requeue is None else "nacked"

    def _return(self) -> None:
        """Its consumer closed before settling it: the message went back to the queue."""
        self._state = "returned"

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.queue} {self.message.describe()} "
            f"attempt={self.attempts}{' settled' if self.settled else ''}>"
        )


class Bus(abc.ABC):
    """Work queues with acks and dead letters, and topic broadcasts."""

    @abc.abstractmethod
    async def declare_queue(self, name: str, *, max_deliveries: int | None = None) -> None:
        """Create ``name`` and its dead-letter queue if missing.

        ``max_deliveries`` None means: keep the existing queue's limit, or create it with
        :func:`names.max_deliveries` (5 unless names.py says otherwise). An explicit value that
        differs from the existing queue's raises :class:`BusError`, as RabbitMQ would.
        """

    @abc.abstractmethod
    async def publish(self, queue: str, message: Message) -> None:
        """Append ``message`` to a declared queue."""

    @abc.abstractmethod
    def consume(self, queue: str, *, prefetch: int = 1) -> AsyncIterator[Delivery]:
        """Async generator of deliveries from a declared queue; at most ``prefetch`` unsettled.

        Several consumers of one queue share its messages round-robin. The generator ends when
        the bus closes.
        """

    @abc.abstractmethod
    async def dead_letters(self, queue: str) -> list[DeadLetter]:
        """The messages waiting in ``queue``'s dead-letter queue, oldest first (not removed)."""

    @abc.abstractmethod
    async def broadcast(self, topic: str, message: Message) -> None:
        """Send an event to every subscription whose pattern matches ``topic``."""

    @abc.abstractmethod
    async def subscribe(self, pattern: str, *, buffer: int = 1000) -> Subscription:
        """Start receiving events whose topic matches ``pattern`` (``*`` one word, ``#`` any).

        The subscription is active when this returns; iterate it, and close it when done.
        """

    async def queue_depths(self) -> dict[tuple[str, str], int]:
        """``{(queue, "ready" | "unacked"): count}`` as far as this bus can tell, for metrics;
        ``{}`` when it cannot."""
        return {}

    def is_connected(self) -> bool:
        """False while the transport is down (a broker reconnection); readiness checks ask it."""
        return True

    @abc.abstractmethod
    async def join(self, queue: str, *, timeout: float | None = None) -> None:
        """Wait until ``queue`` has no ready and no unacked message, else :class:`BusTimeout`."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop every consumer and subscription. Idempotent."""

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class Subscription:
    """Events matching one topic pattern, as an async iterator with a bounded buffer.

    Buses call :meth:`put`. When the buffer is full the oldest event is dropped (and counted in
    ``dropped``), so a slow reader never blocks a publisher. Iteration ends on :meth:`close`.
    """

    def __init__(
        self,
        pattern: str,
        *,
        buffer: int = 1000,
        on_close: Callable[[Subscription], Awaitable[None] | None] | None = None,
    ) -> None:
        if buffer < 1:
            raise ValueError("buffer must be >= 1")
        self.pattern = pattern
        self.dropped = 0
        self._max = buffer
        self._events: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._on_close = on_close

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, message: Message) -> None:
        """Queue one event for the reader (called by the bus)."""
        if self._closed:
            return
        if len(self._events) >= self._max:
            self._events.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "subscription %r is not keeping up: dropped its oldest event (%d so far)",
                    self.pattern,
                    self.dropped,
                )
        self._events.append(message)
        self._wake()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        while not self._events:
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._events.popleft()

    async def close(self) -> None:
        """Stop receiving; a pending or later ``__anext__`` ends the iteration."""
        if self._closed:
            return
        self._closed = True
        self._events.clear()
        self._wake()
        if self._on_close is not None:
            result = self._on_close(self)
            if inspect.isawaitable(result):
                await result

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __repr__(self) -> str:
        return f"<Subscription {self.pattern!r} buffered={len(self._events)} dropped={self.dropped}>"


def topic_matches(pattern: str, topic: str) -> bool:
    """AMQP topic-exchange matching: ``*`` is exactly one word, ``#`` zero or more words."""
    return _match(tuple(pattern.split(".")), tuple(topic.split(".")))


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])


def check_name(kind: str, name: Any, *, wildcards: bool = False) -> str:
    """Validate a queue name, topic or pattern; return it or raise :class:`BusError`."""
    if not isinstance(name, str) or not name or len(name.encode()) > 255:
        raise BusError(f"{kind} must be a non-empty string of at most 255 bytes, got {name!r}")
    if not wildcards and ("*" in name or "#" in name):
        raise BusError(f"{kind} {name!r} cannot contain the wildcards '*' or '#'")
    return name


def check_queue_declaration(name: Any, max_deliveries: Any) -> None:
    """Validate the arguments of :meth:`Bus.declare_queue`; raise :class:`BusError`."""
    from . import names

    check_name("queue name", name)
    if names.is_dead_letter_queue(name):
        raise BusError(f"queue {name!r}: names ending in {names.DEAD_LETTER_SUFFIX!r} are reserved")
    if max_deliveries is not None and (
        isinstance(max_deliveries, bool) or not isinstance(max_deliveries, int) or max_deliveries < 1
    ):
        raise BusError(f"queue {name!r}: max_deliveries must be an int >= 1, got {max_deliveries!r}")
