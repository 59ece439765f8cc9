"""One politeness budget per server for the whole cluster, for real: a manager and three
download nodes (``biomaj serve`` processes on RabbitMQ and Redis) update a bank from a server
that refuses a 5th concurrent connection (a front counting TCP connections, answering 503 past
4). The cluster never opens more than its budget of 4 (listing included), so the server never
refuses, no file is retried, and the update completes."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.distributed.cluster import Cluster, digests, downloads_by_node, make_remote_files
from tests.distributed.remote import Remote
from tests.servers.connection_cap import ConnectionCap

pytestmark = [pytest.mark.service, pytest.mark.timeout(240)]


async def test_three_download_nodes_and_a_manager_keep_to_the_servers_four_connections(cluster: Cluster, tmp_path):
    folder = tmp_path / "remote" / "polite"
    make_remote_files(folder, 150, 4_000)
    make_remote_files(folder, 4, 1_500_000, prefix="big")  # above inline_max: one by one, with plain GETs
    expected = digests(folder)
    remote = await Remote(tmp_path / "remote", delay=0.02).start()
    cap = await ConnectionCap(remote.port, limit=4).start()
    try:
        cluster.configure(limits={"per_host": 4, "downloads": 3})
        cluster.write_bank("polite", cap.port)
        await cluster.start_nodes(("manager", "manager-1"), ("download", "dl-1"), ("download", "dl-2"),
                                  ("download", "dl-3"))
        code, out, err = await cluster.ctl("--json", "update", "polite", timeout=180)
        job = json.loads(out) if out else {}
        assert (code, job.get("state")) == (0, "done"), f"{job} {err}\n{cluster.logs()}"
        got = digests(cluster.release_dir("polite") / "flat")
        assert got == expected
        assert cap.refused == 0, f"the server refused {cap.refused} connection(s) (peak {cap.peak})\n{cluster.logs()}"
        assert 1 <= cap.peak <= 4, cap.peak
        asked = Counter(s.name for s in remote.seen if s.name.startswith("polite/"))
        assert set(asked) == {f"polite/{name}" for name in expected} and max(asked.values()) == 1, asked
        logs = cluster.logs(lines=100_000) + cluster.session_logs("polite")
        throttled = [line for line in logs.splitlines() if "HTTP 503" in line or "slow down" in line]
        assert not throttled, throttled[:5]
        split = downloads_by_node(cluster.session_logs("polite"))
        assert sum(split.values()) == len(expected), split
        assert len(split) >= 2, f"one node did all the work: {split}"
    finally:
        await cap.close()
        await remote.close()
