"""Hooks around actors and messages, with no-op defaults (dramatiq middleware, datasette hookspecs).

Cross-cutting concerns (metrics, progress, audit logs, time limits ...) are each one small
:class:`Hooks` subclass passed to the actors; the runtime calls every hook in order. A hook that
raises is logged and ignored: a broken metrics hook must never break the work. A node gives every
actor its :class:`~biomaj.runtime.metrics_hooks.MetricsHooks` (``node/build.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from biomaj.bus.base import Delivery

    from .actor import Actor

__all__ = ["Hooks", "run_hooks"]

log = logging.getLogger("biomaj.runtime.hooks")


class Hooks:
    """Override the methods you need; every default does nothing."""

    async def on_actor_start(self, actor: Actor) -> None:
        """The actor is about to take messages."""

    async def on_actor_stop(self, actor: Actor) -> None:
        """The actor has stopped; nothing is in flight any more."""

    async def on_message_start(self, actor: Actor, delivery: Delivery) -> None:
        """``actor`` is about to handle ``delivery``."""

    async def on_message_done(self, actor: Actor, delivery: Delivery, error: BaseException | None) -> None:
        """The handler returned (``error`` None), raised, or was cancelled (``CancelledError``).

        Called before the runtime settles the delivery, so whatever the hook records is in
        place once ``Bus.join`` sees the queue idle.
        """


async def run_hooks(hooks: Sequence[Hooks], name: str, *args: object) -> None:
    """Call hook method ``name`` on each of ``hooks``; log and swallow their exceptions."""
    for hook in hooks:
        try:
            await getattr(hook, name)(*args)
        except Exception:
            log.exception("hook %s.%s failed", type(hook).__name__, name)
