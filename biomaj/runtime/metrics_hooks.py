"""What the actors of a node do, counted for ``/metrics``: one :class:`MetricsHooks` per node,
passed to every actor it builds (:func:`biomaj.node.build.build_actor`) and read by
:mod:`biomaj.web.metrics` when scraped."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .hooks import Hooks

if TYPE_CHECKING:
    from biomaj.bus.base import Delivery

    from .actor import Actor

__all__ = ["ActorCounts", "MetricsHooks"]


@dataclass
class ActorCounts:
    """The messages of the actors named ``name``: handled by outcome, and being handled."""

    name: str
    succeeded: int = 0  # handler returned
    failed: int = 0  # handler raised
    in_flight: int = 0


class MetricsHooks(Hooks):
    """Counts per actor name. A handler cancelled (its actor stopping) is neither outcome: its
    message goes back to the queue."""

    def __init__(self) -> None:
        self.actors: dict[str, ActorCounts] = {}  # actor name -> its counts, in the order the actors started

    def counts(self, actor: Actor) -> ActorCounts:
        return self.actors.setdefault(actor.name, ActorCounts(actor.name))

    async def on_actor_start(self, actor: Actor) -> None:
        self.counts(actor)  # listed from its start, at 0

    async def on_actor_stop(self, actor: Actor) -> None:
        self.counts(actor).in_flight = 0

    async def on_message_start(self, actor: Actor, delivery: Delivery) -> None:
        self.counts(actor).in_flight += 1

    async def on_message_done(self, actor: Actor, delivery: Delivery, error: BaseException | None) -> None:
        counts = self.counts(actor)
        counts.in_flight = max(0, counts.in_flight - 1)
        if error is None:
            counts.succeeded += 1
        elif not isinstance(error, asyncio.CancelledError):
            counts.failed += 1
