"""Bus fixtures: every test in tests/bus that takes ``bus`` runs on each transport.

The in-memory bus always runs. The RabbitMQ bus runs as ``pytest.param("amqp",
marks=pytest.mark.service)``: it skips on a laptop without RabbitMQ and fails when CI=true, so
CI can never silently test less. A real broker is shared by every test (and every biomaj node on
the machine): each AMQP test runs on a private virtual host (tests/amqp_vhost.py), created for
it and deleted afterwards, so no message of another node or test reaches it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from biomaj.bus import Bus, MemoryBus, open_bus
from tests.amqp_vhost import private_vhost

BUSES = ["memory", pytest.param("amqp", marks=pytest.mark.service)]

AMQP_URL_VARIABLE = "BIOMAJ_TEST_AMQP_URL"
AMQP_DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
def amqp_url(service_url) -> Iterator[str]:
    """The test RabbitMQ on a private virtual host: skips on a laptop without it, fails when CI=true."""
    with private_vhost(service_url(AMQP_URL_VARIABLE, AMQP_DEFAULT_URL, "RabbitMQ")) as url:
        yield url


@pytest.fixture(params=BUSES)
async def bus(request: pytest.FixtureRequest) -> Bus:
    if request.param == "memory":
        instance: Bus = MemoryBus()
    elif request.param == "amqp":
        instance = open_bus(request.getfixturevalue("amqp_url"))
    else:  # pragma: no cover
        raise ValueError(request.param)
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
def queue_name() -> str:
    """A queue name no other test of the run uses."""
    return f"biomaj.test.{uuid.uuid4().hex[:12]}"
