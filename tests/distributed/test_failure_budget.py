"""The failure budget in distributed mode: the stop of a broken mirror's download crosses
RabbitMQ and Redis (the round's cancel flag and wake-up) to download nodes in other processes,
fails the job without cancelling it, and leaves the cluster working for the next bank."""

from __future__ import annotations

import json

import pytest

from tests.distributed.cluster import Cluster, digests, make_remote_files
from tests.servers import http_server
from tests.servers.faults import Faults

pytestmark = [pytest.mark.service, pytest.mark.timeout(240)]


async def test_a_broken_mirror_stops_every_download_node_and_fails_only_its_job(cluster: Cluster, tmp_path):
    tree = tmp_path / "remote"
    broken = sorted(make_remote_files(tree / "broken", 240, 2_000))
    good = make_remote_files(tree / "good", 30, 2_000)
    faults = Faults(not_found={f"broken/{name}": 1000 for name in broken[4:]})
    server = await http_server.start(tree, faults, protocol="http")
    try:
        port = server.config.port
        cluster.write_bank("broken", port, download__max_failures="5")
        cluster.write_bank("good", port, download__max_failures="5", auto_publish="1")
        await cluster.start_nodes(("manager", "manager-1"), ("download", "dl-1"), ("download", "dl-2"))

        code, out, err = await cluster.ctl("--json", "update", "broken", timeout=150)
        job = json.loads(out)
        assert (code, job["state"]) == (1, "failed"), f"{job}\n{err}\n{cluster.logs()}"
        assert job["error"].startswith("download: download stopped: "), job["error"]
        assert "more than download.max_failures=5 allows (5 of the 240 files to fetch)" in job["error"]
        asked = sum(n for path, n in faults.transfers.items() if path.startswith("broken/"))
        assert asked < len(broken) // 3, f"{asked} requests for {len(broken)} files\n{cluster.logs()}"

        # the stop concerned that round only: the next job of the cluster runs whole
        code, out, err = await cluster.ctl("--json", "update", "good", timeout=150)
        job = json.loads(out)
        assert (code, job["state"]) == (0, "done"), f"{job}\n{err}\n{cluster.logs()}"
        assert digests(cluster.release_dir("good") / "flat") == good
    finally:
        await server.close()
