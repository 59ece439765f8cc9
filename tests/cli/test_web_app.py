"""The web actor's routes, in-process through aiohttp's own test client, over a real node."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from biomaj.config.service import config_from_mapping
from biomaj.node.serve import Node
from biomaj.web.app import create_app


@pytest.fixture
async def client(tmp_path):
    config = config_from_mapping({"root": str(tmp_path), "web": {"port": 0}}, None, environ={})
    node = Node(config, ["manager", "download"])  # no web role: the test client serves the app instead
    await node.start()
    async with TestClient(TestServer(create_app(node))) as test_client:
        yield test_client
    await node.stop()


async def test_healthz(client):
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"


async def test_readyz_checks_store_bus_state(client):
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 200, body
    assert set(body["checks"]) == {"store", "bus", "state"}


async def test_status_lists_this_node(client):
    body = await (await client.get("/api/v1/status")).json()
    assert body["nodes"][0]["roles"] == ["manager", "download"]
    assert body["nodes"][0]["actors"] == ["manager", "downloader"]
    assert body["backends"]["store"].startswith("sqlite ")


async def test_unknown_route_is_a_json_404(client):
    response = await client.get("/nope")
    assert response.status == 404
    assert (await response.json()) == {"error": "Not Found", "status": 404, "exit_code": 1}


async def test_write_methods_are_refused(client):
    response = await client.post("/api/v1/status", json={})
    assert response.status == 405
    assert (await response.json())["status"] == 405
