"""Cron expressions: parse one, find when it runs next and when it last ran.

Library choice: `cronsim <https://pypi.org/project/cronsim/>`_, not croniter. cronsim is small,
pure Python with no dependency, released regularly, and written to match Debian's cron (day of
month *or* day of week when both are restricted, cron's handling of DST changes), which is the
cron BioMAJ 3's biomaj-cron fed its crontab lines to. croniter, the usual choice, was declared
abandoned by its author at the end of 2024 (its PyPI page still said "do not use" in 2026, after
pallets-eco took it over), and pulls in python-dateutil and pytz. Only this module imports the
library, so a change of mind costs one file.

Only 5-field expressions (``minute hour day-of-month month day-of-week``) are accepted, as in a
crontab: cronsim's 6-field form (seconds first) is refused. Names (``MON``, ``JAN``), ranges,
lists and steps work as in crontab(5); cronsim's extensions ``L``, ``LW``, ``MON#2`` and ``5L``
are accepted too.

Times are epoch seconds. Expressions are read in the time zone given (an IANA name such as
``Europe/Paris``, from config.yml's ``scheduler.timezone``), or in the local time of this host
when none is given, as cron does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from biomaj.errors import BiomajError

__all__ = ["Cron", "CronError", "time_zone"]


class CronError(BiomajError):
    """A cron expression or a time zone that cannot be used; the message says why."""

    exit_code = 2


@lru_cache(maxsize=16)
def time_zone(name: str | None) -> tzinfo | None:
    """The zone named ``name`` (IANA), or None (this host's local time) for an empty name."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name!r}; expected an IANA name such as Europe/Paris or UTC") from None


def _datetime(ts: float, zone: tzinfo | None) -> datetime:
    return datetime.fromtimestamp(ts, zone) if zone is not None else datetime.fromtimestamp(ts)


@dataclass(frozen=True)
class Cron:
    """A validated 5-field cron expression; build it with :meth:`parse`."""

    expr: str

    @classmethod
    def parse(cls, expr: str) -> Cron:
        """The expression, normalised (single spaces), or CronError saying what is wrong."""
        if not isinstance(expr, str):
            raise CronError(f"a cron expression is a string of 5 fields, got {type(expr).__name__}")
        fields = expr.split()
        if len(fields) != 5:
            raise CronError(f"cron expression {expr[:100]!r}: expected 5 fields (minute hour day-of-month month "
                            f"day-of-week), e.g. '0 3 * * *' for 03:00 every day; got {len(fields)}")
        cron = cls(" ".join(fields))
        try:
            CronSim(cron.expr, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise CronError(f"cron expression {cron.expr!r}: {str(exc).lower() or 'not valid'}") from None
        except (ValueError, IndexError, KeyError):  # cronsim validates most, not every odd input
            raise CronError(f"cron expression {cron.expr!r}: not valid") from None
        if cron.next_after(datetime(2000, 1, 1).timestamp()) is None:
            raise CronError(f"cron expression {cron.expr!r}: never runs")
        return cron

    def next_after(self, ts: float, zone: tzinfo | None = None) -> float | None:
        """The first run strictly after ``ts``; None if there is none within 50 years."""
        try:
            return next(CronSim(self.expr, _datetime(ts, zone))).timestamp()
        except StopIteration:
            return None

    def last_at_or_before(self, ts: float, zone: tzinfo | None = None) -> float | None:
        """The latest run at or before ``ts``; None if there is none within 50 years."""
        # whole seconds: cronsim would take a fraction for a tick of its own, and round up
        start = _datetime(math.floor(ts), zone) + timedelta(seconds=1)
        try:
            return next(CronSim(self.expr, start, reverse=True)).timestamp()
        except StopIteration:
            return None

    def runs_between(self, after: float, until: float, zone: tzinfo | None = None, limit: int = 1000) -> int:
        """How many runs fall in ``(after, until]``, counting at most ``limit``."""
        count = 0
        it = CronSim(self.expr, _datetime(after, zone))
        while count < limit:
            try:
                if next(it).timestamp() > until:
                    break
            except StopIteration:
                break
            count += 1
        return count
