"""build_actor: a serve node's actors and a ctl command's are built by the same function from
config.yml; only a node's take its stop grace and lease TTL, and only a ctl command's manager runs as
cli@host:pid without recovering the node's jobs."""

from __future__ import annotations

import pytest

from biomaj.actors.manager import ManagerSettings
from biomaj.bus import MemoryBus
from biomaj.config.service import config_from_mapping
from biomaj.node.build import Wiring, build_actor
from biomaj.node.embedded import Embedded, cli_worker
from biomaj.state import MemoryState
from biomaj.download.limits import LISTING_SHARE
from biomaj.storage import open_store

DEFAULTS = ManagerSettings()


@pytest.fixture
def config(tmp_path):
    return config_from_mapping({
        "root": str(tmp_path),
        "node": {"id": "n1", "stop_grace": 4, "lease_ttl": 9},
        "limits": {"jobs": 3, "downloads": 5, "per_host": 2, "hosts": {"ftp.ncbi.nlm.nih.gov": 3}, "processes": 6},
        "web": {"host": "127.0.0.1", "port": 0},
    }, None, environ={})


async def test_a_ctl_command_keeps_the_actors_defaults_and_runs_its_manager_as_itself(config):
    embedded = Embedded(config)
    try:
        manager = embedded.manager.settings
        assert (manager.node_id, manager.recover, manager.concurrency) == (cli_worker(), False, 3)
        assert (manager.grace, manager.lease_ttl) == (DEFAULTS.grace, DEFAULTS.lease_ttl)
        downloader = embedded.downloader.settings
        assert (downloader.node_id, downloader.concurrency) == ("n1", 5)
        processor = embedded.processor.settings
        assert (processor.node_id, processor.concurrency) == ("n1", 6)
        assert downloader.grace == processor.grace == DEFAULTS.grace
    finally:
        await embedded.close()


async def test_a_serve_node_gives_its_grace_and_lease_to_every_actor(config):
    store = open_store(config.storage_url, config.root)
    wiring = Wiring(config, MemoryBus(), MemoryState(), store, "n1", grace=4, lease_ttl=9, status=object(),
                    ftp_asked=True)
    manager = build_actor("manager", wiring).settings
    assert (manager.node_id, manager.recover, manager.grace, manager.lease_ttl) == ("n1", True, 4, 9)
    assert build_actor("downloader", wiring).settings.grace == 4
    assert build_actor("processor", wiring).settings.grace == 4
    assert build_actor("scheduler", wiring).settings.grace == 4
    ftp = build_actor("ftp", wiring)
    assert (ftp.grace, ftp.asked) == (4, True)
    web = build_actor("web", wiring)
    assert (web.name, web.host, web.port) == ("web", "127.0.0.1", 0)
    with pytest.raises(ValueError, match="no actor named 'auth'"):
        build_actor("auth", wiring)


async def test_every_actor_of_the_runtime_gets_the_nodes_hooks(config):
    """A node's one MetricsHooks reaches its manager, downloader and processor: /metrics reads it."""
    from biomaj.runtime.metrics_hooks import MetricsHooks

    hooks = (MetricsHooks(),)
    wiring = Wiring(config, MemoryBus(), MemoryState(), open_store(config.storage_url, config.root), "n1",
                    hooks=hooks)
    assert [build_actor(name, wiring).hooks for name in ("manager", "downloader", "processor")] == [hooks] * 3


async def test_one_host_budget_per_process_for_its_manager_and_downloader(config):
    embedded = Embedded(config)
    try:
        budget = embedded.budget
        assert embedded.downloader.pool.budget is budget and embedded.manager.listing.budget is budget
        assert not budget.shared  # the memory state: this process alone
        assert (budget.limit("ftp.example.org:21"), budget.limit("ftp.ncbi.nlm.nih.gov:21")) == (2, 3)
        assert embedded.manager.listing.share == LISTING_SHARE
    finally:
        await embedded.close()


async def test_a_shared_state_makes_the_budget_the_clusters(config):
    from biomaj.state import open_state

    state = open_state("redis://127.0.0.1:6379/15", prefix="unused:")  # never asked: nothing is fetched
    try:
        wiring = Wiring(config, MemoryBus(), state, open_store(config.storage_url, config.root), "n1")
        assert wiring.budget.shared and wiring.budget.holder.startswith("n1/")
        assert build_actor("downloader", wiring).pool.budget is wiring.budget
    finally:
        await state.close()


def test_downloads_per_host_is_still_read_with_a_warning(tmp_path):
    old = config_from_mapping({"root": str(tmp_path), "limits": {"downloads_per_host": 3}}, None, environ={})
    assert old.settings.limits.per_host == 3
    assert any("limits.downloads_per_host is deprecated: name it limits.per_host" in w for w in old.warnings)
    both = config_from_mapping({"root": str(tmp_path), "limits": {"downloads_per_host": 3, "per_host": 5}},
                               None, environ={})
    assert both.settings.limits.per_host == 5
    assert any("set too; limits.downloads_per_host ignored" in w for w in both.warnings)
