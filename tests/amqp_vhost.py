"""A private RabbitMQ virtual host per test, so that no other node or test on the same broker
can send a message into it or take one out of it.

``rabbitmqctl`` creates the virtual host and grants the test's user on it; the deletion runs in
the background (each ``rabbitmqctl`` call starts an Erlang VM, ~0.6 s) and is waited for when the
test run exits.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from tests.conftest import IN_CI

_deletions: list[subprocess.Popen] = []


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def require_rabbitmqctl() -> None:
    """Skip (fail when CI=true) without ``rabbitmqctl``: private virtual hosts need it."""
    if shutil.which("rabbitmqctl"):
        return
    reason = "rabbitmqctl not found: the AMQP tests create a RabbitMQ virtual host per test"
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def private_vhost(base_url: str) -> Iterator[str]:
    """``base_url`` moved onto a new, empty virtual host, deleted afterwards."""
    require_rabbitmqctl()
    vhost = f"biomaj-test-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    parts = urlsplit(base_url)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, parts.username or "guest", ".*", ".*", ".*")
        yield urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
    finally:
        _deletions.append(subprocess.Popen(
            ["rabbitmqctl", "delete_vhost", vhost], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


@atexit.register
def _wait_for_deletions() -> None:
    while _deletions:
        _deletions.pop().wait(timeout=60)
