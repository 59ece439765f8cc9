"""Bandwidth limits: rclone's rate and timetable syntax, and the token bucket every transfer takes
its chunks from (a real clock and real transfers in tests/protocols; here the bucket's arithmetic
with an injected clock)."""

import asyncio
import datetime

import pytest

from biomaj.config.rates import Schedule, format_rate, parse_rate, parse_size
from biomaj.download.bandwidth import Limiter, pacer
from biomaj.errors import ConfigError


def test_rates_and_sizes_read_as_rclone_writes_them():
    assert parse_rate("10M") == 10 * 2**20
    assert parse_rate("512k") == 512 * 1024
    assert parse_rate("100") == 100 * 1024  # a bare number is KiB/s, as rclone's --bwlimit
    assert parse_rate("1.5G") == int(1.5 * 2**30)
    assert parse_rate("2MiB/s") == 2 * 2**20
    assert parse_rate("off") is None and parse_rate("0") is None
    assert parse_size("64M", what="x") == 64 * 2**20 and parse_size("4096", what="x") == 4096
    assert format_rate(10 * 2**20) == "10 MiB/s" and format_rate(None) == "off"


@pytest.mark.parametrize("bad", ["fast", "10X", "-1M", "08:00", "25:00,1M", "08:00,lots"])
def test_a_bad_value_is_refused_with_its_name(bad):
    with pytest.raises(ConfigError, match="download.bandwidth="):
        Schedule.parse(bad, what="download.bandwidth")


def test_a_timetable_gives_the_rate_of_the_time_of_day():
    table = Schedule.parse("08:00,2M 20:00,off 12:30,512K")
    at = lambda h, m: table.rate_at(datetime.datetime(2026, 12, 7, h, m))  # noqa: E731
    assert at(7, 59) is None  # before the first entry: the day before's last one (20:00, off)
    assert at(8, 0) == 2 * 2**20
    assert at(12, 30) == 512 * 1024
    assert at(19, 59) == 512 * 1024
    assert at(20, 0) is None
    assert table.describe() == "08:00,2 MiB/s 12:30,512 KiB/s 20:00,off"
    assert Schedule.parse("10M").describe() == "10 MiB/s"


async def test_the_bucket_lets_the_rate_through_and_makes_the_rest_wait(monkeypatch):
    now = [0.0]
    slept = []

    async def fake_sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    limiter = Limiter(Schedule.parse("1M"), clock=lambda: now[0])
    for _ in range(40):  # 10 MiB in 256 KiB chunks, at once
        await limiter.take(256 * 1024)
    assert now[0] == pytest.approx(10.0, rel=0.03)  # 10 MiB at 1 MiB/s, less the first burst


async def test_no_limit_costs_nothing():
    assert pacer(None, None) is None
    limiter = Limiter(Schedule.parse("off"))
    await asyncio.wait_for(limiter.take(10**12), 0.1)
