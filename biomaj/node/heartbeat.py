"""Automatic node registration: a heartbeat into the state registry and onto the bus.

Every ``interval`` seconds the node writes its :class:`~biomaj.state.NodeInfo` with a TTL (so a
node that dies disappears by itself after ``ttl``) and broadcasts a
:class:`~biomaj.bus.messages.NodeHeartbeat` event on :data:`~biomaj.bus.names.NODE_TOPIC`.
``stop()`` removes the node at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence

import biomaj
from biomaj.bus.base import Bus
from biomaj.bus.messages import NodeHeartbeat
from biomaj.config.service import default_node_id
from biomaj.state.base import Clock, NodeInfo, State

__all__ = ["Heartbeat", "default_node_id"]

log = logging.getLogger("biomaj.node.heartbeat")


class Heartbeat:
    """Keeps this node registered while it runs: ``await hb.start()`` ... ``await hb.stop()``."""

    def __init__(
        self,
        state: State,
        bus: Bus | None,
        *,
        node_id: str | None = None,
        roles: Sequence[str] = (),
        actors: Sequence[str] = (),
        in_flight: Callable[[], int] = lambda: 0,
        interval: float = 5.0,
        ttl: float = 15.0,
        clock: Clock = time.time,
    ) -> None:
        if interval <= 0 or ttl <= interval:
            raise ValueError(f"need 0 < interval < ttl, got interval={interval} ttl={ttl}")
        self.state = state
        self.bus = bus
        self.node_id = node_id or default_node_id()
        self.roles = tuple(roles)
        self.actors = tuple(actors)
        self.in_flight = in_flight
        self.interval = interval
        self.ttl = ttl
        self.clock = clock
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started = clock()
        self._task: asyncio.Task[None] | None = None

    def info(self) -> NodeInfo:
        """This node's registry entry, stamped now."""
        return NodeInfo(
            node_id=self.node_id,
            host=self.host,
            pid=self.pid,
            roles=self.roles,
            actors=self.actors,
            version=biomaj.__version__,
            in_flight=self.in_flight(),
            started=self.started,
            last_seen=self.clock(),
        )

    async def beat(self) -> NodeInfo:
        """Register once now and broadcast the heartbeat event."""
        info = self.info()
        await self.state.heartbeat(info, self.ttl)
        if self.bus is not None:
            event = NodeHeartbeat(
                node_id=info.node_id,
                host=info.host,
                pid=info.pid,
                roles=list(info.roles),
                actors=list(info.actors),
                version=info.version,
                in_flight=info.in_flight,
                started=info.started,
                at=info.last_seen,
            )
            await self.bus.broadcast(event.topic(), event)
        return info

    async def start(self) -> None:
        """Register at once (errors propagate: a node that cannot register should not start),
        then keep beating in the background."""
        if self._task is not None:
            return
        await self.beat()
        self._task = asyncio.create_task(self._loop(), name=f"heartbeat-{self.node_id}")

    async def stop(self) -> None:
        """Stop beating and remove the node from the registry now."""
        if self._task is None:
            return
        task, self._task = self._task, None
        task.cancel()
        await asyncio.wait({task})  # our own cancellation still propagates
        try:
            await self.state.forget_node(self.node_id)
        except Exception:
            log.exception("heartbeat: could not unregister node %s (it expires in %ss)", self.node_id, self.ttl)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except Exception:
                # A missed beat is not fatal; the TTL is there to absorb a few of them.
                log.exception("heartbeat: node %s could not report", self.node_id)
