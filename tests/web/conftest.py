"""A real biomaj node (every actor, in-process bus) on a `biomaj init` root, its web app served by
aiohttp's test server, and three users: an owner, a plain user and an admin."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient, TestServer

from biomaj.auth.users import Users
from biomaj.config.scaffold import init_root
from biomaj.config.service import load_config
from biomaj.runtime.node import Node
from biomaj.web.app import create_app


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
async def api(tmp_path):
    root = tmp_path / "root"
    init_root(root, web_port=0)
    config = load_config(root / "config.yml")
    node = Node(config, ["manager", "download", "process"])
    await node.start()
    users = Users(node.store, frozenset({"root-admin"}))
    keys = {"anonymous": None}
    for name, admin in (("owner", False), ("user", False), ("admin", True)):
        keys[name] = (await users.create(name, admin=admin))[1]
    async with TestClient(TestServer(create_app(node))) as client:
        yield Api(client, node, keys)
    await node.stop()


@pytest.fixture
async def private_bank(api: Api) -> Api:
    """The example bank, updated by its owner (its first updater) and made private."""
    response = await api.call("owner", "POST", "/api/v1/banks/example/update", json={})
    assert response.status == 202, await response.text()
    job = await api.job_done((await response.json())["id"], "owner")
    assert job["state"] == "done", job
    response = await api.call("owner", "PUT", "/api/v1/banks/example/visibility", json={"visibility": "private"})
    assert response.status == 200, await response.text()
    return api
