"""Fixtures of the cluster tests: a RabbitMQ virtual host and a Redis prefix per test.

These tests need RabbitMQ (with ``rabbitmqctl`` on this host, to create virtual hosts) and
Redis: on a laptop without them they skip; with CI=true they fail (see tests/conftest.py).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from biomaj.state import open_state
from tests.bus.conftest import AMQP_DEFAULT_URL, AMQP_URL_VARIABLE
from tests.conftest import IN_CI
from tests.distributed.cluster import Cluster
from tests.state.conftest import REDIS_DEFAULT_URL, REDIS_URL_VARIABLE

pytestmark = pytest.mark.service


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def vhost_url(service_url):
    """An AMQP URL on a new, empty virtual host, deleted after the test."""
    base = service_url(AMQP_URL_VARIABLE, AMQP_DEFAULT_URL, "RabbitMQ")
    if not shutil.which("rabbitmqctl"):
        reason = "rabbitmqctl not found: the cluster tests create a RabbitMQ virtual host per test"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    vhost = f"biomaj-test-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    parts = urlsplit(base)
    _rabbitmqctl("set_permissions", "-p", vhost, parts.username or "guest", ".*", ".*", ".*")
    try:
        yield urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
    finally:
        _rabbitmqctl("delete_vhost", vhost)


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
