"""A real biomaj node (every actor, in-process bus) on a `biomaj init` root, its web app served by
aiohttp's test server, and three users: an owner, a plain user and an admin. A bank with no owner
is the admins': ``api`` starts as an operator would, the admin giving the example bank to ``owner``;
``bare_api`` leaves it as `biomaj init` wrote it (no record, no owner)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient, TestServer

from biomaj.node.serve import Node
from biomaj.web.app import create_app
from tests.servers.biomaj_node import node_with_users


@dataclass
class Api:
    client: TestClient
    node: Node
    keys: dict[str, str]  # who -> API key ("anonymous" -> None)

    def headers(self, who: str) -> dict[str, str]:
        key = self.keys.get(who)
        return {"Authorization": f"APIKEY {key}"} if key else {}

    async def call(self, who: str, method: str, path: str, **kwargs):
        return await self.client.request(method, path, headers=self.headers(who), **kwargs)

    async def job_done(self, job_id: str, who: str = "admin", timeout: float = 60) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                job = await (await self.call(who, "GET", f"/api/v1/jobs/{job_id}")).json()
                if job["state"] in ("done", "failed", "cancelled"):
                    return job
                await asyncio.sleep(0.1)


@pytest.fixture
async def bare_api(tmp_path):
    """The node as `biomaj init` leaves it: the example bank has no record and no owner."""
    async with node_with_users(tmp_path) as (node, keys):
        async with TestClient(TestServer(create_app(node))) as client:
            yield Api(client, node, {"anonymous": None, **keys})


@pytest.fixture
async def api(bare_api: Api) -> Api:
    """The example bank given to ``owner`` by the admin (``PUT /api/v1/banks/example/owner``), never
    updated yet."""
    response = await bare_api.call("admin", "PUT", "/api/v1/banks/example/owner", json={"owner": "owner"})
    assert response.status == 200, await response.text()
    return bare_api


@pytest.fixture
async def private_bank(api: Api) -> Api:
    """The example bank, updated by its owner and made private."""
    response = await api.call("owner", "POST", "/api/v1/banks/example/update", json={})
    assert response.status == 202, await response.text()
    job = await api.job_done((await response.json())["id"], "owner")
    assert job["state"] == "done", job
    response = await api.call("owner", "PUT", "/api/v1/banks/example/visibility", json={"visibility": "private"})
    assert response.status == 200, await response.text()
    return api
