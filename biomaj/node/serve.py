"""A node: one `biomaj serve` process hosting the actors of its roles.

The node opens the bus, the state and (for roles that need it) the store, starts its actors,
registers itself with a heartbeat, and stops everything in reverse order on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any, Sequence

from biomaj import __version__
from biomaj.bus import Bus, open_bus
from biomaj.config.roles import ROLE_ACTORS, ROLES, STORE_ROLES
from biomaj.config.service import Config
from biomaj.download.limits import HostBudget
from biomaj.node.build import Startable, Wiring, build_actor
from biomaj.notify.webhooks import Webhooks
from biomaj.node.heartbeat import Heartbeat
from biomaj.runtime.metrics_hooks import MetricsHooks
from biomaj.state import State, open_state
from biomaj.storage import open_store
from biomaj.storage.base import Store

log = logging.getLogger(__name__)


class Node:
    """The actors of some roles, their bus, state and store, and this node's heartbeat."""

    def __init__(self, config: Config, roles: Sequence[str]):
        self.config = config
        self.roles = list(roles)
        self.node_id = config.node_id
        self.started = time.time()
        self.bus: Bus | None = None
        self.state: State | None = None
        self.store: Store | None = None
        self.actors: list[Startable] = []
        self.actor_metrics = MetricsHooks()  # every actor's messages, for /metrics
        self.heartbeat: Heartbeat | None = None
        self.budget: HostBudget | None = None  # the connections to each server, for every actor
        self.webhooks: Webhooks | None = None  # config.yml's, for the manager and the web actor

    @property
    def actor_names(self) -> list[str]:
        names: list[str] = []
        for role in self.roles:
            names += [a for a in ROLE_ACTORS[role] if a not in names]
        return names

    def in_flight(self) -> int:
        return sum(getattr(actor, "in_flight", 0) for actor in self.actors)

    async def start(self) -> None:
        """Open transports, start every actor, then register. On failure, undo what was started."""
        cfg = self.config
        try:
            self.bus = open_bus(cfg.bus_url)
            self.state = open_state(cfg.state_url, prefix=cfg.state_prefix)
            if STORE_ROLES.intersection(self.roles):
                self.store = open_store(cfg.storage_url, cfg.root)
                await self.store.open()
            if set(self.roles) != set(ROLES) and cfg.bus_url.startswith("memory"):
                log.warning(
                    "roles %s run with the in-process bus: actors in other processes cannot reach them; "
                    "set bus.url and state.url (RabbitMQ, Redis) to spread roles over processes",
                    ",".join(self.roles),
                )
            node = cfg.settings.node
            wiring = Wiring(cfg, self.bus, self.state, self.store, self.node_id, grace=node.stop_grace,
                            lease_ttl=node.lease_ttl, status=self, ftp_asked=set(self.roles) != set(ROLES),
                            hooks=(self.actor_metrics,))
            self.budget = wiring.budget
            self.webhooks = wiring.webhooks
            for name in self.actor_names:
                actor = build_actor(name, wiring)
                await actor.start()
                self.actors.append(actor)
            self.heartbeat = Heartbeat(
                self.state,
                self.bus,
                node_id=self.node_id,
                roles=self.roles,
                actors=self.actor_names,
                in_flight=self.in_flight,
                interval=node.heartbeat_interval,
                ttl=node.heartbeat_ttl,
            )
            await self.heartbeat.start()
        except BaseException:
            await self.stop()
            raise
        log.info("node %s started", self.node_id, extra={"roles": ",".join(self.roles), "version": __version__})

    async def stop(self) -> None:
        """Unregister, stop actors in reverse order, close transports. Safe to call twice."""
        if self.heartbeat is not None:
            await self.heartbeat.stop()
            self.heartbeat = None
        while self.actors:
            actor = self.actors.pop()
            try:
                await actor.stop()
            except Exception:
                log.exception("actor %s did not stop cleanly", actor.name)
        if self.webhooks is not None:  # the last events get a bounded wait (notify.webhook_exit_wait)
            try:
                await self.webhooks.close()
            except Exception:
                log.exception("closing the webhooks failed")
            self.webhooks = None
        if self.budget is not None:  # the cluster's slots this node holds go back now, not at their TTL
            try:
                await self.budget.close()
            except Exception:
                log.exception("closing the host budget failed")
            self.budget = None
        for closing in (self.store, self.bus, self.state):
            if closing is not None:
                try:
                    await closing.close()
                except Exception:
                    log.exception("closing %r failed", closing)
        self.store = self.bus = self.state = None

    # What the web actor shows ------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        nodes = [node.to_dict() for node in await self.state.nodes()] if self.state else []
        return {
            "version": __version__,
            "node": self.node_id,
            "nodes": nodes,
            "backends": {
                "store": self.store.describe() if self.store else None,
                "bus": type(self.bus).__name__ if self.bus else None,
                "state": type(self.state).__name__ if self.state else None,
            },
        }

    async def ready(self) -> dict[str, Any]:
        """One check per backend (``store`` when this node has one, ``bus``, ``state``):
        ``{"ok": True, ...}`` or ``{"ok": False, "error": why}``; each answers within READY_TIMEOUT."""
        checks: dict[str, Any] = {}
        if self.store is not None:
            checks["store"] = await _check(self._store_ready)
        checks["bus"] = await _check(self._bus_ready)
        checks["state"] = await _check(self._state_ready)
        return checks

    async def _store_ready(self) -> dict[str, Any]:
        return {"schema": await self.store.schema_version()}

    async def _bus_ready(self) -> dict[str, Any]:
        from biomaj.bus import names

        if self.bus is None:
            raise RuntimeError("not open")
        await self.bus.declare_queue(names.JOBS)  # idempotent; raises BusClosed on a closed bus
        if not self.bus.is_connected():  # RabbitMQ: False while reconnecting
            raise RuntimeError("not connected to the broker (reconnecting)")
        return {}

    async def _state_ready(self) -> dict[str, Any]:
        if self.state is None:
            raise RuntimeError("not open")
        if not isinstance(await self.state.nodes(), list):
            raise RuntimeError("the node registry did not answer a list")
        return {}


READY_TIMEOUT = 5.0  # seconds one readiness check may take


async def _check(probe: Any) -> dict[str, Any]:
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            return {"ok": True, **(await probe())}
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {READY_TIMEOUT:g}s"}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"ok": False, "error": str(exc) or type(exc).__name__}


async def serve_until_signalled(node: Node, stop: asyncio.Event | None = None) -> None:
    """Start `node`, wait for SIGINT/SIGTERM (or `stop`), then stop it gracefully."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await node.start()
        log.info("serving; SIGINT or SIGTERM stops")
        await stop.wait()
        log.info("stopping")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await node.stop()
