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
    assert (await api.call("owner", "GET", "/api/v1/banks/example")).status == 404  # not the owner any more: hidden
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
    ("POST", "/api/v1/banks/example/update", {"json": {"publish": "yes"}}, 400, "publish must be a boolean"),
    ("POST", "/api/v1/banks/example/remove-pending", {"json": {"release": 2}}, 400, "release must be a string"),
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


async def test_reports_follow_visibility(private_bank):
    api = private_bank
    for path in ("/api/v1/search", "/api/v1/stats", "/api/v1/history", "/api/v1/whatsup"):
        assert await (await api.call("anonymous", "GET", path)).json() == [], path
    assert [r["Bank"] for r in await (await api.call("owner", "GET", "/api/v1/history")).json()][:1] == ["example"]
    stats = await (await api.call("owner", "GET", "/api/v1/stats")).json()
    assert stats and (stats[0]["bank"], stats[0]["release"]) == ("example", "All")
    found = await (await api.call("owner", "GET", "/api/v1/search?formats=fasta")).json()
    assert [r["Name"] for r in found] == ["example"]
    shown = await (await api.call("owner", "GET", "/api/v1/banks/example/show")).json()
    assert shown and shown[0]["Release"].startswith("1")
    assert (await api.call("admin", "GET", "/api/v1/history?limit=0")).status == 400


async def test_session_logs_whole_tail_and_follow(private_bank):
    api = private_bank
    whole = await api.call("owner", "GET", "/api/v1/banks/example/sessions/last/log")
    text = await whole.text()
    assert whole.status == 200 and whole.content_type == "text/plain" and "Workflow:update of example" in text
    tail = await (await api.call("owner", "GET", "/api/v1/banks/example/sessions/last/log?tail=2")).text()
    assert tail.splitlines() == text.splitlines()[-2:]
    # no job runs: follow returns the whole log and ends
    followed = await (await api.call("owner", "GET", "/api/v1/banks/example/sessions/last/log?follow=1")).text()
    assert followed == text
    for bad in ("?tail=0", "?tail=x", "?tail=-1"):
        assert (await api.call("owner", "GET", f"/api/v1/banks/example/sessions/last/log{bad}")).status == 400
    for session in ("..%2F..%2Fetc%2Fpasswd", "123", "..", "last%00"):
        response = await api.call("owner", "GET", f"/api/v1/banks/example/sessions/{session}/log")
        assert response.status == 404, session


async def test_maintenance_is_an_admin_switch(private_bank):
    api = private_bank
    assert (await api.call("admin", "PUT", "/api/v1/maintenance", json={"maintenance": True})).status == 200
    assert await (await api.call("anonymous", "GET", "/api/v1/maintenance")).json() == {"maintenance": True}
    refused = await api.call("owner", "POST", "/api/v1/banks/example/update", json={})
    job = await api.job_done((await refused.json())["id"], "owner")
    assert job["state"] == "failed" and "maintenance" in job["error"]
    await api.call("admin", "PUT", "/api/v1/maintenance", json={"maintenance": False})
    assert (await api.call("admin", "PUT", "/api/v1/maintenance", json={"maintenance": "yes"})).status == 400


async def _events(api, who: str, path: str, until: str, timeout: float = 60) -> list[dict]:
    import asyncio
    import json

    got: list[dict] = []
    response = await api.call(who, "GET", path)
    assert response.status == 200 and response.content_type == "text/event-stream"
    async with asyncio.timeout(timeout):
        async for line in response.content:
            if line.startswith(b"data: "):
                got.append(json.loads(line[6:]))
                if got[-1]["state"] == until and got[-1]["kind"] == "update":
                    break
    response.close()
    return got


async def test_the_event_stream_shows_an_update_to_those_who_may_see_it(private_bank):
    import asyncio

    api = private_bank
    watching = asyncio.create_task(_events(api, "owner", "/api/v1/events?bank=example", "done"))
    blind = asyncio.create_task(_events(api, "user", "/api/v1/events", "done", timeout=20))
    await asyncio.sleep(0.5)  # both streams are open
    response = await api.call("owner", "POST", "/api/v1/banks/example/update", json={"fromscratch": True})
    job = await response.json()
    seen = await watching
    assert {e["job_id"] for e in seen} == {job["id"]}
    assert [e["state"] for e in seen][0] in ("queued", "running") and seen[-1]["state"] == "done"
    assert any(e["step"] == "download" for e in seen)
    with __import__("pytest").raises(TimeoutError):
        await blind  # a private bank's events never reach another user


async def test_a_first_update_s_events_reach_users_and_no_anonymous_visitor(bare_api):
    """A bank never updated has no record, so no owner yet (the admins'): users follow its first
    update, run by an admin, from its first event; an anonymous visitor sees it only once its
    record says public."""
    import asyncio

    api = bare_api
    watching = asyncio.create_task(_events(api, "user", "/api/v1/events?bank=example", "done"))
    anonymous = asyncio.create_task(_events(api, "anonymous", "/api/v1/events?bank=example", "done"))
    await asyncio.sleep(0.5)  # both streams are open
    response = await api.call("admin", "POST", "/api/v1/banks/example/update", json={})
    job = await response.json()
    seen = await watching
    assert seen[0]["state"] == "queued" and seen[-1]["state"] == "done"
    assert {e["job_id"] for e in seen} == {job["id"]}
    heard = await anonymous  # the example bank is public once recorded (before that, nothing)
    assert heard and heard[-1]["state"] == "done" and {e["job_id"] for e in heard} == {job["id"]}


async def test_the_event_stream_carries_the_session_log_of_the_next_update_then_its_end(api):
    import asyncio
    import json

    assert (await api.call("owner", "GET", "/api/v1/events?log=true")).status == 400  # one bank's log only
    response = await api.call("owner", "GET", "/api/v1/events?bank=example&log=true")
    assert response.status == 200
    submitted = await api.call("owner", "POST", "/api/v1/banks/example/update", json={})
    assert submitted.status == 202
    kinds: list[str] = []
    lines: list[str] = []
    kind = None
    async with asyncio.timeout(30):
        async for raw in response.content:
            text = raw.decode().rstrip("\n")
            if text.startswith("event: "):
                kind = text[7:]
            elif text.startswith("data: ") and kind in ("log", "log_end"):
                kinds.append(kind)
                if kind == "log":
                    lines.append(json.loads(text[6:])["line"])
                else:
                    break
    response.close()
    assert kinds[-1] == "log_end" and kinds.count("log_end") == 1  # after every line, once the job is over
    assert any(line.endswith("Workflow:Start:init") for line in lines)
    assert lines[-1].endswith("Workflow:release 1 updated"), lines[-3:]


async def test_release_check_through_the_api(private_bank):
    api = private_bank
    response = await api.call("owner", "POST", "/api/v1/banks/example/release-check")
    assert response.status == 202
    job = await api.job_done((await response.json())["id"], "owner")
    assert job["state"] == "done", job
    assert job["result"]["details"]["remoterelease"] == "1" and job["result"]["details"]["new"] is False
