"""A real biomaj node (every actor, in-process bus) on a `biomaj init` root, its web app served by
aiohttp's test server, and three users with passwords: an owner, a plain user and an admin. Each
`Browser` is one cookie jar, as a person's browser is."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import pytest
from aiohttp import CookieJar
from aiohttp.test_utils import TestClient, TestServer

from biomaj.node.serve import Node
from biomaj.web.app import create_app
from tests.servers.biomaj_node import node_with_users

PASSWORDS = {"owner": "owner-pass-1", "user": "user-pass-1", "admin": "admin-pass-1"}
CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@dataclass
class Browser:
    client: TestClient
    csrf: str = ""

    async def get(self, path: str, **kwargs):
        response = await self.client.get(path, allow_redirects=kwargs.pop("allow_redirects", False), **kwargs)
        if response.content_type == "text/html":
            text = await response.text()
            found = CSRF.search(text)
            if found:
                self.csrf = found.group(1)
        return response

    async def page(self, path: str, status: int = 200) -> str:
        response = await self.get(path)
        text = await response.text()
        assert response.status == status, (path, response.status, text[:2000])
        return text

    async def login(self, name: str, password: str | None = None, next_page: str = "/ui/"):
        await self.page("/ui/login")
        return await self.client.post("/ui/login", allow_redirects=False, data={
            "user": name, "password": password or PASSWORDS[name], "csrf_token": self.csrf, "next": next_page})

    async def api(self, method: str, path: str, json=None, csrf: bool = True):
        headers = {"X-CSRF-Token": self.csrf} if csrf else {}
        return await self.client.request(method, path, json=json, headers=headers)


@dataclass
class Site:
    server: TestServer
    node: Node
    keys: dict[str, str]

    async def browser(self, who: str | None = None) -> Browser:
        client = TestClient(self.server, cookie_jar=CookieJar(unsafe=True))
        await client.start_server()
        browser = Browser(client)
        self._clients.append(client)
        if who is not None:
            response = await browser.login(who)
            assert response.status == 303, await response.text()
            await browser.page("/ui/")
        return browser

    async def job_done(self, job_id: str, timeout: float = 60) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                job = await self.node.store.get_job(job_id)
                if job["state"] in ("done", "failed", "cancelled"):
                    return job
                await asyncio.sleep(0.05)

    def __post_init__(self):
        self._clients: list[TestClient] = []


@pytest.fixture
async def site(tmp_path):
    async with node_with_users(tmp_path, PASSWORDS) as (node, keys):
        server = TestServer(create_app(node))
        await server.start_server()
        site = Site(server, node, keys)
        yield site
        for client in site._clients:
            await client.close()
        await server.close()


@pytest.fixture
async def updated(site: Site) -> Site:
    """The example bank given to its owner by an admin (a bank with no owner yet is the admins'),
    then updated once by that owner; public."""
    admin = await site.browser("admin")
    given = await admin.api("PUT", "/api/v1/banks/example/owner", json={"owner": "owner"})
    assert given.status == 200, await given.text()
    owner = await site.browser("owner")
    response = await owner.api("POST", "/api/v1/banks/example/update", json={})
    assert response.status == 202, await response.text()
    job = await site.job_done((await response.json())["id"])
    assert job["state"] == "done", job
    return site
