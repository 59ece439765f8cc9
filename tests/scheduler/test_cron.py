"""Cron expressions: 5 fields as in a crontab, the next run, the last run, the runs between."""

from __future__ import annotations

import pytest

from biomaj.scheduler.cron import Cron, CronError, time_zone
from tests.scheduler.conftest import utc

UTC = time_zone("UTC")


def test_next_run_is_strictly_after():
    daily = Cron.parse("0 3 * * *")
    assert daily.next_after(utc(2030, 1, 7, 2, 0), UTC) == utc(2030, 1, 7, 3, 0)
    assert daily.next_after(utc(2030, 1, 7, 3, 0), UTC) == utc(2030, 1, 8, 3, 0)
    assert daily.next_after(utc(2030, 1, 7, 3, 0) + 0.5, UTC) == utc(2030, 1, 8, 3, 0)
    assert Cron.parse("* * * * *").next_after(utc(2030, 1, 7, 2, 0) + 59.9, UTC) == utc(2030, 1, 7, 2, 1)


def test_last_run_is_at_or_before():
    daily = Cron.parse("0 3 * * *")
    assert daily.last_at_or_before(utc(2030, 1, 7, 3, 0), UTC) == utc(2030, 1, 7, 3, 0)
    assert daily.last_at_or_before(utc(2030, 1, 7, 3, 0) + 0.25, UTC) == utc(2030, 1, 7, 3, 0)
    assert daily.last_at_or_before(utc(2030, 1, 7, 2, 59), UTC) == utc(2030, 1, 6, 3, 0)
    assert Cron.parse("*/15 * * * *").last_at_or_before(utc(2030, 1, 7, 2, 44, 59), UTC) == utc(2030, 1, 7, 2, 30)
    every_minute = Cron.parse("* * * * *")
    assert every_minute.last_at_or_before(utc(2030, 1, 7, 2, 0, 59) + 0.61, UTC) == utc(2030, 1, 7, 2, 0)  # not 2:01
    assert every_minute.last_at_or_before(utc(2030, 1, 7, 2, 1), UTC) == utc(2030, 1, 7, 2, 1)


def test_crontab_syntax():
    weekdays = Cron.parse("30 6 * * mon-fri")
    assert weekdays.next_after(utc(2030, 1, 11, 7, 0), UTC) == utc(2030, 1, 14, 6, 30)  # Friday -> Monday
    # day of month OR day of week when both are restricted, as cron does
    either = Cron.parse("0 0 1 * sun")
    assert either.next_after(utc(2030, 1, 1, 1, 0), UTC) == utc(2030, 1, 6, 0, 0)  # the first Sunday
    assert Cron.parse("0  3 *  * *").expr == "0 3 * * *"


def test_runs_between_counts_the_runs_in_the_window():
    hourly = Cron.parse("0 * * * *")
    assert hourly.runs_between(utc(2030, 1, 7, 0, 0), utc(2030, 1, 7, 5, 0), UTC) == 5
    assert hourly.runs_between(utc(2030, 1, 7, 0, 0), utc(2030, 1, 9, 0, 0), UTC, limit=10) == 10


def test_the_time_zone_is_the_one_configured():
    paris = time_zone("Europe/Paris")
    assert Cron.parse("0 3 * * *").next_after(utc(2030, 1, 7, 0, 0), paris) == utc(2030, 1, 7, 2, 0)  # UTC+1
    assert Cron.parse("0 3 * * *").next_after(utc(2030, 7, 7, 0, 0), paris) == utc(2030, 7, 7, 1, 0)  # UTC+2
    with pytest.raises(CronError, match="unknown time zone 'Mars/Olympus'"):
        time_zone("Mars/Olympus")


@pytest.mark.parametrize("expr, why", [
    ("0 3 * *", "expected 5 fields"),
    ("0 0 3 * * *", "expected 5 fields"),  # cronsim's seconds field: not a crontab
    ("", "expected 5 fields"),
    ("61 * * * *", "bad minute"),
    ("* 24 * * *", "bad hour"),
    ("0 0 30 2 *", "bad day-of-month"),
    ("0 0 * 13 *", "bad month"),
    ("0 0 * * 8", "bad day-of-week"),
    ("a b c d e", "bad minute"),
])
def test_bad_expressions_say_why(expr, why):
    with pytest.raises(CronError, match=why):
        Cron.parse(expr)


def test_a_non_string_is_refused():
    with pytest.raises(CronError, match="a string of 5 fields"):
        Cron.parse(["0", "3"])  # type: ignore[arg-type]
