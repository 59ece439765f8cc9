"""Who may call what: every documented route x (anonymous, user, owner, admin)."""

from __future__ import annotations

import pytest

from biomaj.web.app import api_operations

WHO = ("anonymous", "user", "owner", "admin")
OK = "ok"  # any answer but 401/403
# a private bank is answered as an unknown one to anyone who may not see it (writes need a key first)
HIDDEN = 404

# (method, path, body, expected for anonymous, user, owner, admin); the bank is private.
MATRIX = [
    ("GET", "/api/v1/banks", None, (OK, OK, OK, OK)),
    ("GET", "/api/v1/banks/example", None, (HIDDEN, HIDDEN, OK, OK)),
    ("GET", "/api/v1/banks/example/sessions", None, (HIDDEN, HIDDEN, OK, OK)),
    ("GET", "/api/v1/banks/example/status", None, (HIDDEN, HIDDEN, OK, OK)),
    ("GET", "/api/v1/banks/example/check", None, (HIDDEN, HIDDEN, OK, OK)),
    ("GET", "/api/v1/bank-files", None, (401, OK, OK, OK)),
    ("POST", "/api/v1/banks/example/update", {}, (401, HIDDEN, OK, OK)),
    ("POST", "/api/v1/banks/example/cancel", None, (401, HIDDEN, OK, OK)),
    ("DELETE", "/api/v1/banks/example/releases/nope", None, (401, HIDDEN, OK, OK)),
    ("POST", "/api/v1/banks/example/remove-all", {}, (401, HIDDEN, OK, OK)),
    ("POST", "/api/v1/banks/example/remove-pending", {}, (401, HIDDEN, OK, OK)),
    ("POST", "/api/v1/banks/example/repair", {}, (401, HIDDEN, OK, OK)),
    ("POST", "/api/v1/banks/example/release-check", None, (401, HIDDEN, OK, OK)),
    ("POST", "/api/v1/banks/example/verify", {}, (401, HIDDEN, OK, OK)),
    ("GET", "/api/v1/banks/example/releases/1/provenance", None, (HIDDEN, HIDDEN, OK, OK)),
    ("POST", "/api/v1/banks/example/publish", {}, (401, HIDDEN, OK, OK)),
    ("POST", "/api/v1/banks/example/unpublish", None, (401, HIDDEN, OK, OK)),
    ("POST", "/api/v1/banks/example/releases/1/freeze", None, (401, HIDDEN, OK, OK)),
    ("POST", "/api/v1/banks/example/releases/1/unfreeze", None, (401, HIDDEN, OK, OK)),
    ("PUT", "/api/v1/banks/example/owner", {"owner": "owner"}, (401, HIDDEN, OK, OK)),
    ("PUT", "/api/v1/banks/example/visibility", {"visibility": "private"}, (401, HIDDEN, OK, OK)),
    ("POST", "/api/v1/banks/example/unlock", {}, (401, HIDDEN, OK, OK)),
    ("GET", "/api/v1/me", None, (401, OK, OK, OK)),
    ("GET", "/api/v1/users", None, (401, 403, 403, OK)),
    ("POST", "/api/v1/users", {"name": "newcomer"}, (401, 403, 403, OK)),
    ("GET", "/api/v1/users/user", None, (401, 403, 403, OK)),
    ("DELETE", "/api/v1/users/nobody", None, (401, 403, 403, OK)),
    ("POST", "/api/v1/users/user/apikeys", {}, (401, 403, 403, OK)),
    ("DELETE", "/api/v1/users/user/apikeys/nope", None, (401, 403, 403, OK)),
    ("GET", "/api/v1/jobs/{job}", None, (401, 404, OK, OK)),
    ("POST", "/api/v1/jobs/{job}/cancel", None, (401, 404, OK, OK)),
    ("GET", "/api/v1/search", None, (OK, OK, OK, OK)),
    ("GET", "/api/v1/banks/example/show", None, (HIDDEN, HIDDEN, OK, OK)),
    ("GET", "/api/v1/banks/example/changes", None, (HIDDEN, HIDDEN, OK, OK)),
    ("GET", "/api/v1/banks/example/sessions/last/log", None, (HIDDEN, HIDDEN, OK, OK)),
    ("GET", "/api/v1/stats", None, (OK, OK, OK, OK)),
    ("GET", "/api/v1/status-ko", None, (OK, OK, OK, OK)),
    ("GET", "/api/v1/history", None, (OK, OK, OK, OK)),
    ("GET", "/api/v1/whatsup", None, (OK, OK, OK, OK)),
    ("GET", "/api/v1/nodes", None, (401, OK, OK, OK)),
    ("GET", "/api/v1/maintenance", None, (OK, OK, OK, OK)),
    ("PUT", "/api/v1/maintenance", {"maintenance": False}, (401, 403, 403, OK)),
    ("GET", "/api/v1/schedules", None, (401, 403, 403, OK)),
    ("POST", "/api/v1/schedules", {"name": "nightly", "cron": "0 3 * * *", "banks": ["example"]}, (401, 403, 403, OK)),
    ("GET", "/api/v1/schedules/nightly", None, (401, 403, 403, OK)),
    ("DELETE", "/api/v1/schedules/nightly", None, (401, 403, 403, OK)),
]


def test_the_matrix_covers_every_route():
    covered = {(method, path.replace("example", "{bank}").replace("/nope", "/{release}")) for method, path, *_ in MATRIX}
    # the event stream never ends: its visibility rules are tested in test_api.py
    documented = {(op.method, op.path) for op in api_operations()
                  if op.path.startswith("/api/v1/") and op.path != "/api/v1/events"}
    normalised = set()
    for method, path in covered:
        path = path.replace("sessions/last/log", "sessions/{session}/log")
        path = path.replace("releases/1/", "releases/{release}/").replace("users/user/apikeys/{release}",
                                                                          "users/{name}/apikeys/{key_id}")
        path = path.replace("users/user", "users/{name}").replace("users/nobody", "users/{name}")
        path = path.replace("schedules/nightly", "schedules/{name}")
        normalised.add((method, path))
    assert documented <= normalised, f"routes without a row in the matrix: {documented - normalised}"


@pytest.mark.parametrize("method, path, body, expected", MATRIX, ids=[f"{m} {p}" for m, p, *_ in MATRIX])
async def test_access(private_bank, method, path, body, expected):
    api = private_bank
    if "{job}" in path:
        jobs = await api.node.store.list_jobs(bank="example", limit=1)
        path = path.replace("{job}", jobs[0]["id"])
    for who, want in zip(WHO, expected):
        kwargs = {"json": body} if body is not None else {}
        response = await api.call(who, method, path, **kwargs)
        text = await response.text()
        if response.status >= 400 or not path.endswith(("/log", "/provenance")):  # errors are always JSON
            assert response.content_type == "application/json", (who, text)
        elif path.endswith("/provenance"):  # a release's RO-Crate, JSON-LD
            assert response.content_type == "application/ld+json", (who, text)
        if want == OK:
            assert response.status not in (401, 403, 500), (who, response.status, text)
        else:
            assert response.status == want, (who, response.status, text)


async def test_a_wrong_key_is_refused_not_taken_for_anonymous(private_bank):
    response = await private_bank.client.get("/api/v1/banks", headers={"X-API-KEY": "bmj_wrong"})
    assert response.status == 401 and (await response.json())["error"] == "unknown or revoked API key"
