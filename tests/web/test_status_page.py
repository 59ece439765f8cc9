"""``GET /status``: BioMAJ 3's public status page (its proxy's ``/status``), as HTML and as JSON,
on the real web app of a real node: what anyone sees, what only admins see, no secret anywhere,
and no Accept header, however odd, gets a 500."""

from __future__ import annotations

import random
import string

import pytest

from biomaj.web.status_page import wants_json

JSON = {"Accept": "application/json"}


async def get(api, who: str, accept: str | None = None, method: str = "GET"):
    headers = api.headers(who)
    if accept is not None:
        headers["Accept"] = accept
    return await api.client.request(method, "/status", headers=headers)


async def test_anyone_gets_the_plain_page_of_services_and_nodes(api):
    response = await get(api, "anonymous")
    text = await response.text()
    assert response.status == 200 and response.content_type == "text/html", text
    assert "<h1>biomaj services status</h1>" in text and "every service answers" in text
    for service in ("biomaj-store", "biomaj-bus", "biomaj-state", "biomaj-manager", "biomaj-download"):
        assert f"<td>{service}</td><td>ok</td>" in text, service
    assert f"<td>{api.node.node_id}</td><td>manager, download, process</td>" in text
    assert "<script" not in text and "http://" not in text and "https://" not in text  # nothing to fetch
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store" and "Accept" in response.headers["Vary"]
    head = await get(api, "anonymous", method="HEAD")
    assert head.status == 200 and head.content_type == "text/html"


async def test_json_with_accept_application_json(api):
    response = await get(api, "anonymous", "application/json")
    body = await response.json()
    assert response.status == 200 and response.content_type == "application/json"
    assert body["ok"] is True and body["node"] == api.node.node_id and body["version"]
    services = {row["service"]: row for row in body["services"]}
    assert services["biomaj-store"] == {"service": "biomaj-store", "status": 1, "count": 1}
    assert services["biomaj-manager"]["count"] == 1
    [node] = body["nodes"]
    assert node["node_id"] == api.node.node_id and node["roles"] == ["manager", "download", "process"]
    assert node["last_seen"] >= node["started"] > 0
    assert body["backends"] == {"store": "sqlite", "bus": "MemoryBus", "state": "MemoryState"}


async def test_reads_what_the_other_status_routes_read(api):
    """The same nodes as /api/v1/status, the same service rows as /api/daemon/status."""
    shown = await (await get(api, "admin", "application/json")).json()
    v1 = await (await api.call("admin", "GET", "/api/v1/status")).json()
    daemon = await (await api.call("admin", "GET", "/api/daemon/status")).json()
    assert [n["node_id"] for n in shown["nodes"]] == [n["node_id"] for n in v1["nodes"]]
    assert shown["backends"] == v1["backends"]
    assert shown["services"] == daemon["status"]


@pytest.mark.parametrize("who", ["anonymous", "user", "owner"])
async def test_hosts_pids_and_where_the_store_is_are_for_admins(api, who):
    shown = await (await get(api, who, "application/json")).json()
    assert all("host" not in n and "pid" not in n for n in shown["nodes"])
    assert shown["backends"]["store"] == "sqlite"
    page = await (await get(api, who)).text()
    assert "<th>host</th>" not in page and str(api.node.config.root) not in page


async def test_admins_see_hosts_pids_and_the_store(api):
    shown = await (await get(api, "admin", "application/json")).json()
    [node] = shown["nodes"]
    assert node["host"] and node["pid"] > 0
    assert shown["backends"]["store"].startswith("sqlite /")
    page = await (await get(api, "admin")).text()
    assert "<th>host</th><th>pid</th>" in page and f"<td>{node['pid']}</td>" in page


async def test_no_secret_on_the_page(api, monkeypatch):
    """No API key, no cookie secret, no credentials of a backend URL: the store describes itself
    without them, and only its kind is shown to non-admins."""
    real_status = api.node.status

    async def status_with_mongo():
        info = await real_status()
        info["backends"]["store"] = "mongodb mongodb://biomaj:***@db.internal:27017/ (database biomaj)"
        return info

    monkeypatch.setattr(api.node, "status", status_with_mongo)
    secret = api.node.config.settings.web.secret.get_secret_value()
    for who in ("anonymous", "user", "admin"):
        for accept in (None, "application/json"):
            text = await (await get(api, who, accept)).text()
            assert secret not in text and not any(key in text for key in api.keys.values() if key)
            assert "bmj_" not in text and "password" not in text.lower()
            assert ("db.internal" in text) == (who == "admin"), (who, accept)


async def test_a_backend_down_is_shown_and_why_to_admins_only(api, monkeypatch):
    real_ready = api.node.ready

    async def bus_down():
        checks = await real_ready()
        checks["bus"] = {"ok": False, "error": "not connected to the broker at rabbit.internal"}
        return checks

    monkeypatch.setattr(api.node, "ready", bus_down)
    for who in ("anonymous", "admin"):
        response = await get(api, who)
        text = await response.text()
        assert response.status == 200 and "a service does not answer" in text
        assert '<tr class="s-1"><td>biomaj-bus</td><td>down</td><td>0</td>' in text
        assert ("rabbit.internal" in text) == (who == "admin")
        shown = await (await get(api, who, "application/json")).json()
        assert shown["ok"] is False and {"service": "biomaj-bus", "status": -1, "count": 0} in [
            {k: v for k, v in row.items() if k != "error"} for row in shown["services"]]


async def test_a_wrong_key_is_refused_and_writes_are_not_allowed(api):
    response = await api.client.get("/status", headers={"X-API-KEY": "bmj_wrong"})
    assert response.status == 401 and (await response.json())["error"] == "unknown or revoked API key"
    response = await api.call("admin", "POST", "/status", json={})
    assert response.status == 405 and (await response.json())["status"] == 405


@pytest.mark.parametrize("accept, expected", [
    ("application/json", True),
    ("application/json; charset=utf-8", True),
    ("APPLICATION/JSON", True),
    ("application/*", True),
    ("application/json, text/plain, */*", True),  # axios, fetch with a JSON client
    ("text/html, application/json", False),
    ("text/html;q=0.5, application/json", True),
    ("application/json;q=0.4, text/html;q=0.9", False),
    ("application/json;q=0, */*", False),
    ("application/json;q=nan", False),
    ("application/json;q=inf", False),
    ("application/json;q=-1", False),
    ("application/json;q=", False),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),  # a browser
    ("*/*", False),
    ("", False),
    ("image/png", False),
    (";;;,,,", False),
])
def test_accept_negotiation(accept, expected):
    assert wants_json(accept) is expected


ODD_ACCEPTS = [
    "", " ", ",", ";", "q=1", ";q=1", "*/*;q=", "*/*;q=abc", "*/*;q=1e400", "*/*;q=-0", "text/html;q=0",
    "application/json;q=0.5;q=1", "application/json;;;q", "a/b/c", "/", "*", "application/", "/json",
    "application/json\t", "application/json;level=1;q=0.7", "application/json, " * 200, "x" * 8000,
    "application/json;q=" + "9" * 400, "té/xt; q=ü", "application/json;q=0x1", "*/*;q=1_0",
    "application/json;q=infinity", "text/html;q=NaN, application/json;q=NaN",
]


async def test_odd_accept_headers_never_give_a_500(api):
    rng = random.Random(23)
    alphabet = string.ascii_letters + string.digits + "/*;=,.-+ \t\"'()<>@:?[]{}\\"
    generated = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 60))) for _ in range(150)]
    pieces = ["application/json", "text/html", "*/*", "application/*", "text/*", "q=", "q=0.5", "q=x", ";", ",",
              " ", "q=1.0", "charset=utf-8"]
    generated += ["".join(rng.choice(pieces) for _ in range(rng.randrange(1, 12))) for _ in range(150)]
    for accept in ODD_ACCEPTS + generated:
        for who in ("anonymous", "admin"):
            response = await get(api, who, accept)
            body = await response.read()
            assert response.status == 200, (accept, response.status, body[:300])
            assert response.content_type in ("text/html", "application/json"), accept
            assert (response.content_type == "application/json") == wants_json(accept), accept
