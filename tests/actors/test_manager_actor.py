"""The manager actor: durable jobs, one workflow per bank, recovery after a crash, cancel."""

from __future__ import annotations

import asyncio

import pytest

from biomaj.actors.manager import ManagerActor, ManagerSettings
from biomaj.bus import names
from biomaj.bus.messages import JobEvent
from biomaj.jobs import request_cancel, submit_job
from biomaj.storage.base import DuplicateJob


def manager_for(site, **settings) -> ManagerActor:
    return ManagerActor(site.bus, ManagerSettings(concurrency=2, node_id="node-a", **settings), store=site.store,
                        state=site.state, global_properties=site.global_properties)


async def finished(site, job_id: str, timeout: float = 30) -> dict:
    """Wait (bounded) until the job's record is final; return it."""
    async def wait() -> dict:
        while True:
            job = await site.store.get_job(job_id)
            if job["state"] in ("done", "failed", "cancelled"):
                return job
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(wait(), timeout)


async def test_a_job_runs_and_its_events_tell_the_story(site):
    site.add_bank("local")
    manager = manager_for(site)
    await manager.start()
    events: list[JobEvent] = []
    subscription = await site.bus.subscribe(f"{names.JOB_TOPIC}.#")
    try:
        job_id = await submit_job(site.store, site.bus, "update", "local", {}, site.user)
        async with subscription:
            async for event in subscription:
                events.append(event)
                if event.kind == "update" and event.state in ("done", "failed"):
                    break
    finally:
        await manager.stop()
    job = await site.store.get_job(job_id)
    assert job["state"] == "done", job["error"]
    assert job["result"]["updated"] is True and job["result"]["release"]
    states = [e.state for e in events if e.kind == "update"]
    assert states[0] == "queued" and states[-1] == "done" and "running" in states
    steps = [e.step for e in events if e.kind == "update" and e.progress.get("task_state") == "running"]
    assert steps == ["init", "check", "depends", "preprocess", "release", "download", "postprocess", "publish", "over"]
    progress = [e.progress for e in events if "files_total" in e.progress]
    assert progress[-1]["files_done"] == progress[-1]["files_total"] == 3
    downloaded = [e.progress["files"] for e in events if e.kind == "download" and e.progress.get("batch")]
    assert sum(sum(counts.values()) for counts in downloaded) == 3  # the downloaders' events count every file


async def test_the_same_job_cannot_be_queued_twice(site):
    site.add_bank("local")
    first = await submit_job(site.store, site.bus, "update", "local", {}, site.user)
    with pytest.raises(DuplicateJob) as caught:
        await submit_job(site.store, site.bus, "update", "local", {}, site.user)
    assert caught.value.job_id == first


async def test_banks_run_in_parallel_and_each_job_once(site):
    for name in ("local", "sub2"):
        site.add_bank(name)
    manager = manager_for(site)
    await manager.start()
    try:
        ids = [await submit_job(site.store, site.bus, "update", name, {}, site.user) for name in ("local", "sub2")]
        ids.append(await submit_job(site.store, site.bus, "release-check", "local", {}, site.user))
        jobs = [await finished(site, job_id) for job_id in ids]
    finally:
        await manager.stop()
    assert [j["state"] for j in jobs] == ["done", "done", "done"]
    assert all(j["attempts"] == 1 for j in jobs)
    assert jobs[2]["result"]["details"]["new"] is False  # checked after the update of the same bank


async def test_a_restarted_manager_resumes_the_job_it_left_running(site):
    site.add_bank("local")
    job_id = await site.store.add_job({"kind": "update", "bank": "local", "options": {}, "user": site.user})
    claimed = await site.store.claim_job("node-a", job_id)  # the manager "died" with this job running
    assert claimed["state"] == "running"
    manager = manager_for(site)
    await manager.start()  # recover=True: requeue and republish
    try:
        job = await finished(site, job_id)
    finally:
        await manager.stop()
    assert job["state"] == "done" and job["attempts"] == 2


async def test_a_queued_job_cancelled_never_runs(site):
    site.add_bank("local")
    job_id = await submit_job(site.store, site.bus, "update", "local", {}, site.user)
    cancelled = await request_cancel(site.store, site.bus, site.state, job_id)
    assert cancelled["state"] == "cancelled"
    manager = manager_for(site)
    await manager.start()
    try:
        await site.bus.join(names.JOBS, timeout=10)
    finally:
        await manager.stop()
    assert (await site.store.get_job(job_id))["state"] == "cancelled"
    assert await site.store.get_bank("local") is None  # nothing ran


async def test_a_failing_job_is_recorded_with_its_reason(site):
    manager = manager_for(site)
    await manager.start()
    try:
        job_id = await submit_job(site.store, site.bus, "update", "nosuch", {}, site.user)
        job = await finished(site, job_id)
    finally:
        await manager.stop()
    assert job["state"] == "failed" and "nosuch" in job["error"]


async def test_a_job_unknown_to_its_store_is_dead_lettered_not_dropped(site):
    """Two installations sharing one RabbitMQ vhost: a manager gets a job of the other one."""
    from biomaj.bus.messages import JobRequest

    manager = manager_for(site)
    await manager.start()
    try:
        await site.bus.publish(names.JOBS, JobRequest(job_id="elsewhere", kind="update", bank="alu"))
        await asyncio.wait_for(site.bus.join(names.JOBS), 10)
    finally:
        await manager.stop()
    [letter] = await site.bus.dead_letters(names.JOBS)
    assert letter.message.job_id == "elsewhere"
    assert "is not in this manager's store" in letter.reason and "virtual host" in letter.reason


async def _cancels_of_one_running_update(site, cancel) -> list:
    """The CancelJob broadcasts seen while an update whose big file stalls is cancelled by
    ``cancel(manager, job_id)``, up to the job's end (cancelled)."""
    from biomaj.bus.messages import CancelJob
    from tests.servers import http_server
    from tests.servers.faults import Faults

    (site.remote / "test_big.bin").write_bytes(b"\0" * 700_000)
    faults = Faults(stall={"test_big.bin": 120.0})
    server = await http_server.start(site.remote, faults, protocol="http")
    # the fallback poll of the store and the flag once a minute: only the wake-up tells the manager
    manager = manager_for(site, cancel_check=60.0)
    await manager.start()
    seen = await site.bus.subscribe(names.CANCEL_TOPIC)
    try:
        site.add_bank("local", protocol="http", server=f"127.0.0.1:{server.config.port}", remote__dir="/",
                      remote__files="^test.*", local__files="^test.*")
        job_id = await submit_job(site.store, site.bus, "update", "local", {}, site.user)
        async with asyncio.timeout(20):
            while not faults.active:  # the big file is in flight
                await asyncio.sleep(0.02)
        await cancel(manager, job_id)
        job = await finished(site, job_id)
        assert job["state"] == "cancelled", job
        await site.bus.join(names.DOWNLOAD, timeout=10)
        cancels = []
        while True:
            try:
                cancels.append(await asyncio.wait_for(anext(seen), 0.2))
            except asyncio.TimeoutError:
                return [c for c in cancels if isinstance(c, CancelJob)]
    finally:
        await seen.close()
        await manager.stop()
        await server.close()


async def test_a_users_cancel_wakes_the_workers_up_once(site):
    """The state's flag is the truth, the CancelJob broadcast only a wake-up: the manager that
    stops the run does not broadcast the user's cancel a second time."""
    async def by_user(_manager, job_id):
        await request_cancel(site.store, site.bus, site.state, job_id)

    cancels = await _cancels_of_one_running_update(site, by_user)
    assert len(cancels) == 1 and cancels[0].bank == "local"
    assert not await site.state.is_cancelled(cancels[0].job_id)  # cleared at the job's end


async def test_a_run_stopped_by_its_manager_wakes_the_workers_up_once(site):
    """A run cancelled for the manager's own reasons (a lost lease, a cancel read from the store)
    sets the flag and broadcasts once, whatever the number of dispatchers waiting."""
    async def by_manager(manager, job_id):
        manager._running[job_id].cancelled.set()

    cancels = await _cancels_of_one_running_update(site, by_manager)
    assert len(cancels) == 1 and cancels[0].bank == "local"
