"""The actor base: one mailbox (a bus queue), a handler, graceful stop, and a burst mode.

An actor subclass sets ``name`` and ``queue``, optionally its own settings dataclass, and
overrides :meth:`Actor.handle`::

    @dataclass(frozen=True, kw_only=True)
    class DownloaderSettings(ActorSettings):
        inline_max: int = 262144

    class Downloader(Actor):
        name = "downloader"
        queue = names.DOWNLOAD
        settings_class = DownloaderSettings

        async def handle(self, delivery):
            ...

The base acks after the handler returns, nacks with the exception text when it raises (the bus
redelivers, then dead-letters after ``max_deliveries``), logs the failure and keeps serving. A
handler may settle the delivery itself (reply then ack, nack without requeue ...); the base
then leaves it alone.

Concurrency: the actor runs ``concurrency`` worker tasks, each one bus consumer with prefetch 1
that handles its message in its own task. So the actor holds at most ``concurrency`` unacked
messages, and cancelling a worker mid-message gives exactly that message back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from biomaj.bus.base import Bus, BusError, Delivery

from .hooks import Hooks, run_hooks

__all__ = ["Actor", "ActorSettings"]

log = logging.getLogger("biomaj.runtime.actor")


@dataclass(frozen=True, kw_only=True)
class ActorSettings:
    """Tunables shared by every actor; subclass it to add an actor's own settings."""

    concurrency: int = 1  # messages handled at once (= unacked messages held)
    grace: float = 30.0  # seconds in-flight handlers get to finish on stop() before cancel
    max_deliveries: int | None = None  # None: the queue's limit from biomaj.bus.names

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.grace < 0:
            raise ValueError(f"grace must be >= 0, got {self.grace}")


class Actor:
    """Consume :attr:`queue` and run :meth:`handle` for each delivery."""

    name: ClassVar[str] = "actor"
    queue: ClassVar[str] = ""
    settings_class: ClassVar[type[ActorSettings]] = ActorSettings

    def __init__(self, bus: Bus, settings: ActorSettings | None = None, *, hooks: Sequence[Hooks] = ()) -> None:
        if not self.queue:
            raise TypeError(f"{type(self).__name__} must set the class attribute 'queue'")
        self.bus = bus
        self.settings = settings if settings is not None else self.settings_class()
        self.hooks = tuple(hooks)  # counting, by outcome, is one of them (runtime/metrics_hooks.py)
        self._handled = 0  # messages whose handler returned or raised, for run_until_idle
        self._workers: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[None]] = set()
        self._stopping = False

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.name} queue={self.queue} {state} in_flight={self.in_flight}>"

    @property
    def concurrency(self) -> int:
        return self.settings.concurrency

    @property
    def in_flight(self) -> int:
        """Messages being handled right now."""
        return len(self._busy)

    @property
    def running(self) -> bool:
        return bool(self._workers)

    @property
    def stopping(self) -> bool:
        """True once stop() began: long handlers may check it to wind down early."""
        return self._stopping and bool(self._workers)

    # --- to override -------------------------------------------------------------------------

    async def handle(self, delivery: Delivery) -> None:
        """Do the work for one message. Raise to fail it (it will be retried)."""
        raise NotImplementedError(f"{type(self).__name__}.handle")

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Declare the queue and start taking messages. Does nothing if already running."""
        if self._workers:
            return
        await self.bus.declare_queue(self.queue, max_deliveries=self.settings.max_deliveries)
        self._stopping = False
        await run_hooks(self.hooks, "on_actor_start", self)
        for n in range(self.concurrency):
            task = asyncio.create_task(self._work(), name=f"{self.name}-{n}")
            self._workers.add(task)
        log.info("actor %s: consuming %s (concurrency %d)", self.name, self.queue, self.concurrency)

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking messages, let in-flight handlers finish for ``grace`` seconds (default
        ``settings.grace``), then cancel the rest; their messages go back to the queue."""
        if not self._workers:
            return
        self._stopping = True
        grace = self.settings.grace if grace is None else grace
        workers = set(self._workers)
        busy = workers & self._busy
        for task in workers - busy:
            task.cancel()  # idle: waiting for a message, holds nothing
        late = busy
        if busy and grace > 0:
            _, late = await asyncio.wait(busy, timeout=grace)
        late = {task for task in late if not task.done()}
        if late:
            log.warning("actor %s: cancelling %d handler(s) still running after %.1fs",
                        self.name, len(late), grace)
            for task in late:
                task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._workers.clear()
        self._busy.clear()
        await run_hooks(self.hooks, "on_actor_stop", self)
        log.info("actor %s: stopped", self.name)

    async def run_until_idle(self, timeout: float | None = None) -> int:
        """Burst mode: handle messages until the queue is empty and nothing is unacked.

        Starts and stops the actor unless it is already running. Returns how many messages
        were handled (successfully or not) meanwhile. Raises ``BusTimeout`` after ``timeout``.
        """
        before = self._handled
        started_here = not self._workers
        if started_here:
            await self.start()
        try:
            await self.bus.join(self.queue, timeout=timeout)
        finally:
            if started_here:
                await self.stop()
        return self._handled - before

    # --- the loop ----------------------------------------------------------------------------

    async def _work(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            async with contextlib.aclosing(self.bus.consume(self.queue, prefetch=1)) as deliveries:
                async for delivery in deliveries:
                    self._busy.add(task)
                    try:
                        await self._process(delivery)
                    finally:
                        self._busy.discard(task)
                    if self._stopping:
                        return
        except BusError as exc:
            if not self._stopping:
                log.error("actor %s: stopped consuming %s: %s", self.name, self.queue, exc)
        except Exception:
            log.exception("actor %s: worker crashed", self.name)
        finally:
            self._workers.discard(task)

    async def _process(self, delivery: Delivery) -> None:
        await run_hooks(self.hooks, "on_message_start", self, delivery)
        error: Exception | None = None
        try:
            await self.handle(delivery)
        except asyncio.CancelledError as exc:
            await run_hooks(self.hooks, "on_message_done", self, delivery, exc)
            raise
        except Exception as exc:
            error = exc
            log.error(
                "actor %s: %s failed on %s (attempt %d): %s: %s",
                self.name,
                delivery.message.describe(),
                delivery.queue,
                delivery.attempts,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
        self._handled += 1
        await run_hooks(self.hooks, "on_message_done", self, delivery, error)
        if delivery.settled:
            return
        try:
            if error is None:
                await delivery.ack()
            else:
                await delivery.nack(requeue=True, reason=f"{type(error).__name__}: {error}")
        except BusError as exc:
            log.warning("actor %s: could not settle %s: %s", self.name, delivery.message.describe(), exc)
