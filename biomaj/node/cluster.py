"""``biomaj ctl`` in a distributed deployment: jobs go to the manager nodes through RabbitMQ.

When ``bus.url`` names RabbitMQ, a ``biomaj ctl update`` (remove, repair ...) does not run the
workflow itself: it records the job in the shared store, publishes it on the jobs queue that the
``biomaj serve --role manager`` nodes consume, and follows the job's events on the bus (progress
bar, Ctrl-C cancels through the state's cancel flag). The command refuses to queue a job when no
manager node is registered, rather than wait for one forever.
"""

from __future__ import annotations

from biomaj.auth.identity import current_user
from biomaj.bus import open_bus
from biomaj.config.service import Config
from biomaj.errors import BiomajError
from biomaj.redaction import redact_url
from biomaj.node.job_client import JobClient
from biomaj.state import open_state
from biomaj.storage import open_store


class Cluster(JobClient):
    """Jobs run by the manager nodes; use as ``async with Cluster(config) as cluster``."""

    def __init__(self, config: Config, user: str | None = None):
        self.config = config
        super().__init__(open_store(config.storage_url, config.root), open_bus(config.bus_url),
                         open_state(config.state_url, prefix=config.state_prefix), user or current_user())

    async def managers(self) -> list[str]:
        """The ids of the live nodes that run a manager."""
        assert self.state is not None
        return [node.node_id for node in await self.state.nodes() if "manager" in node.actors]

    async def before_submit(self, kind: str, bank: str) -> None:
        if self.config.state_url.startswith("memory"):
            return  # no shared registry to ask: the job waits in the queue for a manager
        if not await self.managers():
            raise BiomajError(
                f"no manager node is running (none registered in {redact_url(self.config.state_url)}): start one with "
                f"`biomaj serve --role manager` (or --all) with this config.yml; the {kind} of {bank} was not queued"
            )


    def why_queued(self) -> str:
        return ("the managers are busy with other jobs (limits.jobs), or they read another store than this "
                "command (storage.url) or share the RabbitMQ virtual host with another installation; "
                "`biomaj ctl nodes` lists them")


def job_client(config: Config, *, actors: bool = True) -> JobClient:
    """The client for this configuration: jobs run in this process on the in-process bus (by
    its own actors; ``actors=False`` only reaches the store, e.g. to cancel another command's
    job), by the manager nodes with RabbitMQ."""
    if not config.bus_url.startswith("memory"):
        return Cluster(config)
    if actors:
        from biomaj.node.embedded import Embedded

        return Embedded(config)
    from biomaj.bus.memory import MemoryBus

    return JobClient(open_store(config.storage_url, config.root), MemoryBus(), None, current_user())
