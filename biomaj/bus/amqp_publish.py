"""The publishing and dead-letter half of the RabbitMQ bus (:class:`~biomaj.bus.amqp.AmqpBus`).

:class:`AmqpPublishing` holds what :class:`~biomaj.bus.amqp.AmqpBus` sends to the broker: work
messages (persistent, publisher-confirmed, ``mandatory``, retried across a reconnection for up
to :data:`PUBLISH_RETRY_TIMEOUT` seconds), their republished copies carrying the delivery count
in ``x-biomaj-attempts``, the dead-lettered ones with their reason and the ``DeadLettered``
notice, and the reading of a dead-letter queue. The broker helpers both halves use
(:func:`_guarded`, the connection errors, the timeouts) live here too, below ``amqp.py``.
How each of these maps onto RabbitMQ is told in :mod:`biomaj.bus.amqp`'s docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection, AbstractRobustExchange
from aio_pika.exceptions import AMQPChannelError, AMQPError, ChannelInvalidStateError, DeliveryError, PublishError

from biomaj.redaction import redact_url

from . import names
from .base import BusClosed, BusError, DeadLetter
from .messages import DeadLettered, Message, MessageError, decode

if TYPE_CHECKING:
    from .amqp import _Consumer

log = logging.getLogger("biomaj.bus")

PUBLISH_RETRY_TIMEOUT = 30.0
"""Seconds a publish keeps waiting for a lost connection to come back before failing."""

OPERATION_TIMEOUT = 30.0
"""Seconds any single broker round trip (declare, confirm, cancel) may take."""

CONTENT_TYPE = "application/json"

_CONNECTION_ERRORS = (ConnectionError, OSError, ChannelInvalidStateError, asyncio.TimeoutError)
"""Failures that mean "the connection is (temporarily) gone", worth a retry after reconnection."""


class _Unroutable(BusError):
    """The broker returned a mandatory message: no queue by that name."""


class _Disconnected(BusError):
    """A publish gave up: the connection did not come back within PUBLISH_RETRY_TIMEOUT."""


class AmqpPublishing:
    """The publishing and dead-letter methods of :class:`~biomaj.bus.amqp.AmqpBus` (its base).

    They use the bus's connection, its publishing channel (opened with the connection) and its
    error helpers, declared below; only :class:`~biomaj.bus.amqp.AmqpBus` derives from this.
    """

    _url: str
    _conn: AbstractRobustConnection | None
    _publisher: AbstractRobustChannel | None

    if TYPE_CHECKING:  # AmqpBus's, declared for the type checker only

        async def _connection(self) -> AbstractRobustConnection: ...
        def _channel(self) -> contextlib.AbstractAsyncContextManager[AbstractChannel]: ...
        async def _resolve(self, queue: str) -> int | None: ...
        def _error(self, what: str, exc: BaseException) -> BusError: ...
        def _detail(self, exc: BaseException) -> str: ...
        async def broadcast(self, topic: str, message: Message) -> None: ...

    # --- dead letters ------------------------------------------------------------------------

    async def dead_letters(self, queue: str) -> list[DeadLetter]:
        limit = await self._resolve(queue)
        if limit is None:  # a dead-letter queue has none of its own
            return []
        try:
            return await _guarded(self._read_dead_letters(queue))
        except (AMQPError, *_CONNECTION_ERRORS) as exc:
            raise self._error(f"queue {queue!r}: cannot read its dead letters", exc) from None

    async def _read_dead_letters(self, queue: str) -> list[DeadLetter]:
        # basic.get every message without acking, then close the channel: RabbitMQ puts them
        # all back where they were.
        letters = []
        async with self._channel() as channel:
            dead = await channel.declare_queue(names.dead_letter_queue(queue), passive=True, timeout=OPERATION_TIMEOUT)
            while (incoming := await dead.get(no_ack=False, fail=False, timeout=OPERATION_TIMEOUT)) is not None:
                letters.append(_dead_letter_of(queue, incoming))
        return letters

    # --- publishing --------------------------------------------------------------------------

    async def _publish_work(self, queue: str, message: Message) -> None:
        amqp_message = aio_pika.Message(
            message.encode(),
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.id,
            type=message.TYPE,
            timestamp=message.created,
        )
        try:
            await self._publish("", queue, amqp_message)
        except _Unroutable:
            raise BusError(f"queue {queue!r} is not declared; call declare_queue({queue!r}) first") from None

    async def _publish(
        self,
        exchange: str | AbstractRobustExchange,
        routing_key: str,
        message: aio_pika.Message,
        *,
        mandatory: bool = True,
    ) -> None:
        """Publish with confirms; wait out a reconnection (up to PUBLISH_RETRY_TIMEOUT) and retry.

        Works after :meth:`close` began (consumers give their messages back while closing),
        until the connection itself is closed.
        """
        if self._conn is None:
            await self._connection()
        assert self._publisher is not None and self._conn is not None
        channel = self._publisher
        target = channel.default_exchange if exchange == "" else exchange
        assert not isinstance(target, str)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_RETRY_TIMEOUT
        while True:
            try:
                await _guarded(target.publish(message, routing_key, mandatory=mandatory, timeout=OPERATION_TIMEOUT))
                return
            except PublishError:
                raise _Unroutable(f"no queue {routing_key!r} to route to") from None
            except DeliveryError as exc:
                raise BusError(f"the broker refused a message for {routing_key!r}: {exc}") from None
            except AMQPChannelError as exc:
                raise self._error(f"cannot publish to {routing_key!r}", exc) from None
            except (AMQPError, *_CONNECTION_ERRORS) as exc:
                if self._conn.is_closed:
                    raise BusClosed(f"cannot publish to {routing_key!r}: the connection is closed") from None
                if loop.time() >= deadline:
                    raise _Disconnected(
                        f"cannot publish to {routing_key!r}: no connection to RabbitMQ at "
                        f"{redact_url(self._url)} for {PUBLISH_RETRY_TIMEOUT:g}s"
                    ) from None
                log.warning("bus: publish to %r interrupted (%s); retrying once reconnected",
                            routing_key, self._detail(exc))
            await asyncio.sleep(0.05)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await _guarded(channel.ready())

    async def _republish(self, queue: str, incoming: AbstractIncomingMessage, attempts: int, reason: str) -> None:
        """Put a copy of ``incoming`` at the tail of ``queue`` with its delivery count."""
        headers = dict(incoming.headers or {})
        headers[names.ATTEMPTS_HEADER] = attempts
        if reason:
            headers[names.REASON_HEADER] = reason
        copy = aio_pika.Message(
            incoming.body,
            headers=headers,
            content_type=incoming.content_type or CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=incoming.message_id,
            type=incoming.type,
            timestamp=incoming.timestamp,
        )
        await self._publish("", queue, copy)

    async def _dead_letter(self, queue: str, incoming: AbstractIncomingMessage, attempts: int, reason: str) -> None:
        log.warning("queue %s: message %s %s dead-lettered after %d deliveries: %s",
                    queue, incoming.type, incoming.message_id, attempts, reason)
        dead = aio_pika.Message(
            incoming.body,
            headers={names.ATTEMPTS_HEADER: attempts, names.REASON_HEADER: reason},
            content_type=incoming.content_type or CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=incoming.message_id,
            type=incoming.type,
            timestamp=time.time(),
        )
        await self._publish("", names.dead_letter_queue(queue), dead)
        notice = DeadLettered(queue=queue, message_id=incoming.message_id or "", message_type=incoming.type or "",
                              reason=reason, attempts=attempts)
        try:
            await self.broadcast(notice.topic(), notice)
        except BusError as exc:  # the message is safe in the dead-letter queue; only the notice is lost
            log.warning("queue %s: could not announce dead-lettered message %s: %s", queue, incoming.message_id, exc)

    async def _retry_or_dead_letter(
        self, consumer: _Consumer, incoming: AbstractIncomingMessage, attempts: int, reason: str
    ) -> None:
        """After ``attempts`` deliveries that failed: requeue with the count, or dead-letter; then ack."""
        assert consumer.limit is not None
        if attempts >= consumer.limit:
            await self._dead_letter(consumer.queue, incoming, attempts, reason)
        else:
            await self._republish(consumer.queue, incoming, attempts, reason)
        await incoming.ack()


# --- helpers ---------------------------------------------------------------------------------

T = TypeVar("T")


async def _guarded(operation: Awaitable[T]) -> T:
    """Await a broker operation in a task of its own, so that cancelling the caller (a
    timeout, a stopping actor) always raises CancelledError in the caller.

    aio-pika 10.2 / aiormq 7.2 on Python 3.11 can swallow a cancellation that lands just as an
    operation completes (``asyncio.wait_for`` inside aiormq, channel close): an
    ``asyncio.timeout`` around the caller then never fires (seen with ``join``). The
    operation is left to finish in the background (each is bounded by OPERATION_TIMEOUT):
    cancelling it half-way would only make aiormq close its channel.
    """
    task = asyncio.ensure_future(operation)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        _BACKGROUND.add(task)
        task.add_done_callback(_forget)
        raise


_BACKGROUND: set[asyncio.Future[Any]] = set()
"""Operations whose caller was cancelled, kept referenced until they finish."""


def _forget(task: asyncio.Future[Any]) -> None:
    _BACKGROUND.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" noise


def _alive(incoming: AbstractIncomingMessage) -> bool:
    """True while the channel ``incoming`` came on is open (so it can still be acked)."""
    try:
        return not incoming.channel.is_closed
    except ChannelInvalidStateError:
        return False


def _int(headers: Any, key: str) -> int:
    try:
        return max(0, int((headers or {}).get(key) or 0))
    except (TypeError, ValueError):
        return 0


def _dead_letter_of(queue: str, incoming: AbstractIncomingMessage) -> DeadLetter:
    try:
        message: Message | None = decode(incoming.body)
    except MessageError:
        message = None
    headers = incoming.headers or {}
    reason = headers.get(names.REASON_HEADER) or ""
    if isinstance(reason, bytes):
        reason = reason.decode(errors="replace")
    at = incoming.timestamp.timestamp() if isinstance(incoming.timestamp, datetime) else 0.0
    return DeadLetter(queue, message, incoming.body, str(reason), _int(headers, names.ATTEMPTS_HEADER), at)
