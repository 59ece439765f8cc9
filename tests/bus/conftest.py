"""Bus fixtures: every test in tests/bus that takes ``bus`` runs on each transport.

The in-memory bus always runs. The RabbitMQ bus joins ``BUSES`` with the distributed-mode issue,
as ``pytest.param("amqp", marks=pytest.mark.service)``: it skips on a laptop without RabbitMQ
and fails when CI=true, so CI can never silently test less.
"""

from __future__ import annotations

import uuid

import pytest

from biomaj.bus import Bus, MemoryBus, open_bus

BUSES = ["memory"]  # later: pytest.param("amqp", marks=pytest.mark.service)


@pytest.fixture(params=BUSES)
async def bus(request: pytest.FixtureRequest) -> Bus:
    if request.param == "memory":
        instance: Bus = MemoryBus()
    elif request.param == "amqp":
        instance = open_bus(request.getfixturevalue("service_url")("BIOMAJ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ"))
    else:  # pragma: no cover
        raise ValueError(request.param)
    yield instance
    await instance.close()


@pytest.fixture
def queue_name() -> str:
    """A queue name no other test uses (a real broker is shared by every test)."""
    return f"biomaj.test.{uuid.uuid4().hex[:12]}"
