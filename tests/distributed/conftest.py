"""Fixtures of the cluster tests: a RabbitMQ virtual host and a Redis prefix per test.

These tests need RabbitMQ (with ``rabbitmqctl`` on this host, to create virtual hosts) and
Redis: on a laptop without them they skip; with CI=true they fail (see tests/conftest.py).
"""

from __future__ import annotations

import uuid

import pytest

from biomaj.state import open_state
from tests.amqp_vhost import private_vhost
from tests.bus.conftest import AMQP_DEFAULT_URL, AMQP_URL_VARIABLE
from tests.distributed.cluster import Cluster
from tests.state.conftest import REDIS_DEFAULT_URL, REDIS_URL_VARIABLE

pytestmark = pytest.mark.service


@pytest.fixture
def vhost_url(service_url):
    """An AMQP URL on a new, empty virtual host, deleted after the test."""
    with private_vhost(service_url(AMQP_URL_VARIABLE, AMQP_DEFAULT_URL, "RabbitMQ")) as url:
        yield url


@pytest.fixture
async def cluster(tmp_path, vhost_url, service_url):
    """A biomaj installation whose nodes the test starts; every node is stopped afterwards."""
    redis_url = service_url(REDIS_URL_VARIABLE, REDIS_DEFAULT_URL, "Redis")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    installation = Cluster(tmp_path / "biomaj", vhost_url, redis_url, prefix)
    try:
        yield installation
    finally:
        await installation.stop()
        state = open_state(redis_url, prefix=f"{prefix}:")
        try:
            await state.purge()
        finally:
            await state.close()
