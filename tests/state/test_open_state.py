"""open_state: the state.url setting."""

from __future__ import annotations

import pytest

from biomaj.errors import ConfigError
from biomaj.state import MemoryState, open_state


@pytest.mark.parametrize("url", [None, "", "memory://", "Memory://", "memory"])
def test_memory(url: str | None) -> None:
    assert isinstance(open_state(url), MemoryState)


def test_clock_is_passed_on() -> None:
    state = open_state("memory://", clock=lambda: 42.0)
    assert isinstance(state, MemoryState) and state.clock() == 42.0


def test_other_urls_are_refused_without_leaking_passwords() -> None:
    with pytest.raises(ConfigError) as info:
        open_state("mongodb://root:hunter2@db/biomaj")
    text = str(info.value)
    assert text.startswith("state.url:") and "memory://" in text and "redis://" in text
    assert "hunter2" not in text
