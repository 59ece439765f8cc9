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


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "rediss://:pw@redis:6380/1"])
def test_redis_is_not_there_yet(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^state\.url: the Redis state store arrives with the distributed-mode issue"):
        open_state(url)


def test_other_urls_are_refused_without_leaking_passwords() -> None:
    with pytest.raises(ConfigError) as info:
        open_state("mongodb://root:hunter2@db/biomaj")
    text = str(info.value)
    assert text.startswith("state.url:") and "memory://" in text and "redis://" in text
    assert "hunter2" not in text
