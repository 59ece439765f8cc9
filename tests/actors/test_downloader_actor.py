"""The downloader actor on the real in-process bus and state, against a real HTTP server."""

from __future__ import annotations

import asyncio
import os

import pytest

from biomaj.actors.downloader import DownloaderActor, DownloaderSettings
from biomaj.bus import MemoryBus, names
from biomaj.bus.messages import CancelJob, DownloadRequest, DownloadResult, FileOutcome, FileSpec, JobEvent
from biomaj.download.engine import PART_SUFFIX
from biomaj.download.limits import HostBudget
from biomaj.download.remote import to_message
from biomaj.state import MemoryState
from tests.servers import http_server
from tests.servers.faults import Faults

BIG = 4 * 1024 * 1024


@pytest.fixture
async def served(tmp_path):
    tree = tmp_path / "remote"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "small.txt").write_bytes(b"hello\n" * 100)
    (tree / "big.bin").write_bytes(os.urandom(BIG))
    faults = Faults()
    server = await http_server.start(tree, faults, protocol="http")
    yield server, tree
    await server.close()


@pytest.fixture
async def rig():
    bus, state = MemoryBus(), MemoryState()
    await bus.declare_queue(names.DOWNLOAD)
    await bus.declare_queue(names.DOWNLOAD_RESULTS)
    events = await bus.subscribe("job.#")
    actor = DownloaderActor(bus, DownloaderSettings(concurrency=2, grace=5, node_id="n1"), state=state)
    await actor.start()
    yield bus, state, actor, events
    await actor.stop()
    await events.close()
    await bus.close()


def request(server, offline, path, save_as=None, size=None, digest=None, **extra) -> DownloadRequest:
    return batch(server, offline, [FileSpec(path, save_as or path, size=size, digest=digest)], **extra)


def batch(server, offline, specs: list[FileSpec], **extra) -> DownloadRequest:
    return DownloadRequest(
        job_id="job1", bank="demo", session_id="s1", remote=to_message(server.config),
        offline_dir=str(offline), files=[spec.to_dict() for spec in specs], **extra,
    )


async def next_result(bus, final_only: bool = True) -> DownloadResult:
    async with asyncio.timeout(20):
        async for delivery in bus.consume(names.DOWNLOAD_RESULTS):
            await delivery.ack()
            if delivery.message.final or not final_only:
                return delivery.message
    raise AssertionError("no result")


async def only_outcome(bus) -> FileOutcome:
    result = await next_result(bus)
    [outcome] = result.outcomes()
    return outcome


async def test_downloads_a_file_reports_and_acks(served, rig, tmp_path):
    server, tree = served
    bus, state, _actor, events = rig
    offline = tmp_path / "offline"
    req = request(server, offline, "sub/small.txt", size=600, digest="md5")
    await bus.publish(names.DOWNLOAD, req)
    result = await next_result(bus)
    await bus.join(names.DOWNLOAD, timeout=10)
    assert result.final and result.request_id == req.id and result.node_id == "n1"
    [outcome] = result.outcomes()
    assert outcome.ok and outcome.save_as == "sub/small.txt"
    assert outcome.size == 600 and outcome.transferred == 600
    import hashlib

    assert outcome.digest == hashlib.md5(b"hello\n" * 100).hexdigest()
    assert (offline / "sub" / "small.txt").read_bytes() == b"hello\n" * 100
    async with asyncio.timeout(5):
        event = await anext(aiter(events))
    assert isinstance(event, JobEvent) and event.state == "done"
    assert event.progress["batch"] == req.id and event.progress["files"] == {"downloaded": 1}
    assert event.progress["bytes"] == 600
    async with asyncio.timeout(5):  # byte counters reach the state every PROGRESS_INTERVAL
        while (await state.get_progress("job1")).get("bytes") != 600:
            await asyncio.sleep(0.05)


async def test_a_missing_file_is_a_failed_result_not_a_redelivery(served, rig, tmp_path):
    server, _tree = served
    bus, _state, actor, _events = rig
    await bus.publish(names.DOWNLOAD, request(server, tmp_path / "offline", "nope.txt"))
    result = await only_outcome(bus)
    await bus.join(names.DOWNLOAD, timeout=10)
    assert not result.ok and not result.retryable
    assert "nope.txt" in result.error
    assert await bus.dead_letters(names.DOWNLOAD) == []


async def test_an_unsafe_save_as_is_refused(served, rig, tmp_path):
    server, _tree = served
    bus, *_ = rig
    await bus.publish(names.DOWNLOAD, request(server, tmp_path / "offline", "sub/small.txt", save_as="../../evil"))
    result = await only_outcome(bus)
    assert not result.ok and "unsafe remote name" in result.error
    assert not (tmp_path / "evil").exists()


async def test_cancel_stops_an_in_flight_transfer(served, rig, tmp_path):
    server, _tree = served
    bus, _state, _actor, _events = rig
    server.faults.stall["big.bin"] = 60.0
    offline = tmp_path / "offline"
    await bus.publish(names.DOWNLOAD, request(server, offline, "big.bin", size=BIG))
    async with asyncio.timeout(10):
        while not (offline / ("big.bin" + PART_SUFFIX)).exists() and not server.faults.active:
            await asyncio.sleep(0.05)  # waiting on another component's side effect
    await bus.broadcast(names.CANCEL_TOPIC, CancelJob(job_id="job1", bank="demo"))
    result = await only_outcome(bus)
    assert not result.ok and result.error == "cancelled"
    assert not (offline / "big.bin").exists()


async def test_a_cancelled_job_is_not_started(served, rig, tmp_path):
    server, _tree = served
    bus, state, *_ = rig
    await state.set_cancel("job1")
    await bus.publish(names.DOWNLOAD, request(server, tmp_path / "offline", "sub/small.txt"))
    result = await only_outcome(bus)
    assert result.error == "cancelled"
    assert server.faults.transfers["sub/small.txt"] == 0


async def test_a_stopped_downloader_leaves_the_file_to_another_which_resumes(served, tmp_path):
    server, _tree = served
    bus, state = MemoryBus(), MemoryState()
    await bus.declare_queue(names.DOWNLOAD)
    await bus.declare_queue(names.DOWNLOAD_RESULTS)
    server.faults.stall["big.bin"] = 60.0
    offline = tmp_path / "offline"
    first = DownloaderActor(bus, DownloaderSettings(grace=0), state=state)
    await first.start()
    await bus.publish(names.DOWNLOAD, request(server, offline, "big.bin", size=BIG))
    part = offline / ("big.bin" + PART_SUFFIX)
    async with asyncio.timeout(10):
        while not first.bytes_received:
            await asyncio.sleep(0.05)  # waiting on another component's side effect
    await first.stop(grace=0)  # a node going away mid-file: the request is not acked
    assert part.stat().st_size == first.bytes_received  # what arrived is kept for the resume
    server.faults.stall.clear()
    second = DownloaderActor(bus, DownloaderSettings(), state=state)
    await second.start()
    try:
        result = await only_outcome(bus)
    finally:
        await second.stop()
        await bus.close()
    assert result.ok
    assert result.transferred < BIG  # resumed from the part file the first one left
    assert (offline / "big.bin").stat().st_size == BIG


async def test_a_batch_fetches_every_file_and_fails_only_the_bad_one(served, rig, tmp_path):
    server, tree = served
    bus, *_ = rig
    for n in range(6):
        (tree / "sub" / f"f{n}.txt").write_bytes(b"%d" % n * 1000)
    offline = tmp_path / "offline"
    specs = [FileSpec(f"sub/f{n}.txt", f"sub/f{n}.txt", size=1000) for n in range(6)]
    specs.insert(3, FileSpec("sub/missing.txt", "sub/missing.txt"))
    req = batch(server, offline, specs)
    await bus.publish(names.DOWNLOAD, req)
    results = [await next_result(bus, final_only=False)]
    while not results[-1].final:
        results.append(await next_result(bus, final_only=False))
    await bus.join(names.DOWNLOAD, timeout=10)
    outcomes = {o.save_as: o for result in results for o in result.outcomes()}
    assert set(outcomes) == {s.save_as for s in specs}
    assert [name for name, o in outcomes.items() if not o.ok] == ["sub/missing.txt"]
    for n in range(6):
        assert (offline / "sub" / f"f{n}.txt").read_bytes() == b"%d" % n * 1000
    assert all(server.faults.transfers[f"sub/f{n}.txt"] == 1 for n in range(6))


async def test_a_long_batch_reports_its_files_before_it_ends(served, rig, tmp_path):
    """The outcomes of a batch reach the manager while the batch runs (progress file by file),
    not only when its slowest file ends."""
    server, tree = served
    bus, *_ = rig
    (tree / "quick.txt").write_bytes(b"q" * 10)
    server.faults.stall["big.bin"] = 2.0
    req = batch(server, tmp_path / "offline", [FileSpec("quick.txt", "quick.txt", size=10),
                                               FileSpec("big.bin", "big.bin", size=BIG)])
    await bus.publish(names.DOWNLOAD, req)
    first = await next_result(bus, final_only=False)
    assert not first.final and [o.save_as for o in first.outcomes()] == ["quick.txt"]
    last = await next_result(bus)
    assert [(o.save_as, o.ok) for o in last.outcomes()] == [("big.bin", True)]


async def test_a_failure_is_reported_while_its_batch_runs(served, rig, tmp_path):
    """A failed file reaches the manager without waiting for the rest of its batch: a bank's
    failure budget stops its download as soon as it is spent."""
    server, _tree = served
    bus, *_ = rig
    server.faults.stall["big.bin"] = 2.0
    req = batch(server, tmp_path / "offline", [FileSpec("sub/missing.txt", "sub/missing.txt"),
                                               FileSpec("big.bin", "big.bin", size=BIG)])
    await bus.publish(names.DOWNLOAD, req)
    first = await next_result(bus, final_only=False)
    assert not first.final and [(o.save_as, o.ok) for o in first.outcomes()] == [("sub/missing.txt", False)]
    last = await next_result(bus)
    assert [(o.save_as, o.ok) for o in last.outcomes()] == [("big.bin", True)]


async def test_a_batch_redelivered_after_its_downloader_died_resumes_without_fetching_twice(served, tmp_path):
    server, tree = served
    bus, state = MemoryBus(), MemoryState()
    await bus.declare_queue(names.DOWNLOAD)
    await bus.declare_queue(names.DOWNLOAD_RESULTS)
    for n in range(4):
        (tree / f"s{n}.txt").write_bytes(b"s" * 100)
    server.faults.stall["big.bin"] = 60.0
    offline = tmp_path / "offline"
    specs = [FileSpec(f"s{n}.txt", f"s{n}.txt", size=100) for n in range(4)] + [FileSpec("big.bin", "big.bin", size=BIG)]
    first = DownloaderActor(bus, DownloaderSettings(grace=0), state=state, budget=HostBudget(2))
    await first.start()
    await bus.publish(names.DOWNLOAD, batch(server, offline, specs))
    async with asyncio.timeout(10):
        while not all((offline / f"s{n}.txt").exists() for n in range(4)) or not first.bytes_received:
            await asyncio.sleep(0.05)  # waiting on another component's side effect
    await first.stop(grace=0)  # gone mid-batch: the batch is not acked
    server.faults.stall.clear()
    second = DownloaderActor(bus, DownloaderSettings(), state=state)
    await second.start()
    try:
        result = await next_result(bus)
    finally:
        await second.stop()
        await bus.close()
    outcomes = {o.save_as: o for o in result.outcomes()}
    assert all(o.ok for o in outcomes.values()) and set(outcomes) == {s.save_as for s in specs}
    assert all(outcomes[f"s{n}.txt"].skipped for n in range(4))  # complete: found, not fetched again
    assert all(server.faults.transfers[f"s{n}.txt"] == 1 for n in range(4))
    assert 0 < outcomes["big.bin"].transferred < BIG  # resumed
    assert (offline / "big.bin").stat().st_size == BIG


@pytest.mark.parametrize("inline_max", [0, 1 << 20])
async def test_small_files_arrive_whole_whether_written_on_the_loop_or_in_threads(served, tmp_path, inline_max):
    """limits.inline_write_max: 0 (a network file system) sends every write to a worker thread."""
    server, tree = served
    for n in range(10):
        (tree / "sub" / f"w{n}.txt").write_bytes(bytes([n]) * (5000 + n))
    bus = MemoryBus()
    await bus.declare_queue(names.DOWNLOAD)
    await bus.declare_queue(names.DOWNLOAD_RESULTS)
    actor = DownloaderActor(bus, DownloaderSettings(inline_max=inline_max))
    await actor.start()
    offline = tmp_path / "offline"
    try:
        await bus.publish(names.DOWNLOAD, batch(server, offline, [
            FileSpec(f"sub/w{n}.txt", f"sub/w{n}.txt", size=5000 + n) for n in range(10)]))
        result = await next_result(bus)
    finally:
        await actor.stop()
        await bus.close()
    assert all(o.ok for o in result.outcomes()) and len(result.outcomes()) == 10
    assert all((offline / "sub" / f"w{n}.txt").read_bytes() == bytes([n]) * (5000 + n) for n in range(10))


async def test_a_big_file_is_split_as_the_bank_says_and_a_bad_bandwidth_fails_its_files(served, tmp_path):
    server, tree = served
    (tree / "huge.bin").write_bytes(os.urandom(16 * 1024 * 1024))
    server.faults.rate = 4 * 1024 * 1024  # per connection, as public mirrors cap it
    bus = MemoryBus()
    await bus.declare_queue(names.DOWNLOAD)
    await bus.declare_queue(names.DOWNLOAD_RESULTS)
    actor = DownloaderActor(bus, DownloaderSettings(concurrency=2, grace=5, node_id="n1", bandwidth="off"))
    await actor.start()
    try:
        offline = tmp_path / "offline"
        await bus.publish(names.DOWNLOAD, request(server, offline, "huge.bin", size=16 * 1024 * 1024,
                                                  split_min_size=1024 * 1024, split_max=3))
        outcome = await only_outcome(bus)
        assert outcome.ok, outcome.error
        assert (offline / "huge.bin").read_bytes() == (tree / "huge.bin").read_bytes()
        assert 2 <= server.faults.peak_active  # several ranges at once

        await bus.publish(names.DOWNLOAD, request(server, offline, "sub/small.txt", bandwidth="lots"))
        outcome = await only_outcome(bus)
        assert not outcome.ok and outcome.error.startswith("download.bandwidth='lots': not a rate")
    finally:
        await actor.stop()
        await bus.close()


def test_a_node_with_an_unreadable_bandwidth_does_not_start():
    from biomaj.config.service import ServiceConfig
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="limits.bandwidth='10 fast'"):
        ServiceConfig.model_validate({"limits": {"bandwidth": "10 fast"}})
