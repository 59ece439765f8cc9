"""The downloader actor on the real in-process bus and state, against a real HTTP server."""

from __future__ import annotations

import asyncio
import os

import pytest

from biomaj.actors.downloader import DownloaderActor, DownloaderSettings
from biomaj.bus import MemoryBus, names
from biomaj.bus.messages import CancelJob, DownloadRequest, DownloadResult, JobEvent
from biomaj.download.engine import PART_SUFFIX
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


def request(server, offline, path, save_as=None, **extra) -> DownloadRequest:
    return DownloadRequest(
        job_id="job1", bank="demo", session_id="s1", remote=to_message(server.config), path=path,
        offline_dir=str(offline), save_as=save_as or path, **extra,
    )


async def next_result(bus) -> DownloadResult:
    async with asyncio.timeout(20):
        async for delivery in bus.consume(names.DOWNLOAD_RESULTS):
            await delivery.ack()
            return delivery.message
    raise AssertionError("no result")


async def test_downloads_a_file_reports_and_acks(served, rig, tmp_path):
    server, tree = served
    bus, state, _actor, events = rig
    offline = tmp_path / "offline"
    req = request(server, offline, "sub/small.txt", size=600, digest="md5")
    await bus.publish(names.DOWNLOAD, req)
    result = await next_result(bus)
    await bus.join(names.DOWNLOAD, timeout=10)
    assert result.ok and result.request_id == req.id and result.node_id == "n1"
    assert result.size == 600 and result.transferred == 600
    import hashlib

    assert result.digest == hashlib.md5(b"hello\n" * 100).hexdigest()
    assert (offline / "sub" / "small.txt").read_bytes() == b"hello\n" * 100
    async with asyncio.timeout(5):
        event = await anext(aiter(events))
    assert isinstance(event, JobEvent) and event.state == "done" and event.progress["file"] == "sub/small.txt"
    async with asyncio.timeout(5):  # byte counters reach the state every PROGRESS_INTERVAL
        while (await state.get_progress("job1")).get("bytes") != 600:
            await asyncio.sleep(0.05)


async def test_a_missing_file_is_a_failed_result_not_a_redelivery(served, rig, tmp_path):
    server, _tree = served
    bus, _state, actor, _events = rig
    await bus.publish(names.DOWNLOAD, request(server, tmp_path / "offline", "nope.txt"))
    result = await next_result(bus)
    await bus.join(names.DOWNLOAD, timeout=10)
    assert not result.ok and not result.retryable
    assert "nope.txt" in result.error
    assert await bus.dead_letters(names.DOWNLOAD) == []


async def test_an_unsafe_save_as_is_refused(served, rig, tmp_path):
    server, _tree = served
    bus, *_ = rig
    await bus.publish(names.DOWNLOAD, request(server, tmp_path / "offline", "sub/small.txt", save_as="../../evil"))
    result = await next_result(bus)
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
    result = await next_result(bus)
    assert not result.ok and result.error == "cancelled"
    assert not (offline / "big.bin").exists()


async def test_a_cancelled_job_is_not_started(served, rig, tmp_path):
    server, _tree = served
    bus, state, *_ = rig
    await state.set_cancel("job1")
    await bus.publish(names.DOWNLOAD, request(server, tmp_path / "offline", "sub/small.txt"))
    result = await next_result(bus)
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
        result = await next_result(bus)
    finally:
        await second.stop()
        await bus.close()
    assert result.ok
    assert result.transferred < BIG  # resumed from the part file the first one left
    assert (offline / "big.bin").stat().st_size == BIG
