"""State fixtures: every test in tests/state that takes ``state`` runs on each implementation.

The memory state always runs. Redis (``pytest.mark.service``) is skipped on a laptop without
Redis and a failure when CI=true; it uses database 15 of ``$BIOMAJ_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/15``) and a random key prefix per test, whose keys are deleted after
the test. Both take the injected ``clock``, so TTL tests never sleep.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from biomaj.state import MemoryState, State, open_state

STATES = ["memory", pytest.param("redis", marks=pytest.mark.service)]

REDIS_URL_VARIABLE, REDIS_DEFAULT_URL = "BIOMAJ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"


def unique_prefix() -> str:
    """A key namespace no other test (or test run) shares."""
    return f"test-{uuid.uuid4().hex}:"


class FakeClock:
    """A wall clock that only moves when told to."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def redis_url(service_url: Callable[[str, str, str], str]) -> str:
    """URL of the test Redis (database 15); skips, or fails in CI, when it does not answer."""
    return service_url(REDIS_URL_VARIABLE, REDIS_DEFAULT_URL, "Redis")


@pytest.fixture(params=STATES)
async def state(request: pytest.FixtureRequest, clock: FakeClock) -> State:
    if request.param == "memory":
        instance: State = MemoryState(clock=clock)
    elif request.param == "redis":
        instance = open_state(request.getfixturevalue("redis_url"), clock=clock, prefix=unique_prefix())
    else:  # pragma: no cover
        raise ValueError(request.param)
    yield instance
    if request.param == "redis":
        await instance.purge()  # type: ignore[attr-defined]  # RedisState: this test's keys only
    await instance.close()
