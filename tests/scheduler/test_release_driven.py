"""The release-driven mode (schedule.auto), with an injected clock and the manager's outcomes
written by the test: a release check at most daily with BioMAJ 3's back-off, an update only when
the remote release is not the one in production, one check at a time from any number of schedulers.
The same with the real manager on the example bank: tests/scheduler/test_end_to_end.py."""

from __future__ import annotations

import asyncio

from biomaj.scheduler.backoff import DAY
from biomaj.scheduler.schedules import view
from biomaj.storage import open_store
from biomaj.storage.base import JOB_FAILED

NEW = {"details": {"remoterelease": "2", "new": True}}
SAME = {"details": {"remoterelease": "2", "new": False}}


def auto(site, *lines: str) -> None:
    path = site.root / "conf" / "example.properties"
    path.write_text(path.read_text() + "\n" + "\n".join(lines) + "\n")


async def test_a_new_release_is_updated_and_an_unchanged_one_is_not(site):
    auto(site, "schedule.auto=1")
    scheduler = site.scheduler(run_as="robot")
    t0 = site.clock()
    [check] = await scheduler.run_pending()  # the first check at once
    job = await site.store.get_job(check)
    assert (job["kind"], job["bank"], job["user"]) == ("release-check", "example", "robot")
    assert await scheduler.run_pending() == []  # one check at a time
    await site.settle(NEW)
    [update] = await scheduler.run_pending()
    job = await site.store.get_job(update)
    assert (job["kind"], job["bank"], job["user"]) == ("update", "example", "robot")
    doc = await site.store.get_schedule("auto:example")
    assert (doc["check_in"], doc["attempts"], doc["next_run"], doc["last_release"]) == (1, 0, t0 + DAY, "2")
    assert "remote release 2: new: update queued as job" in doc["last_result"]
    await site.settle()
    assert await scheduler.run_pending() == []  # the next check is tomorrow
    site.clock.set(t0 + DAY)
    [check] = await scheduler.run_pending()
    await site.settle(SAME)
    assert await scheduler.run_pending() == []  # nothing new: no update
    doc = await site.store.get_schedule("auto:example")
    assert (doc["check_in"], doc["attempts"]) == (1, 1) and "already in production" in doc["last_result"]
    assert [j["kind"] for j in await site.jobs()] == ["release-check", "update", "release-check"]


async def test_the_checks_back_off_while_nothing_changes(site):
    auto(site, "schedule.auto=1")
    scheduler = site.scheduler()
    gaps, last = [], None
    for _ in range(7):
        assert len(await scheduler.run_pending()) == 1
        await site.settle(SAME)
        await scheduler.run_pending()
        doc = await site.store.get_schedule("auto:example")
        if last is not None:
            gaps.append(round((site.clock() - last) / DAY))
        last = site.clock()
        site.clock.set(doc["next_run"])
    assert gaps == [1, 1, 7, 14, 30, 90]
    assert [j["kind"] for j in await site.jobs()] == ["release-check"] * 7


async def test_schedule_delay_is_the_least_interval(site):
    auto(site, "schedule.auto=true", "schedule.delay=3")
    scheduler = site.scheduler()
    await scheduler.run_pending()
    await site.settle(SAME)
    await scheduler.run_pending()
    doc = await site.store.get_schedule("auto:example")
    assert (doc["check_in"], doc["next_run"] - site.clock()) == (3, 3 * DAY)


async def test_a_failed_check_is_retried_at_the_same_interval(site):
    auto(site, "schedule.auto=1")
    scheduler = site.scheduler()
    await scheduler.run_pending()
    await site.settle(state=JOB_FAILED)
    assert await scheduler.run_pending() == []  # no update after a failed check
    doc = await site.store.get_schedule("auto:example")
    assert (doc["check_in"], doc["attempts"], doc["next_run"]) == (1, 0, site.clock() + DAY)
    assert doc["last_result"] == "release check failed: it failed"


async def test_no_check_while_a_job_works_on_the_bank(site):
    from biomaj.jobs import submit_job
    from biomaj.bus.memory import MemoryBus

    auto(site, "schedule.auto=1")
    await submit_job(site.store, MemoryBus(), "update", "example", {}, "alice")
    scheduler = site.scheduler()
    assert await scheduler.run_pending() == []
    await site.settle()
    assert len(await scheduler.run_pending()) == 1


async def test_the_entry_follows_schedule_auto_and_shows_its_next_check(site):
    scheduler = site.scheduler()
    await scheduler.run_pending()
    assert await site.store.list_schedules() == []  # schedule.auto is off by default
    auto(site, "schedule.auto=1")
    await scheduler.run_pending()
    await site.settle(SAME)
    await scheduler.run_pending()
    record = view(await site.store.get_schedule("auto:example"), site.clock())
    assert record == {"name": "auto:example", "kind": "release", "cron": None, "banks": ["example"],
                      "user": "biomaj", "next_run": site.clock() + DAY, "last_run": record["last_run"],
                      "check_in": 1, "last_result": "remote release 2: already in production"}
    assert record["last_run"]
    path = site.root / "conf" / "example.properties"
    path.write_text(path.read_text().replace("schedule.auto=1", "schedule.auto=0"))
    await scheduler.run_pending()
    assert await site.store.get_schedule("auto:example") is None


async def test_two_schedulers_run_one_check_and_queue_one_update(site):
    auto(site, "schedule.auto=1")
    other = open_store(f"sqlite:///{site.root / 'db' / 'biomaj.sqlite'}", site.root)
    async with other:
        schedulers = [site.scheduler(), site.scheduler(other), site.scheduler(), site.scheduler(other)]
        for outcome in (None, NEW):  # the first check, then its outcome
            if outcome:
                await site.settle(outcome)
            fired = await asyncio.gather(*(s.run_pending() for s in schedulers))
            assert sum(len(ids) for ids in fired) == 1, fired
        fired = await asyncio.gather(*(s.run_pending() for s in schedulers))
        assert fired == [[]] * 4
    assert [j["kind"] for j in await site.jobs()] == ["release-check", "update"]
