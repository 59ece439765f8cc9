"""The scheduler actor on cron schedules, with an injected clock: a due run fires an update of each
bank as the schedule's user, once, even from two schedulers; missed runs are skipped or caught up
once; an update already running is skipped, not an error."""

from __future__ import annotations

import asyncio
import logging

import pytest

from biomaj.storage import open_store
from tests.scheduler.conftest import utc


async def test_a_due_run_queues_an_update_of_each_bank_as_the_schedule_s_user(site):
    (site.root / "conf" / "other.properties").write_text(
        (site.root / "conf" / "example.properties").read_text().replace("dir.version=example", "dir.version=other")
        .replace("offline/example_tmp", "offline/other_tmp"))
    await site.add("nightly", "0 3 * * *", banks=("example", "other"), user="alice")
    scheduler = site.scheduler()
    assert await scheduler.run_pending() == []  # 02:00: nothing due yet
    site.clock.set(utc(2030, 1, 7, 3, 0, 4))
    queued = await scheduler.run_pending()
    jobs = await site.jobs()
    assert [(j["kind"], j["bank"], j["user"]) for j in jobs] == [("update", "example", "alice"), ("update", "other", "alice")]
    assert queued == [j["id"] for j in jobs]
    assert await scheduler.run_pending() == []  # the same run never fires twice
    doc = await site.store.get_schedule("nightly")
    assert doc["last_run"] == utc(2030, 1, 7, 3, 0) and doc["last_fired"] == site.clock()
    assert doc["last_jobs"] == {"example": jobs[0]["id"], "other": jobs[1]["id"]}
    await site.settle()
    site.clock.set(utc(2030, 1, 8, 3, 0, 9))
    assert len(await scheduler.run_pending()) == 2  # the next day


async def test_a_schedule_never_fires_a_run_older_than_itself(site):
    site.clock.set(utc(2030, 1, 7, 3, 0, 30))
    await site.add("nightly", "0 3 * * *")  # made 30 s after today's run
    assert await site.scheduler().run_pending() == []


async def test_an_update_already_queued_is_skipped_with_an_info_line(site, caplog):
    await site.add("often", "* * * * *")
    scheduler = site.scheduler()
    site.clock.set(utc(2030, 1, 7, 2, 1, 1))
    [first] = await scheduler.run_pending()
    site.clock.set(utc(2030, 1, 7, 2, 2, 1))
    with caplog.at_level(logging.INFO, logger="biomaj.actors.scheduler"):
        assert await scheduler.run_pending() == []  # the update is still queued
    [record] = [r for r in caplog.records if "not queued" in r.getMessage()]
    assert record.levelno == logging.INFO and first in record.getMessage()
    doc = await site.store.get_schedule("often")
    assert doc["last_jobs"] == {"example": None} and "already queued or running" in doc["last_result"]
    assert doc["last_run"] == utc(2030, 1, 7, 2, 2)


async def test_missed_runs_are_skipped_by_default(site, caplog):
    await site.add("nightly", "0 3 * * *")
    scheduler = site.scheduler()
    site.clock.set(utc(2030, 1, 7, 3, 0, 10))
    assert len(await scheduler.run_pending()) == 1
    await site.settle()
    site.clock.set(utc(2030, 1, 9, 5, 30))  # every scheduler was down for two nights
    with caplog.at_level(logging.WARNING, logger="biomaj.actors.scheduler"):
        assert await scheduler.run_pending() == []
    assert "missed" in caplog.text
    doc = await site.store.get_schedule("nightly")
    assert doc["last_run"] == utc(2030, 1, 9, 3, 0) and "missed" in doc["last_result"]
    site.clock.set(utc(2030, 1, 10, 3, 1))  # a minute late: on time (scheduler.missed_after)
    assert len(await scheduler.run_pending()) == 1


async def test_missed_runs_are_caught_up_once(site):
    await site.add("nightly", "0 3 * * *")
    scheduler = site.scheduler(missed="catch_up")
    site.clock.set(utc(2030, 1, 9, 5, 30))  # down since before the first run: two runs missed
    assert len(await scheduler.run_pending()) == 1
    await site.settle()
    site.clock.set(utc(2030, 1, 9, 5, 31))
    assert await scheduler.run_pending() == []  # once, not once per missed run
    assert (await site.store.get_schedule("nightly"))["last_run"] == utc(2030, 1, 9, 3, 0)


async def test_missed_after_sets_what_counts_as_late(site):
    await site.add("nightly", "0 3 * * *")
    site.clock.set(utc(2030, 1, 7, 3, 2))
    assert await site.scheduler(missed_after=60).run_pending() == []  # 2 minutes late: missed, skipped


async def test_two_schedulers_on_one_store_fire_each_run_once(site, tmp_path):
    await site.add("often", "* * * * *")
    other = open_store(f"sqlite:///{site.root / 'db' / 'biomaj.sqlite'}", site.root)  # a second node's store
    async with other:
        schedulers = [site.scheduler(), site.scheduler(other), site.scheduler(), site.scheduler(other)]
        for minute in range(1, 6):
            site.clock.set(utc(2030, 1, 7, 2, minute, 3))
            fired = await asyncio.gather(*(s.run_pending() for s in schedulers))
            assert sum(len(ids) for ids in fired) == 1, fired
            await site.settle()
    assert len(await site.jobs("update")) == 5


async def test_a_deleted_schedule_fires_no_more(site):
    await site.add("nightly", "0 3 * * *")
    site.clock.set(utc(2030, 1, 7, 3, 0, 5))
    scheduler = site.scheduler()
    assert len(await scheduler.run_pending()) == 1
    await site.store.delete_schedule("nightly")
    await site.settle()
    site.clock.set(utc(2030, 1, 8, 3, 0, 5))
    assert await scheduler.run_pending() == []


@pytest.mark.parametrize("bad", ["0 3 * *", "99 * * * *"])
async def test_a_stored_expression_that_does_not_parse_is_logged_once(site, caplog, bad):
    await site.store.put_schedule("broken", {"kind": "cron", "cron": bad, "banks": ["example"], "user": "alice",
                                             "created": site.clock(), "last_run": None})
    scheduler = site.scheduler()
    with caplog.at_level(logging.ERROR, logger="biomaj.actors.scheduler"):
        await scheduler.run_pending()
        await scheduler.run_pending()
    assert len([r for r in caplog.records if "broken" in r.getMessage()]) == 1


async def test_a_run_never_fires_before_its_time(site):
    site.clock.set(utc(2030, 1, 7, 2, 0, 30))
    await site.add("often", "* * * * *")
    scheduler = site.scheduler()
    site.clock.set(utc(2030, 1, 7, 2, 0, 59) + 0.61)  # a tick 0.39 s before the next minute
    assert await scheduler.run_pending() == []
    site.clock.set(utc(2030, 1, 7, 2, 1, 0) + 0.2)
    assert len(await scheduler.run_pending()) == 1
    assert (await site.store.get_schedule("often"))["last_run"] == utc(2030, 1, 7, 2, 1)
