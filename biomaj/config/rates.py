"""Sizes, rates, rate timetables and allowances as people write them: ``64M``, ``1.5G``, ``512K``
(binary units, rclone's words), ``08:00,2M 20:00,off``, ``10`` or ``5%``."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from biomaj.errors import ConfigError

__all__ = ["Allowance", "Schedule", "format_rate", "parse_rate", "parse_size"]

_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_ENTRY = re.compile(r"^(\d{1,2}):(\d{2}),(.+)$")
_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt])?(?:i?b)?(?:/s)?\s*$", re.IGNORECASE)


def parse_size(text: str, *, what: str, unit: str = "b") -> int:
    """Bytes in ``64M``, ``1.5G``, ``4096`` (``unit``: the unit of a bare number); ConfigError
    naming ``what`` otherwise."""
    found = _AMOUNT.match(text)
    if not found:
        raise ConfigError(f"{what}={text!r}: not a size (e.g. 512K, 64M, 1.5G)")
    return int(float(found[1]) * _UNITS[(found[2] or unit).lower()])


def parse_rate(text: str, *, what: str = "bandwidth") -> int | None:
    """Bytes per second in ``10M``, ``512K``, ``100`` (KiB/s, as rclone), or None for ``off``/``0``."""
    word = text.strip().lower()
    if word in ("off", "0", ""):
        return None
    if not _AMOUNT.match(word):
        raise ConfigError(f"{what}={text!r}: not a rate (e.g. 512K, 10M, 1.5G, off)")
    return parse_size(word, what=what, unit="k") or None


def format_rate(rate: int | None) -> str:
    """``10 MiB/s``, ``512 KiB/s`` or ``off``."""
    if rate is None:
        return "off"
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if rate >= size:
            return f"{rate / size:.3g} {unit}/s"
    return f"{rate} B/s"


@dataclass(frozen=True)
class Schedule:
    """A rate, or a timetable of rates by local time of day."""

    entries: tuple[tuple[int, int | None], ...]  # (minute of the day, rate), sorted

    @classmethod
    def parse(cls, text: str, *, what: str = "bandwidth") -> Schedule:
        """``10M``, ``off`` or ``HH:MM,RATE HH:MM,RATE ...``; ConfigError on anything else."""
        words = text.split()
        if len(words) == 1 and "," not in words[0] and ":" not in words[0]:
            return cls(((0, parse_rate(words[0], what=what)),))
        entries = []
        for word in words:
            found = _ENTRY.match(word)
            if not found or int(found[1]) > 23 or int(found[2]) > 59:
                raise ConfigError(f"{what}={text!r}: {word!r} is not HH:MM,RATE (e.g. 08:00,2M 20:00,off)")
            entries.append((int(found[1]) * 60 + int(found[2]), parse_rate(found[3], what=what)))
        if not entries:
            raise ConfigError(f"{what}={text!r}: empty")
        return cls(tuple(sorted(entries)))

    def rate_at(self, moment: datetime.datetime) -> int | None:
        """The rate in force at ``moment`` (local time)."""
        minute = moment.hour * 60 + moment.minute
        rate = self.entries[-1][1]  # before the first entry: the day before's last one
        for start, value in self.entries:
            if start <= minute:
                rate = value
        return rate

    def describe(self) -> str:
        if len(self.entries) == 1 and self.entries[0][0] == 0:
            return format_rate(self.entries[0][1])
        return " ".join(f"{m // 60:02d}:{m % 60:02d},{format_rate(r)}" for m, r in self.entries)


_ALLOWANCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%)?\s*$")


@dataclass(frozen=True)
class Allowance:
    """A limit written as a count (``10``) or a percentage (``5%``) of some total."""

    text: str
    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str, *, what: str) -> Allowance:
        """``10`` or ``5%`` (``0.5%`` too); ConfigError naming ``what`` otherwise."""
        found = _ALLOWANCE.match(text)
        if not found or (not found[2] and "." in found[1]):
            raise ConfigError(f"{what}={text!r}: expected a count (e.g. 10) or a percentage (e.g. 5%)")
        if found[2]:
            percent = float(found[1])
            if percent > 100:
                raise ConfigError(f"{what}={text!r}: a percentage is at most 100%")
            return cls(text.strip(), percent=percent)
        return cls(text.strip(), count=int(found[1]))

    def of(self, total: int) -> int:
        """The limit for ``total`` items (a percentage rounded down: 5% of 10 files is 0)."""
        if self.count is not None:
            return self.count
        return int(total * (self.percent or 0.0) / 100)
