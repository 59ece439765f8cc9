"""The scheduler on real nodes of a `biomaj init` root: a bank scheduled every minute updates
itself (the real manager, downloader and processor run the job) as the schedule's user; the
release-driven mode updates the example bank when its remote release changes, and only then; two
scheduler nodes on one store and one state (memory, or Redis) fire each run once.

The scheduler's clock is moved instead of waiting: a minute ahead for the every-minute schedule,
days ahead for the release checks. Everything else runs for real."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from biomaj.actors.scheduler import SchedulerActor, SchedulerSettings
from biomaj.config.scaffold import init_root
from biomaj.config.service import load_config
from biomaj.node.serve import Node
from biomaj.scheduler.backoff import DAY
from biomaj.scheduler.schedules import add_schedule
from biomaj.storage.base import FINAL_JOB_STATES
from tests.scheduler.conftest import FakeClock, utc, wait_for
from tests.state.conftest import REDIS_DEFAULT_URL, REDIS_URL_VARIABLE

pytestmark = pytest.mark.timeout(180)


def new_root(tmp_path, name: str = "root"):
    root = tmp_path / name
    init_root(root, web_port=0)
    return root, load_config(root / "config.yml")


def actor(node: Node, name: str):
    [found] = [a for a in node.actors if a.name == name]
    return found


async def finished(store, job_id: str) -> dict:
    async def over():
        job = await store.get_job(job_id)
        return job if job and job["state"] in FINAL_JOB_STATES else None

    return await wait_for(over, timeout=90)


async def test_a_bank_scheduled_every_minute_updates_itself(tmp_path):
    root, config = new_root(tmp_path)
    config.settings.scheduler.tick = 0.2
    node = Node(config, ["manager", "download", "process", "scheduler"])
    await node.start()
    try:
        actor(node, "scheduler").clock = lambda: time.time() + 60  # the next minute is due at once
        await add_schedule(node.store, config.global_properties, name="every-minute", cron="* * * * *",
                           banks=["example"], user="alice", by="root")
        assert await node.store.list_jobs() == []  # nobody asks for anything from here on

        async def an_update():
            return [j for j in await node.store.list_jobs() if j["kind"] == "update"]

        first = (await wait_for(an_update, timeout=30))[-1]
        job = await finished(node.store, first["id"])
        assert (job["state"], job["user"], job["bank"]) == ("done", "alice", "example"), job
        assert job["result"]["updated"] and job["result"]["release"] == "1"
        bank = await node.store.get_bank("example")
        assert bank["properties"]["owner"] == "alice" and [p["release"] for p in bank["production"]] == ["1"]
        schedule = await node.store.get_schedule("every-minute")
        assert schedule["last_jobs"] == {"example": job["id"]} and schedule["last_fired"]
    finally:
        await node.stop()
    assert (root / "data" / "example" / "example_1").is_dir()


async def release_driven(config):
    """A node of manager, downloader and processor with a scheduler on a fake clock: (node, clock,
    step), ``step()`` a pass of the scheduler that returns the jobs it queued, once they are over."""
    node = Node(config, ["manager", "download", "process"])
    await node.start()
    clock = FakeClock(time.time())
    scheduler = SchedulerActor(node.bus, SchedulerSettings(), store=node.store,
                               global_properties=config.global_properties, clock=clock)

    async def step() -> list[dict]:
        return [await finished(node.store, job_id) for job_id in await scheduler.run_pending()]

    return node, clock, step


async def test_release_driven_updates_follow_the_remote_release(tmp_path):
    root, config = new_root(tmp_path)
    bank_file = root / "conf" / "example.properties"
    bank_file.write_text(bank_file.read_text() + "\nschedule.auto=1\n")
    node, clock, step = await release_driven(config)
    try:
        [check] = await step()
        assert (check["kind"], check["state"], check["user"]) == ("release-check", "done", "biomaj"), check
        assert check["result"]["details"] == {"remoterelease": "1", "production": None, "new": True}
        [update] = await step()  # never updated: release 1 is new
        assert (update["kind"], update["state"], update["result"]["release"]) == ("update", "done", "1"), update

        clock.set(clock() + DAY)
        [check] = await step()
        assert check["result"]["details"]["new"] is False
        assert await step() == []  # release 1 is in production: no update
        doc = await node.store.get_schedule("auto:example")
        assert (doc["attempts"], doc["last_release"]) == (1, "1")

        (root / "example-remote" / "release.txt").write_text("Release 2\n")
        assert await step() == []  # not before the next check
        clock.set(clock() + DAY)
        [check] = await step()
        assert check["result"]["details"] == {"remoterelease": "2", "production": "1", "new": True}
        [update] = await step()
        assert (update["kind"], update["state"], update["result"]["release"]) == ("update", "done", "2"), update
        kinds = [j["kind"] for j in sorted(await node.store.list_jobs(), key=lambda j: j["created"])]
        assert kinds == ["release-check", "update", "release-check", "release-check", "update"]
    finally:
        await node.stop()


@pytest.mark.parametrize("state", ["memory", pytest.param("redis", marks=pytest.mark.service)])
async def test_two_scheduler_nodes_fire_each_run_once(tmp_path, state, service_url):
    root, config = new_root(tmp_path)
    if state == "redis":
        config.settings.state.url = service_url(REDIS_URL_VARIABLE, REDIS_DEFAULT_URL, "Redis")
        config.settings.redis.prefix = f"test-{uuid.uuid4().hex}"
    config.settings.scheduler.tick = 60  # each node makes one pass at start; the test makes the others
    config.settings.scheduler.timezone = "UTC"
    nodes = [Node(config, ["scheduler"]), Node(config, ["scheduler"])]
    clock = FakeClock(utc(2030, 1, 7, 2, 0, 30))
    try:
        for node in nodes:
            await node.start()
            actor(node, "scheduler").clock = clock
        store = nodes[0].store
        await add_schedule(store, config.global_properties, name="often", cron="* * * * *", banks=["example"],
                           user="alice", by="root", now=clock())
        for minute in range(1, 4):
            clock.set(utc(2030, 1, 7, 2, minute, 1))
            fired = await asyncio.gather(*(actor(node, "scheduler").run_pending() for node in nodes))
            assert sorted(len(ids) for ids in fired) == [0, 1], fired
            for job in await store.list_jobs(state="queued", limit=None):  # as a manager would
                await store.claim_job("manager", job["id"])
                await store.finish_job(job["id"], "done")
        assert len(await store.list_jobs(limit=None)) == 3
    finally:
        for node in nodes:
            if state == "redis" and node.state is not None:
                await node.state.purge()
            await node.stop()


async def test_a_fix_published_under_the_same_release_is_checked_then_updated(tmp_path):
    """The example bank with a checksum manifest (MD5SUMS beside its files): the provider fixes a
    file without changing the release; the next release check sees its checksum changed under
    the same release, and the update it queues fetches it as release 1__1."""
    import hashlib

    root, config = new_root(tmp_path)
    source = root / "example-remote"

    def publish(fasta: bytes) -> None:
        (source / "example.fasta").write_bytes(fasta)
        sums = "".join(f"{hashlib.md5((source / n).read_bytes()).hexdigest()}  ./{n}\n"
                       for n in ("example.fasta", "example2.fasta.gz", "release.txt"))
        (source / "MD5SUMS").write_text(sums)

    publish((source / "example.fasta").read_bytes())
    bank_file = root / "conf" / "example.properties"
    bank_file.write_text(bank_file.read_text() + "\nschedule.auto=1\nremote.checksums=MD5SUMS\n")
    node, clock, step = await release_driven(config)
    try:
        await step()
        [update] = await step()
        assert (update["state"], update["result"]["release"]) == ("done", "1"), update
        clock.set(clock() + DAY)
        [check] = await step()
        assert check["result"]["details"] == {"remoterelease": "1", "production": "1", "new": False}
        assert await step() == []

        publish(b">seq1 fixed upstream\nACGT\n")
        clock.set(clock() + DAY)
        [check] = await step()
        assert check["result"]["details"] == {"remoterelease": "1", "production": "1", "new": True,
                                              "changed_under_same_release": {"count": 1, "files": ["example.fasta"]}}
        [update] = await step()
        assert (update["state"], update["result"]["release"]) == ("done", "1__1"), update
        doc = await node.store.get_schedule("auto:example")
        assert doc["last_result"].startswith("remote release 1: changed under the same release: update queued")
    finally:
        await node.stop()
    assert (root / "data" / "example" / "example_1__1" / "flat" / "example.fasta").read_bytes() == \
        b">seq1 fixed upstream\nACGT\n"
