"""The release-driven mode's back-off: how many days until a bank's next release check.

BioMAJ 3's biomaj-release (``bin/biomaj_release.py``, ``ReleaseService.get_next_check_in`` and
``get_previous_check_in``) checks each ``schedule.auto`` bank at most once a day and spaces the
checks out while the remote release stays the same: the interval climbs the ladder
1 → 7 → 14 → 30 → 90 days once three checks in a row found nothing new, then one step per
further unchanged check, so an idle bank is checked after 1, 1, 7, 14, 30, 90, 90 ... days. A new
release found at the very next check brings the interval one step down; ``schedule.delay`` (days)
is a floor under every interval.

Kept on purpose, fixed on purpose (reference 2.8):

* An interval off the ladder (``schedule.delay=3``) climbs to the next step (7); BioMAJ 3 jumped
  to 90 from any value it did not know.
* A new release found after unchanged checks keeps the current interval; BioMAJ 3 multiplied it by
  the number of unchanged checks (``check_in * attempts``), which could reach years.
* A check that failed (remote unreachable, bank locked) is retried after the current interval and
  does not count as "unchanged"; BioMAJ 3 counted it, so an outage pushed the bank to 90 days.
* The mean update duration from InfluxDB that BioMAJ 3 could add to the floor is not used.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The intervals, in days, that the back-off climbs.
LADDER = (1, 7, 14, 30, 90)
#: Unchanged checks in a row before the interval starts to grow.
PATIENCE = 3
DAY = 86400.0


@dataclass(frozen=True)
class Backoff:
    """Where a bank stands: the interval in days and the unchanged checks in a row."""

    check_in: int = 1
    attempts: int = 0

    def after(self, outcome: str, delay: int = 0) -> Backoff:
        """The state after a check whose ``outcome`` is ``new`` (a release to update to),
        ``same`` (nothing new) or ``failed``; ``delay`` is ``schedule.delay`` in days."""
        floor = max(1, delay)
        current = max(self.check_in, floor)
        if outcome == "failed":
            return Backoff(current, self.attempts)
        if outcome == "same":
            attempts = self.attempts + 1
            if attempts < PATIENCE:
                return Backoff(current, attempts)
            return Backoff(max(floor, _step_up(current)), attempts)
        if outcome == "new":
            if self.attempts == 0:  # two new releases in a row: check more often
                return Backoff(max(floor, _step_down(current)), 0)
            return Backoff(current, 0)
        raise ValueError(f"check outcome {outcome!r}: expected new, same or failed")


def _step_up(days: int) -> int:
    return next((step for step in LADDER if step > days), LADDER[-1])


def _step_down(days: int) -> int:
    return next((step for step in reversed(LADDER) if step < days), LADDER[0])
