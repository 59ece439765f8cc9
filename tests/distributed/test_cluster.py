"""Distributed mode for real: ``biomaj serve`` processes on RabbitMQ and Redis, faults included.

Every test starts real nodes (a manager, download nodes), updates banks served by a local HTTP
remote with ``biomaj ctl``, breaks something for real (SIGKILL, a cut broker connection, a file
that kills its worker), and checks that the release is complete and verified, byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from biomaj.bus import names, open_bus
from tests.distributed.cluster import Cluster, digests, downloads_by_node, make_remote_files
from tests.distributed.remote import Remote, pid_of_client
from tests.distributed.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.service, pytest.mark.timeout(240)]


async def until(predicate, what: str, cluster: Cluster, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{cluster.logs()}")
        await asyncio.sleep(0.05)


async def update(cluster: Cluster, bank: str, *options: str, timeout: float = 150.0) -> dict:
    code, out, err = await cluster.ctl("--json", "update", bank, *options, timeout=timeout)
    assert out, f"ctl update {bank} printed nothing (exit {code}): {err}\n{cluster.logs()}"
    job = json.loads(out)
    job["exit_code"] = code
    return job


def assert_complete(cluster: Cluster, bank: str, expected: dict[str, str]) -> None:
    """The published release holds exactly the remote files, with the same bytes."""
    got = digests(cluster.release_dir(bank) / "flat")
    assert sorted(got) == sorted(expected), f"missing {set(expected) - set(got)}, extra {set(got) - set(expected)}"
    assert got == expected, f"corrupt files: {[n for n in got if got[n] != expected[n]]}"


async def test_files_are_spread_over_three_download_nodes(cluster: Cluster, tmp_path):
    expected = make_remote_files(tmp_path / "remote" / "spread", 60, 20_000)
    remote = await Remote(tmp_path / "remote", delay=0.05).start()
    try:
        cluster.write_bank("spread", remote.port)
        await cluster.start_nodes(("manager", "manager-1"), ("download", "dl-1"), ("download", "dl-2"),
                                  ("download", "dl-3"))
        job = await update(cluster, "spread")
        assert (job["exit_code"], job["state"]) == (0, "done"), job
        assert_complete(cluster, "spread", expected)
        split = downloads_by_node(cluster.session_logs("spread"))
        assert set(split) == {"dl-1", "dl-2", "dl-3"} and all(count > 0 for count in split.values()), split
        assert sum(split.values()) == 60
        assert len([s for s in remote.seen if s.name.startswith("spread/")]) == 60  # no file fetched twice
    finally:
        await remote.close()
