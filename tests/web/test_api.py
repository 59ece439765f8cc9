"""The REST API end to end on a real node: visibility, a whole update, users and keys, errors."""

from __future__ import annotations

import pytest


async def test_anonymous_users_see_public_banks_only(private_bank):
    api = private_bank
    assert await (await api.call("anonymous", "GET", "/api/v1/banks")).json() == []
    assert await (await api.call("user", "GET", "/api/v1/banks")).json() == []
    [seen] = await (await api.call("owner", "GET", "/api/v1/banks")).json()
    assert (seen["name"], seen["visibility"], seen["owner"], seen["release"]) == ("example", "private", "owner", "1")
    await api.call("owner", "PUT", "/api/v1/banks/example/visibility", json={"visibility": "public"})
    assert [b["name"] for b in await (await api.call("anonymous", "GET", "/api/v1/banks")).json()] == ["example"]
    detail = await (await api.call("anonymous", "GET", "/api/v1/banks/example")).json()
    assert detail["published"] == "1" and [p["release"] for p in detail["production"]] == ["1"]


async def test_an_update_through_the_api(api):
    response = await api.call("owner", "POST", "/api/v1/banks/example/update", json={"publish": True})
    assert response.status == 202
    job = await response.json()
    assert (job["kind"], job["bank"], job["user"], job["state"]) == ("update", "example", "owner", "queued")
    again = await api.call("owner", "POST", "/api/v1/banks/example/update", json={})
    assert again.status in (202, 409)  # 409 while the first one is queued or running
    done = await api.job_done(job["id"], "owner")
    assert done["state"] == "done" and done["result"]["release"] == "1", done
    sessions = await (await api.call("owner", "GET", "/api/v1/banks/example/sessions")).json()
    assert sessions[0]["status"]["over"] is True
    status = await (await api.call("owner", "GET", "/api/v1/banks/example/status")).json()
    assert status["jobs"] == [] or all(j["kind"] == "update" for j in status["jobs"])


async def test_ownership_moves_and_admins_act_on_any_bank(private_bank):
    api = private_bank
    assert (await api.call("owner", "PUT", "/api/v1/banks/example/owner", json={"owner": "nobody"})).status == 404
    assert (await api.call("owner", "PUT", "/api/v1/banks/example/owner", json={"owner": "user"})).status == 200
    assert (await api.call("owner", "GET", "/api/v1/banks/example")).status == 403  # not the owner any more
    assert (await api.call("user", "GET", "/api/v1/banks/example")).status == 200
    assert (await api.call("admin", "POST", "/api/v1/banks/example/releases/1/freeze")).status == 200
    detail = await (await api.call("user", "GET", "/api/v1/banks/example")).json()
    assert detail["production"][0]["freeze"] is True


async def test_users_over_the_api_show_a_key_once_and_never_a_hash(api):
    created = await api.call("admin", "POST", "/api/v1/users", json={"name": "newcomer", "password": "long enough"})
    assert created.status == 201
    body = await created.json()
    key = body["api_key"]
    assert key.startswith("bmj_") and "hashed_password" not in body["user"]
    me = await (await api.client.get("/api/v1/me", headers={"X-API-KEY": key})).json()
    assert me["id"] == "newcomer" and me["has_password"] is True
    for path in ("/api/v1/users", "/api/v1/users/newcomer", "/api/v1/me"):
        text = await (await api.call("admin", "GET", path)).text()
        assert key not in text and "argon2" not in text and "hashed_password" not in text
    fresh = await (await api.call("admin", "POST", "/api/v1/users/newcomer/apikeys", json={"label": "ci"})).json()
    assert (await api.call("admin", "DELETE", f"/api/v1/users/newcomer/apikeys/{fresh['id']}")).status == 200
    assert (await api.client.get("/api/v1/me", headers={"X-API-KEY": fresh["api_key"]})).status == 401
    assert (await api.call("admin", "DELETE", "/api/v1/users/newcomer")).status == 200
    assert (await api.client.get("/api/v1/me", headers={"X-API-KEY": key})).status == 401


@pytest.mark.parametrize("method, path, kwargs, status, words", [
    ("POST", "/api/v1/banks/example/update", {"data": b"{not json"}, 400, "not valid JSON"),
    ("POST", "/api/v1/banks/example/update", {"json": [1, 2]}, 400, "JSON object"),
    ("POST", "/api/v1/banks/example/update", {"json": {"bogus": 1}}, 400, "unknown option"),
    ("POST", "/api/v1/banks/example/update", {"json": {"from_task": "nope"}}, 400, "from_task must be one of"),
    ("POST", "/api/v1/banks/example/update", {"json": {"publish": "yes"}}, 400, "must be a bool"),
    ("POST", "/api/v1/banks/nobank/update", {"json": {}}, 404, "nobank"),
    ("GET", "/api/v1/banks/nobank", {}, 404, "nobank"),
    ("PUT", "/api/v1/banks/example/visibility", {"json": {"visibility": "secret"}}, 400, "public or private"),
    ("POST", "/api/v1/users", {"json": {"name": "bad name"}}, 400, "invalid user name"),
    ("POST", "/api/v1/users", {"json": {"name": "x", "password": "short"}}, 400, "at least 8"),
    ("POST", "/api/v1/users", {"data": b"x" * (2 * 1024 * 1024)}, 413, ""),
    ("GET", "/api/v1/jobs/nope", {}, 404, "no such job"),
])
async def test_bad_input_gets_a_json_error_with_the_right_status(private_bank, method, path, kwargs, status, words):
    response = await private_bank.call("admin", method, path, **kwargs)
    body = await response.json()
    assert (response.status, body["status"]) == (status, status), body
    assert words in body["error"]


async def test_the_openapi_document_describes_every_route(api):
    from biomaj.web.app import api_operations

    spec = await (await api.client.get("/api/v1/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    for op in api_operations():
        operation = spec["paths"][op.path][op.method.lower()]
        assert operation["summary"] and operation["responses"]
        assert ("security" in operation) == (op.access != "public")
    page = await api.client.get("/api/v1/docs")
    assert page.status == 200 and "/api/v1/banks/{bank}/update" in await page.text()
