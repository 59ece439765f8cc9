"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
#: Real BioMAJ 3 bank files and upstream test fixtures, beside the project (never copied in).
FIXTURES = PROJECT.parent / "shared" / "biomaj3-fixtures"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"BioMAJ 3 fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture
def biomaj_root(tmp_path: Path) -> Path:
    """A fresh `biomaj init` root on a free web port."""
    from biomaj.config.scaffold import init_root

    root = tmp_path / "root"
    init_root(root, web_port=free_port())
    return root


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(name="free_port")
def free_port_fixture():
    return free_port


@pytest.fixture(scope="session")
def biomaj_cmd() -> list[str]:
    """The installed console script, run as a user would."""
    script = Path(sys.executable).with_name("biomaj")
    return [str(script)] if script.exists() else [sys.executable, "-m", "biomaj"]


def _port_answers(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=1):
            return True
    except OSError:
        return False


def service_url(variable: str, default: str, service: str) -> str:
    """URL of a real service: $variable, else `default` when it answers on loopback.

    Without it the test skips on a laptop, and fails when CI=true (CI must run service tests).
    """
    url = os.environ.get(variable) or default
    if url and _port_answers(url):
        return url
    reason = f"{service} not reachable at {url or '(no URL)'}: start it or set {variable}"
    if IN_CI:
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)


@pytest.fixture(name="service_url", scope="session")
def service_url_fixture():
    """`service_url(variable, default, service)`: see :func:`service_url`."""
    return service_url


@pytest.fixture
async def site(tmp_path, fixtures_dir):
    """A BioMAJ 3 test installation (tests/workflow/harness.py) with its actors running."""
    from tests.workflow.harness import Site

    installation = Site(tmp_path / "biomaj", fixtures_dir)
    await installation.open()
    try:
        yield installation
    finally:
        await installation.close()
