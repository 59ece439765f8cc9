"""Every actor is built here, by name: for a ``biomaj serve`` node (:mod:`biomaj.node.serve`) and for
the in-process actors of a ``biomaj ctl`` command (:mod:`biomaj.node.embedded`), with the one host
budget of the process (:func:`host_budget`), given to its manager and its downloader."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from biomaj.actors.downloader import DownloaderActor, DownloaderSettings
from biomaj.actors.manager import ManagerActor, ManagerSettings
from biomaj.actors.processor import ProcessorActor, ProcessorSettings
from biomaj.auth.identity import admins_of, secret_reader
from biomaj.bus import Bus
from biomaj.config.service import Config
from biomaj.download.limits import HostBudget
from biomaj.notify.webhooks import Hook, Webhooks
from biomaj.runtime.hooks import Hooks
from biomaj.state import State
from biomaj.storage.base import Store

if TYPE_CHECKING:
    from biomaj.web.app import StatusSource

log = logging.getLogger(__name__)


class Startable(Protocol):
    """What a process asks of its actors."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class Wiring:
    """What the actors of one process are built from: its configuration and transports, and the few
    choices that tell a ``biomaj serve`` node from a ``biomaj ctl`` command."""

    config: Config
    bus: Bus
    state: State | None
    store: Store | None
    node_id: str
    #: The manager's worker name, when not ``node_id`` (``cli@host:pid`` in a ``biomaj ctl`` command).
    manager_id: str | None = None
    #: The manager requeues its node's running jobs at start (not in a ``biomaj ctl`` command).
    recover: bool = True
    #: Seconds in-flight work gets on stop; None: each actor's own default.
    grace: float | None = None
    #: Seconds a manager's bank lease outlives it; None: the manager's default.
    lease_ttl: float | None = None
    #: What the web actor serves: the node.
    status: StatusSource | None = None
    #: The ftp role was named (``--role ftp``) rather than implied by ``--all``.
    ftp_asked: bool = False
    #: Given to every actor of the runtime (manager, downloader, processor): a node's MetricsHooks.
    hooks: tuple[Hooks, ...] = ()
    #: The connections to each remote server, for every actor of the process; built from the
    #: config and the state when not given. Its owner closes it after the actors stop.
    budget: HostBudget | None = None
    #: The webhooks of config.yml (notify.webhooks), for the manager and the web actor; built
    #: from the config when not given. Its owner closes it after the actors stop.
    webhooks: Webhooks | None = None

    def __post_init__(self) -> None:
        if self.budget is None:
            object.__setattr__(self, "budget", host_budget(self.config, self.state, self.node_id))
        if self.webhooks is None:
            object.__setattr__(self, "webhooks", webhooks_of(self.config))


def build_actor(name: str, wiring: Wiring) -> Startable:
    """The actor ``name`` (one of :data:`biomaj.config.roles.ROLE_ACTORS`), not started yet."""
    config, limits = wiring.config, wiring.config.settings.limits
    grace = _given(grace=wiring.grace)
    if name == "manager":
        assert wiring.store is not None
        settings = ManagerSettings(concurrency=limits.jobs, node_id=wiring.manager_id or wiring.node_id,
                                   recover=wiring.recover, bandwidth=limits.bandwidth, **grace,
                                   **_given(lease_ttl=wiring.lease_ttl))
        return ManagerActor(wiring.bus, settings, store=wiring.store, state=wiring.state,
                            global_properties=config.global_properties, admins=admins_of(config),
                            budget=wiring.budget, hooks=wiring.hooks, webhooks=wiring.webhooks)
    if name == "downloader":
        settings = DownloaderSettings(concurrency=limits.downloads, inline_max=limits.inline_write_max,
                                      bandwidth=limits.bandwidth, node_id=wiring.node_id, **grace)
        return DownloaderActor(wiring.bus, settings, state=wiring.state, read_secret=secret_reader(config),
                               budget=wiring.budget, hooks=wiring.hooks)
    if name == "processor":
        settings = ProcessorSettings(concurrency=limits.processes, node_id=wiring.node_id, **grace)
        return ProcessorActor(wiring.bus, settings, state=wiring.state, hooks=wiring.hooks)
    if name == "web":
        from biomaj.web.actor import WebActor

        assert wiring.status is not None
        return WebActor(wiring.status, config.settings.web.host, config.settings.web.port)
    if name == "scheduler":
        from biomaj.actors.scheduler import SchedulerActor, SchedulerSettings

        assert wiring.store is not None
        settings = SchedulerSettings(**grace, **config.settings.scheduler.model_dump())
        return SchedulerActor(wiring.bus, settings, store=wiring.store, global_properties=config.global_properties,
                              admins=admins_of(config))
    if name == "ftp":
        from biomaj.auth.identity import users_of
        from biomaj.ftp.actor import FtpActor

        assert wiring.store is not None
        return FtpActor(config.settings.ftp, wiring.store, users_of(config, wiring.store), **grace,
                        asked=wiring.ftp_asked)
    raise ValueError(f"no actor named {name!r}")


def host_budget(config: Config, state: State | None, node_id: str) -> HostBudget:
    """The one host budget of a process (``limits.per_host``, ``limits.hosts``): the cluster's,
    through the state, when the state is shared (Redis); else this process's alone."""
    limits = config.settings.limits
    shared = state if state is not None and state.shared else None
    return HostBudget(limits.per_host, limits.hosts, state=shared, node_id=node_id, lease_ttl=limits.host_lease_ttl)


def webhooks_of(config: Config, environ: Mapping[str, str] | None = None) -> Webhooks:
    """The webhooks of config.yml (``notify``), their secrets read from config.yml or from the
    environment (``secret_env``); a hook whose variable is not set is left out, with a warning."""
    notify = config.settings.notify
    environ = os.environ if environ is None else environ
    hooks = []
    for entry in notify.webhooks:
        if entry.secret is not None:
            secret = entry.secret.get_secret_value()
        else:
            secret = environ.get(entry.secret_env or "", "")
            if not secret:
                log.warning("webhook %s left out: its secret_env %s is not set (or empty) in this process's "
                            "environment", entry.name, entry.secret_env)
                continue
        hooks.append(Hook(entry.name, entry.url, secret.encode(), frozenset(entry.events), entry.timeout,
                          entry.all_banks))
    return Webhooks(hooks, allow=notify.webhook_allow, proxy=notify.webhook_proxy or None,
                    retry_delays=notify.webhook_retry_delays, exit_wait=notify.webhook_exit_wait)


def _given(**values: Any) -> dict[str, Any]:
    """The keyword arguments whose value is not None (None: the settings' own default)."""
    return {key: value for key, value in values.items() if value is not None}
