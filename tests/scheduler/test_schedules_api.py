"""`/api/v1/schedules` on a real node: admins add, list, read and delete schedules; bad input is a
400 that says what is wrong, and changes nothing."""

from __future__ import annotations

import time

import pytest

from tests.web.conftest import Api

NIGHTLY = {"name": "nightly", "cron": "0 3 * * *", "banks": ["example"]}


async def call(api: Api, method: str, path: str, body=None, who: str = "admin", status: int = 200):
    response = await api.call(who, method, path, **({"json": body} if body is not None else {}))
    answer = await response.json()
    assert response.status == status, answer
    return answer


async def test_add_list_get_delete(api: Api):
    assert await call(api, "GET", "/api/v1/schedules") == []
    answer = await call(api, "POST", "/api/v1/schedules", NIGHTLY, status=201)
    record = answer["schedule"]
    assert answer["replaced"] is False
    assert {k: record[k] for k in ("name", "kind", "cron", "banks", "user", "last_run", "last_result")} == {
        "name": "nightly", "kind": "cron", "cron": "0 3 * * *", "banks": ["example"], "user": "admin",
        "last_run": None, "last_result": None}
    assert time.time() < record["next_run"] <= time.time() + 86400
    assert time.localtime(record["next_run"])[3:6] == (3, 0, 0)  # the server's local time by default
    assert await call(api, "GET", "/api/v1/schedules") == [record]
    assert await call(api, "GET", "/api/v1/schedules/nightly") == record
    stored = await api.node.store.get_schedule("nightly")
    assert stored["created_by"] == "admin" and stored["user"] == "admin"

    answer = await call(api, "POST", "/api/v1/schedules", {**NIGHTLY, "cron": "30  2 * * sat", "user": "owner"})
    assert answer["replaced"] is True
    assert (answer["schedule"]["cron"], answer["schedule"]["user"]) == ("30 2 * * sat", "owner")

    assert await call(api, "DELETE", "/api/v1/schedules/nightly") == {"deleted": "nightly"}
    for method in ("GET", "DELETE"):
        answer = await call(api, method, "/api/v1/schedules/nightly", status=404)
        assert "no schedule 'nightly'" in answer["error"]


@pytest.mark.parametrize("body, says", [
    ({**NIGHTLY, "cron": "0 3 * *"}, "expected 5 fields"),
    ({**NIGHTLY, "cron": "0 25 * * *"}, "bad hour"),
    ({**NIGHTLY, "cron": 3}, "a string of 5 fields"),
    ({**NIGHTLY, "banks": ["nope"]}, "bank 'nope': no file"),
    ({**NIGHTLY, "banks": ["../example"]}, "not a bank name"),
    ({**NIGHTLY, "banks": []}, "at least one bank"),
    ({**NIGHTLY, "banks": "example"}, None),  # a comma-separated string is taken too
    ({**NIGHTLY, "banks": [1]}, "a list of bank names"),
    ({**NIGHTLY, "name": "auto:example"}, "invalid schedule name"),
    ({**NIGHTLY, "name": "a b"}, "invalid schedule name"),
    ({**NIGHTLY, "name": 7}, "invalid schedule name"),
    ({**NIGHTLY, "user": "no body"}, "invalid user name"),
    ({**NIGHTLY, "every": "day"}, "unknown field(s): every"),
    ({"cron": "0 3 * * *", "banks": ["example"]}, "invalid schedule name None"),
])
async def test_bad_input_is_a_400_that_says_why(api: Api, body, says):
    if says is None:
        await call(api, "POST", "/api/v1/schedules", body, status=201)
        return
    answer = await call(api, "POST", "/api/v1/schedules", body, status=400)
    assert says in answer["error"], answer
    assert await api.node.store.list_schedules() == []


async def test_a_body_that_is_not_an_object_is_a_400(api: Api):
    response = await api.client.post("/api/v1/schedules", data="[1]",
                                     headers={"Content-Type": "application/json", **api.headers("admin")})
    assert response.status == 400


async def test_only_admins(api: Api):
    for who, status in (("anonymous", 401), ("user", 403), ("owner", 403)):
        await call(api, "GET", "/api/v1/schedules", who=who, status=status)
        await call(api, "POST", "/api/v1/schedules", NIGHTLY, who=who, status=status)
    assert await api.node.store.list_schedules() == []
