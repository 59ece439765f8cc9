"""State fixtures: every test in tests/state that takes ``state`` runs on each implementation.

The memory state always runs. Redis joins ``STATES`` with the distributed-mode issue, as
``pytest.param("redis", marks=pytest.mark.service)``: skipped on a laptop without Redis, a
failure when CI=true. Both take the injected ``clock``, so TTL tests never sleep.
"""

from __future__ import annotations


import pytest

from biomaj.state import MemoryState, State, open_state

STATES = ["memory"]  # later: pytest.param("redis", marks=pytest.mark.service)


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


@pytest.fixture(params=STATES)
async def state(request: pytest.FixtureRequest, clock: FakeClock) -> State:
    if request.param == "memory":
        instance: State = MemoryState(clock=clock)
    elif request.param == "redis":
        instance = open_state(request.getfixturevalue("service_url")("BIOMAJ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15", "Redis"), clock=clock)
    else:  # pragma: no cover
        raise ValueError(request.param)
    yield instance
    await instance.close()
