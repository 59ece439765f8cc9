"""Bus fixtures: every test in tests/bus that takes ``bus`` runs on each transport.

The in-memory bus always runs. The RabbitMQ bus runs as ``pytest.param("amqp",
marks=pytest.mark.service)``: it skips on a laptop without RabbitMQ and fails when CI=true, so
CI can never silently test less. A real broker is shared by every test (and every engineer):
tests use unique queue names (``queue_name``) and the fixtures delete them afterwards.
"""

from __future__ import annotations

import contextlib
import uuid

import pytest

from biomaj.bus import Bus, MemoryBus, names, open_bus

BUSES = ["memory", pytest.param("amqp", marks=pytest.mark.service)]

AMQP_URL_VARIABLE = "BIOMAJ_TEST_AMQP_URL"
AMQP_DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
def amqp_url(service_url) -> str:
    """URL of the test RabbitMQ: skips on a laptop without it, fails when CI=true."""
    return service_url(AMQP_URL_VARIABLE, AMQP_DEFAULT_URL, "RabbitMQ")


@pytest.fixture(params=BUSES)
async def bus(request: pytest.FixtureRequest) -> Bus:
    if request.param == "memory":
        instance: Bus = MemoryBus()
    elif request.param == "amqp":
        url = request.getfixturevalue("amqp_url")
        queue = request.getfixturevalue("queue_name")  # the test's queue, if it uses one
        instance = open_bus(url)
    else:  # pragma: no cover
        raise ValueError(request.param)
    try:
        yield instance
    finally:
        await instance.close()
        if request.param == "amqp":
            await delete_queues(url, [queue])


@pytest.fixture
def queue_name() -> str:
    """A queue name no other test uses (a real broker is shared by every test)."""
    return f"biomaj.test.{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def amqp_queues(amqp_url: str) -> list[str]:
    """Work queues to delete from RabbitMQ after the test, with their dead-letter queues."""
    queues: list[str] = []
    yield queues
    if queues:
        await delete_queues(amqp_url, queues)


async def delete_queues(url: str, queues: list[str]) -> None:
    """Delete ``queues`` and their ``.dead`` queues (missing ones are fine)."""
    import aio_pika

    connection = await aio_pika.connect(url)
    try:
        for queue in queues:
            for name in (queue, names.dead_letter_queue(queue)):
                channel = await connection.channel()
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)
                with contextlib.suppress(Exception):
                    await channel.close()
    finally:
        await connection.close()
