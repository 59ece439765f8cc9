"""The release-driven back-off: BioMAJ 3's ladder of days, with its two bugs fixed."""

from __future__ import annotations

import pytest

from biomaj.scheduler.backoff import Backoff


def intervals(outcomes: str, start: Backoff = Backoff(), delay: int = 0) -> list[int]:
    """The interval (days) after each check; outcomes: n(ew), s(ame), f(ailed)."""
    word = {"n": "new", "s": "same", "f": "failed"}
    found, state = [], start
    for outcome in outcomes:
        state = state.after(word[outcome], delay)
        found.append(state.check_in)
    return found


def test_an_idle_bank_climbs_the_ladder_as_in_biomaj3():
    assert intervals("sssssss") == [1, 1, 7, 14, 30, 90, 90]


def test_a_new_release_resets_the_count_and_keeps_the_interval():
    # after 4 unchanged checks the interval is 14 days; a new release keeps it (BioMAJ 3 multiplied it)
    assert intervals("ssssn") == [1, 1, 7, 14, 14]
    assert intervals("ssssns") == [1, 1, 7, 14, 14, 14]  # three unchanged again before climbing
    assert intervals("ssssnsss") == [1, 1, 7, 14, 14, 14, 14, 30]


def test_new_releases_in_a_row_bring_the_interval_down():
    assert intervals("nnnn", Backoff(90, 0)) == [30, 14, 7, 1]
    assert intervals("nn", Backoff(1, 0)) == [1, 1]


def test_schedule_delay_is_a_floor_and_off_ladder_values_climb_to_the_next_step():
    assert intervals("sssss", delay=3) == [3, 3, 7, 14, 30]  # BioMAJ 3 jumped from 3 to 90
    assert intervals("nn", Backoff(14, 0), delay=10) == [10, 10]
    assert intervals("s", delay=120) == [120]


def test_a_failed_check_is_retried_at_the_same_interval_and_is_not_counted():
    assert intervals("ssfffs") == [1, 1, 1, 1, 1, 7]


def test_an_unknown_outcome_is_a_bug():
    with pytest.raises(ValueError):
        Backoff().after("maybe")
