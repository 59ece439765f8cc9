"""Distributed mode for real: ``biomaj serve`` processes on RabbitMQ and Redis, faults included.

Every test starts real nodes (a manager, download nodes), updates banks served by a local HTTP
remote with ``biomaj ctl``, breaks something for real (SIGKILL, a cut broker connection, a file
that kills its worker), and checks that the release is complete and verified, byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import time
from collections import Counter

import aiohttp

import pytest

from biomaj.bus import names, open_bus
from biomaj.state import open_state
from biomaj.storage import open_store
from tests.distributed.cluster import Cluster, digests, downloads_by_node, make_remote_files
from tests.distributed.remote import Remote, find_client, pid_of_client
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


async def test_a_download_node_killed_mid_file_its_file_resumes_on_another(cluster: Cluster, tmp_path):
    folder = tmp_path / "remote" / "resume"
    expected = make_remote_files(folder, 6, 10_000)
    (folder / "a_big.dat").write_bytes(bytes(range(256)) * (6 * 4096))  # 6 MiB, sent at 1 MiB/s
    expected = digests(folder)
    owners: dict[int, int] = {}  # request number -> pid of the node that sent it
    remote = Remote(tmp_path / "remote", pace={"resume/a_big.dat": 1024 * 1024})
    remote.on_request = lambda seen: owners.__setitem__(
        len(remote.seen) - 1, pid_of_client(seen.client_port, [n.pid for n in cluster.nodes if n.running]))
    await remote.start()
    try:
        cluster.write_bank("resume", remote.port)
        _, first = await cluster.start_nodes(("manager", "manager-1"), ("download", "dl-1"))
        updating = asyncio.create_task(update(cluster, "resume"))
        await until(lambda: remote.requests_for("resume/a_big.dat"), "the big file's transfer", cluster)
        big = remote.seen.index(remote.requests_for("resume/a_big.dat")[0])
        assert owners[big] == first.pid
        await asyncio.sleep(2.5)  # more than 2 MiB received: some of it on disk
        [second] = await cluster.start_nodes(("download", "dl-2"))
        first.kill()
        job = await updating
        assert (job["exit_code"], job["state"]) == (0, "done"), f"{job}\n{cluster.logs()}"
        assert_complete(cluster, "resume", expected)
        resumed = remote.requests_for("resume/a_big.dat")[1:]
        assert resumed, "the big file was never asked again"
        assert resumed[-1].offset >= 1024 * 1024, f"not resumed from the part on disk: {resumed}"
        assert owners[remote.seen.index(resumed[-1])] == second.pid
    finally:
        await remote.close()


async def test_a_download_node_killed_mid_batch_every_file_arrives_once(cluster: Cluster, tmp_path):
    """Small files travel many to a message: a node SIGKILLed in the middle of its batches leaves
    them unacked, the other node takes them, finds the files the dead one finished complete and
    fetches only the rest. Every file arrives, none is fetched twice except those cut in flight."""
    # 480 files: the other node may have started on its batches well before this one, and done
    # four times as many when this one has done 40 (seen: 159 to 41 with 240 files, nearly all)
    expected = make_remote_files(tmp_path / "remote" / "batched", 480, 2_000)
    remote = Remote(tmp_path / "remote", delay=0.04)
    pids: dict[int, int] = {}  # request number -> pid of the node that sent it
    remote.on_request = lambda seen: pids.__setitem__(
        len(remote.seen) - 1, pid_of_client(seen.client_port, [n.pid for n in cluster.nodes if n.running]))
    await remote.start()
    try:
        cluster.write_bank("batched", remote.port)
        _, first, second = await cluster.start_nodes(("manager", "manager-1"), ("download", "dl-1"),
                                                     ("download", "dl-2"))
        updating = asyncio.create_task(update(cluster, "batched"))
        await until(lambda: sum(1 for pid in pids.values() if pid == first.pid) >= 40,
                    "the first node's first files", cluster)
        first.kill()
        await first.process.wait()  # until it is gone, requests it sent before the signal still arrive
        killed_after = len(remote.seen)
        job = await updating
        assert (job["exit_code"], job["state"]) == (0, "done"), f"{job}\n{cluster.logs()}"
        assert_complete(cluster, "batched", expected)
        assert killed_after < len(expected) * 5 // 6, "the update was nearly over at the kill: make the remote slower"
        asked = Counter(s.name for s in remote.seen if s.name.startswith("batched/"))
        assert set(asked) == {f"batched/{name}" for name in expected}
        twice = sorted(name for name, n in asked.items() if n > 1)
        # only the files the dead node was receiving (at most its 4 connections) are asked again
        assert len(twice) <= 4, twice
        after_kill = {pids.get(i) for i in range(killed_after, len(remote.seen))}
        assert second.pid in after_kill and first.pid not in after_kill, "the survivor did not take the batches"
    finally:
        await remote.close()


async def test_every_node_reconnects_after_the_broker_connection_is_cut(cluster: Cluster, tmp_path):
    expected = make_remote_files(tmp_path / "remote" / "cut", 40, 10_000)
    remote = await Remote(tmp_path / "remote", delay=0.15).start()
    broker_port = int(cluster.bus_url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    proxy = await TcpProxy(broker_port).start()
    try:
        cluster.configure(bus_url=cluster.bus_url.replace(f":{broker_port}/", f":{proxy.port}/"))
        cluster.write_bank("cut", remote.port)
        nodes = await cluster.start_nodes(("manager", "manager-1"), ("download", "dl-1"), ("download", "dl-2"))
        updating = asyncio.create_task(update(cluster, "cut"))
        await until(lambda: len(remote.seen) >= 10, "the first downloads", cluster)
        before = proxy.connections
        await proxy.cut()
        await asyncio.sleep(3)
        assert len(remote.seen) < 40, "the update ended before the cut: make the remote slower"
        proxy.restore()
        job = await updating
        assert (job["exit_code"], job["state"]) == (0, "done"), f"{job}\n{cluster.logs()}"
        assert_complete(cluster, "cut", expected)
        assert proxy.connections >= before + len(nodes) + 1, "not every process reconnected"
        assert all(node.running for node in nodes)
        # and they still work: a second bank goes through the same nodes
        more = make_remote_files(tmp_path / "remote" / "after", 5, 1000)
        cluster.write_bank("after", remote.port)
        job = await update(cluster, "after")
        assert job["state"] == "done", job
        assert_complete(cluster, "after", more)
        await proxy.cut()  # for good: a node that lost its broker still stops cleanly on SIGTERM
        await cluster.stop()
        assert [node.process.returncode for node in nodes] == [0] * len(nodes), cluster.logs()
        # a lost connection is seen at once: nobody waited for the broker to take messages back
        assert "could not give its messages back" not in cluster.logs(lines=10_000), cluster.logs()
    finally:
        await proxy.close()
        await remote.close()


async def running_job(cluster: Cluster, bank: str) -> dict:
    """The job running on ``bank`` (waits for one)."""
    store = open_store("", cluster.root)
    async with store:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            jobs = await store.list_jobs(state="running", bank=bank, limit=None)
            if jobs:
                return jobs[0]
            await asyncio.sleep(0.1)
    raise AssertionError(f"no job running on {bank}\n{cluster.logs()}")


async def test_a_manager_killed_mid_update_and_restarted_resumes_the_job(cluster: Cluster, tmp_path):
    expected = make_remote_files(tmp_path / "remote" / "restart", 40, 10_000)
    remote = await Remote(tmp_path / "remote", delay=0.2).start()
    try:
        cluster.write_bank("restart", remote.port)
        manager, *_ = await cluster.start_nodes(("manager", "manager-1"), ("download", "dl-1"), ("download", "dl-2"))
        updating = asyncio.create_task(update(cluster, "restart"))
        await until(lambda: len(remote.seen) >= 12, "the first downloads", cluster)
        manager.kill()
        await manager.process.wait()
        await asyncio.sleep(1)  # the download nodes go on meanwhile; their results wait in the manager's queue
        await cluster.start_nodes(("manager", "manager-1"))
        job = await updating  # the same command, still following its job
        assert (job["exit_code"], job["state"], job["attempts"]) == (0, "done", 2), f"{job}\n{cluster.logs()}"
        assert_complete(cluster, "restart", expected)
        resumed = cluster.session_logs("restart")
        assert "already in the offline directory" in resumed and ", resumed)" in resumed
        fetched = [s.name for s in remote.seen if s.name.startswith("restart/")]
        assert len(fetched) < 40 + 8, "files downloaded before the crash were fetched again"
    finally:
        await remote.close()


async def test_another_manager_takes_over_the_job_of_a_dead_one(cluster: Cluster, tmp_path):
    expected = make_remote_files(tmp_path / "remote" / "takeover", 40, 10_000)
    remote = await Remote(tmp_path / "remote", delay=0.2).start()
    try:
        cluster.write_bank("takeover", remote.port)
        nodes = await cluster.start_nodes(("manager", "manager-1"), ("manager", "manager-2"),
                                          ("download", "dl-1"), ("download", "dl-2"))
        updating = asyncio.create_task(update(cluster, "takeover"))
        job = await running_job(cluster, "takeover")
        await until(lambda: len(remote.seen) >= 8, "the first downloads", cluster)
        [dying] = [n for n in nodes if n.node_id == job["worker"]]
        [survivor] = [n for n in nodes if n.node_id.startswith("manager") and n is not dying]
        dying.kill()
        job = await updating
        assert (job["exit_code"], job["state"], job["worker"]) == (0, "done", survivor.node_id), \
            f"{job}\n{cluster.logs()}"
        assert_complete(cluster, "takeover", expected)
        assert "taking it over" in survivor.log.read_text()
    finally:
        await remote.close()


async def test_a_poison_file_is_dead_lettered_and_fails_only_its_bank(cluster: Cluster, tmp_path):
    """A file whose transfer kills every download node that takes it (a stand-in for a crash in
    a library, or the kernel's OOM killer): RabbitMQ redelivers it, new nodes take it and die,
    until it lands in the dead-letter queue; its bank fails saying so, the other bank updates."""
    poison_files = make_remote_files(tmp_path / "remote" / "poison", 4, 5_000)
    (tmp_path / "remote" / "poison" / "zz_poison.dat").write_bytes(b"x" * 50_000)
    good_files = make_remote_files(tmp_path / "remote" / "good", 20, 5_000)
    replacements: list[asyncio.Task] = []

    async def crash_the_taker(seen) -> None:
        if seen.name != "poison/zz_poison.dat":
            return
        pid = await find_client(seen.client_port, lambda: [n.pid for n in cluster.nodes if n.running])
        assert pid is not None, f"no node owns the connection from port {seen.client_port}"
        for node in cluster.nodes:
            if node.pid == pid:
                node.kill()
                replacements.append(asyncio.ensure_future(cluster.start_node("download", f"dl-r{len(replacements)}")))

    remote = await Remote(tmp_path / "remote", delay=0.1, on_request=crash_the_taker).start()
    try:
        cluster.write_bank("poison", remote.port)
        cluster.write_bank("good", remote.port)
        await cluster.start_nodes(("manager", "manager-1"), ("download", "dl-1"), ("download", "dl-2"))
        poisoned, good = await asyncio.gather(update(cluster, "poison"), update(cluster, "good"))
        if good["state"] != "done":
            # A message of the good bank that a doomed node took together with the poison, every
            # time (RabbitMQ gives a dead node's messages back together, to the next node), dies
            # with it: dead-lettered too, and named so. Nothing else may fail it, and once the
            # poison is gone the same update completes (what was fetched is kept).
            collateral = f"given up after {names.DEFAULT_MAX_DELIVERIES} deliveries (delivered but never settled"
            failed = re.search(r"(\d+) of 20 files failed to download", good["error"])
            assert failed and good["error"].count(collateral) == min(int(failed.group(1)), 5), \
                f"{good}\n{cluster.logs()}"
            good = await update(cluster, "good")
        assert (good["exit_code"], good["state"]) == (0, "done"), f"{good}\n{cluster.logs()}"
        assert_complete(cluster, "good", good_files)
        assert (poisoned["exit_code"], poisoned["state"]) == (1, "failed"), f"{poisoned}\n{cluster.logs()}"
        error = poisoned["error"]
        assert "zz_poison.dat" in error and f"given up after {names.DEFAULT_MAX_DELIVERIES} deliveries" in error
        assert names.dead_letter_queue(names.DOWNLOAD) in error
        assert len(remote.requests_for("poison/zz_poison.dat")) == names.DEFAULT_MAX_DELIVERIES
        bus = open_bus(cluster.bus_url)
        try:
            letters = await bus.dead_letters(names.DOWNLOAD)
        finally:
            await bus.close()
        # An innocent message may share the fate of the poison when it keeps landing on the same
        # doomed nodes (its work done, its ack lost with the node): dead-lettered too, harmlessly.
        [letter] = [dead for dead in letters if [f["save_as"] for f in dead.message.files] == ["zz_poison.dat"]]
        assert letter.message.bank == "poison" and "never settled" in letter.reason
        assert not (cluster.root / "data" / "poison" / "current").exists()  # nothing published
        assert sorted(poison_files)  # the innocent files of the bank were fetched; the release was refused
    finally:
        await asyncio.gather(*replacements, return_exceptions=True)
        await remote.close()


async def listed_nodes(cluster: Cluster) -> set[str]:
    code, out, err = await cluster.ctl("--json", "nodes")
    assert code == 0, err
    return {node["node_id"] for node in json.loads(out)}


async def test_nodes_register_within_seconds_and_vanish_when_they_stop(cluster: Cluster):
    await cluster.start_nodes(("manager,web", "manager-1"))
    killed, stopped = [await cluster.start_node("download", node_id) for node_id in ("dl-1", "dl-2")]
    deadline = time.monotonic() + 30
    while await listed_nodes(cluster) != {"manager-1", "dl-1", "dl-2"}:
        assert time.monotonic() < deadline, f"not registered: {await listed_nodes(cluster)}\n{cluster.logs()}"
        await asyncio.sleep(0.2)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{cluster.web_port}/api/v1/status") as response:
            status = await response.json()
    roles = {node["node_id"]: node["roles"] for node in status["nodes"]}
    assert roles == {"manager-1": ["manager", "web"], "dl-1": ["download"], "dl-2": ["download"]}
    stopped.process.send_signal(signal.SIGTERM)  # a clean stop unregisters at once
    assert await stopped.process.wait() == 0
    assert "dl-2" not in await listed_nodes(cluster)
    killed.kill()  # a dead node is forgotten after its heartbeat TTL (2 s here)
    deadline = time.monotonic() + 30
    while "dl-1" in await listed_nodes(cluster):
        assert time.monotonic() < deadline, "a killed node is still listed"
        await asyncio.sleep(0.2)
    assert await listed_nodes(cluster) == {"manager-1"}


async def test_a_stopping_download_node_hands_its_file_back(cluster: Cluster, tmp_path):
    folder = tmp_path / "remote" / "handback"
    (folder).mkdir(parents=True)
    (folder / "big.dat").write_bytes(bytes(range(256)) * (6 * 4096))  # 6 MiB at 1 MiB/s
    expected = digests(folder)
    remote = await Remote(tmp_path / "remote", pace={"handback/big.dat": 1024 * 1024}).start()
    try:
        cluster.write_bank("handback", remote.port)
        _, leaving = await cluster.start_nodes(("manager", "manager-1"), ("download", "dl-1"))
        updating = asyncio.create_task(update(cluster, "handback"))
        await until(lambda: remote.requests_for("handback/big.dat"), "the transfer", cluster)
        await asyncio.sleep(2.5)
        leaving.process.send_signal(signal.SIGTERM)  # stop_grace is 2 s: too short to finish
        assert await leaving.process.wait() == 0, cluster.logs()
        assert "cancelling 1 handler(s) still running" in leaving.log.read_text()
        await cluster.start_nodes(("download", "dl-2"))
        job = await updating
        assert (job["exit_code"], job["state"]) == (0, "done"), f"{job}\n{cluster.logs()}"
        assert_complete(cluster, "handback", expected)
        first, *again = remote.requests_for("handback/big.dat")
        assert again and again[-1].offset >= 1024 * 1024, f"not resumed from the part on disk: {again}"
        assert downloads_by_node(cluster.session_logs("handback")) == {"dl-2": 1}
    finally:
        await remote.close()


async def test_cancel_reaches_the_manager_and_download_nodes(cluster: Cluster, tmp_path):
    make_remote_files(tmp_path / "remote" / "stopme", 40, 10_000)
    remote = await Remote(tmp_path / "remote", delay=0.3).start()
    try:
        cluster.write_bank("stopme", remote.port)
        await cluster.start_nodes(("manager", "manager-1"), ("download", "dl-1"))
        updating = asyncio.create_task(update(cluster, "stopme"))
        await until(lambda: len(remote.seen) >= 4, "the first downloads", cluster)
        code, out, err = await cluster.ctl("cancel", "stopme")
        assert code == 0 and "asked to stop" in out, err
        job = await updating
        assert (job["exit_code"], job["state"]) == (1, "cancelled"), f"{job}\n{cluster.logs()}"
        fetched = len(remote.seen)
        await asyncio.sleep(1)
        assert len(remote.seen) <= fetched + 2, "the download node went on fetching after the cancel"
        # the session is kept: the next update resumes it and completes the release
        job = await update(cluster, "stopme")
        assert job["state"] == "done", job
        assert "already in the offline directory" in cluster.session_logs("stopme")
    finally:
        await remote.close()


async def test_unlock_knows_a_lock_of_another_host_is_stale_when_no_lease_holds_the_bank(cluster: Cluster):
    """BioMAJ 3's lock file cannot tell whether its holder on another host lives; the lease can."""
    from biomaj.runtime.lease import lease_name
    from biomaj.state import LockOwner
    from biomaj.workflow import locks

    cluster.write_bank("elsewhere", 9)
    lock_dir = cluster.root / "lock"
    holder = locks.LockHolder("another-host", 4242, "job-x", "tester", time.time())

    locks.acquire(lock_dir, "elsewhere", holder)  # a live job on another host: its lease is held
    state = open_state(cluster.state_url, prefix=f"{cluster.prefix}:")
    try:
        owner = LockOwner("another-host", 4242, "job-x", "manager-9")
        assert await state.acquire_lock(lease_name("elsewhere"), owner, 60)
        code, _, err = await cluster.ctl("unlock", "elsewhere")
        assert code == 1 and "is locked by process 4242 on another-host" in err
        assert locks.read_holder(lock_dir, "elsewhere") is not None
        await state.release_lock(lease_name("elsewhere"), owner)  # that host died: no renewal
        code, out, err = await cluster.ctl("unlock", "elsewhere")
        assert code == 0 and "lock of process 4242 on another-host" in out, err
        assert locks.read_holder(lock_dir, "elsewhere") is None
    finally:
        await state.close()


async def test_ctl_refuses_to_queue_a_job_when_no_manager_runs(cluster: Cluster):
    """With RabbitMQ, a job needs a manager node: the command says so instead of waiting for ever."""
    await cluster.start_nodes(("download", "dl-1"))
    cluster.write_bank("lonely", 9)
    code, _out, err = await cluster.ctl("update", "lonely", timeout=60)
    assert code == 1 and "no manager node is running" in err and "was not queued" in err
    store = open_store("", cluster.root)
    async with store:
        assert await store.list_jobs(bank="lonely", limit=None) == []


async def test_two_nodes_with_the_same_host_name_and_pid_are_two_nodes(cluster: Cluster):
    """Containers on the host's network share its host name and are all PID 1: their default
    node ids must still differ (two download containers once showed up as one node)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare(1) and root to give two processes PID 1 (PID namespaces)")
    # unshare waits for its child whatever signal it gets; killed, it hands the child a SIGTERM
    as_pid_1 = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM")
    started = [await cluster.start_node("download", None, as_pid_1) for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        while len(nodes := [n for n in await cluster.registered() if "download" in n.roles]) < 2:
            assert time.monotonic() < deadline, f"two nodes not registered: {nodes}\n{cluster.logs()}"
            assert all(n.running for n in started), cluster.logs()
            await asyncio.sleep(0.2)
        ids = sorted(n.node_id for n in nodes)
        assert len(set(ids)) == 2, ids
        assert all(i.startswith(f"{socket.gethostname()}-1-") for i in ids), ids  # same host, both PID 1
        code, out, err = await cluster.ctl("nodes")
        assert code == 0 and all(i in out for i in ids), out + err
    finally:
        for node in started:
            node.kill()
            await node.process.wait()


async def test_a_download_node_killed_mid_split_another_resumes_every_range(cluster: Cluster, tmp_path):
    """A big file fetched as several ranges (the remote caps each connection, as public mirrors
    do); its node is SIGKILLed mid-way; another node resumes each range from the journal beside
    the part file on the shared data directory, and fetches only what was missing."""
    folder = tmp_path / "remote" / "split"
    folder.mkdir(parents=True)
    size = 24 * 1024 * 1024
    (folder / "huge.dat").write_bytes(os.urandom(size))
    expected = digests(folder)
    owners: dict[int, int] = {}  # request number -> pid of the node that sent it
    remote = Remote(tmp_path / "remote", pace={"split/huge.dat": 1024 * 1024})  # per request
    remote.on_request = lambda seen: owners.__setitem__(
        len(remote.seen) - 1, pid_of_client(seen.client_port, [n.pid for n in cluster.nodes if n.running]))
    await remote.start()
    try:
        cluster.write_bank("split", remote.port, download__split__min_size="1M", download__split__max="4")
        _, first = await cluster.start_nodes(("manager", "manager-1"), ("download", "dl-1"))
        updating = asyncio.create_task(update(cluster, "split"))
        # two ranges at once, or more: the cluster has 4 connections to the server (limits.per_host)
        await until(lambda: len(remote.requests_for("split/huge.dat")) >= 2, "two ranges at once", cluster)
        await asyncio.sleep(4.0)  # about 8 MiB received, most of it on disk and journaled (every second)
        [second] = await cluster.start_nodes(("download", "dl-2"))
        first.kill()
        killed_at = len(remote.seen)
        job = await updating
        assert (job["exit_code"], job["state"]) == (0, "done"), f"{job}\n{cluster.logs()}"
        assert_complete(cluster, "split", expected)
        after = [s for s in remote.seen[killed_at:] if s.name == "split/huge.dat"]
        assert after and all(owners[remote.seen.index(s)] == second.pid for s in after)
        assert any(s.offset > 0 for s in after), f"no range resumed mid-file: {after}"
        asked_again = sum((s.end or size) - s.offset for s in after)
        assert asked_again <= size - 4 * 1024 * 1024, f"the survivor fetched the file again: {after}"
    finally:
        await remote.close()
