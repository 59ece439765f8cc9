"""BioMAJ 3's `/api/daemon` routes on a real node: `POST /api/daemon` with biomaj-cli's options,
the REST routes, who may call what, visibility, answers' shapes, bad input, the log route."""

from __future__ import annotations

import base64

import pytest

from biomaj.web.app import api_operations

WHO = ("anonymous", "user", "owner", "admin")
OK = "ok"  # any answer but 401/403/500

# What biomaj-cli 3.1.11 sends: its whole argparse namespace (plus `options` and `no_log`).
CLI_DEFAULTS = {
    "options": None, "history": False, "historyLimit": 20, "lastlog": False, "tail": None, "aboutme": None,
    "whatsup": False, "userlogin": None, "userpassword": None, "proxy": "http://127.0.0.1:5000", "apikey": None,
    "updatestatus": False, "updatecancel": False, "trace": None, "config": None, "check": False, "update": False,
    "fromscratch": False, "publish": False, "unpublish": False, "release": None, "from_task": None, "process": None,
    "log": None, "remove": False, "removeall": False, "removepending": False, "status": False, "bank": None,
    "owner": None, "stop_before": None, "stop_after": None, "freeze": False, "unfreeze": False, "force": False,
    "help": False, "search": False, "formats": None, "types": None, "query": None, "show": False, "newbank": None,
    "newdir": None, "visibility": None, "maintenance": None, "version": False, "statusko": False,
    "schedule": False, "stats": False, "json": False, "datalist": False, "dataimport": False, "no_log": False,
}


async def cli(api, who: str, expect: int = 200, **options):
    """POST /api/daemon as biomaj-cli does; returns the JSON answer (checked against ``expect``)."""
    body = {"options": {**CLI_DEFAULTS, "apikey": api.keys.get(who), **options}}
    response = await api.call(who, "POST", "/api/daemon", json=body)
    answer = await response.json()
    assert response.status == expect, (who, options, response.status, answer)
    if expect == 200:
        assert answer["status"] is True
    else:
        assert answer["status"] == expect and answer["error"]
    return answer


async def wait_jobs(api, answer: dict, who: str = "admin") -> list[dict]:
    jobs = [await api.job_done(job["id"], who) for job in answer["jobs"]]
    assert all(job["state"] == "done" for job in jobs), jobs
    return jobs


@pytest.fixture
async def public_bank(private_bank):
    answer = await cli(private_bank, "owner", bank="example", visibility="public")
    assert "public" in answer["msg"]
    return private_bank


@pytest.fixture
async def two_releases(private_bank):
    """The example bank with releases 1 and 2 (2 published, as auto_publish=1)."""
    api = private_bank
    (api.node.config.root / "example-remote" / "release.txt").write_text("Release 2\n")
    await wait_jobs(api, await cli(api, "owner", update=True, bank="example"))
    doc = await api.node.store.get_bank("example")
    assert [p["release"] for p in doc["production"]] == ["1", "2"]
    return api


# --- POST /api/daemon ---------------------------------------------------------------------------------


async def test_ping(api):
    response = await api.client.get("/api/daemon")
    assert response.status == 200 and await response.json() == {"msg": "pong"}


async def test_an_update_as_biomaj_cli_sends_it(api):
    answer = await cli(api, "owner", update=True, bank="example")
    [job] = answer["jobs"]
    assert answer["msg"] == f"Bank update request sent for example (job {job['id']})\n"
    assert (job["kind"], job["bank"], job["user"]) == ("update", "example", "owner")
    assert "apikey" not in job["options"] and "token" not in job["options"]  # never in a job (W29)
    [done] = await wait_jobs(api, answer)
    assert done["result"]["release"] == "1"
    stored = await api.node.store.get_job(job["id"])
    assert api.keys["owner"] not in str(stored)


async def test_update_options_are_checked_and_passed_on(api):
    await cli(api, "owner", 400, update=True, bank="example", stop_after="nope")  # BioMAJ 3 ignored it
    await cli(api, "owner", 400, update=True, bank="example", process="x")  # --process needs --from-task
    answer = await cli(api, "owner", update=True, bank="example", stop_after="download", fromscratch=True)
    assert answer["jobs"][0]["options"] == {"stop_after": "download", "fromscratch": True}
    [done] = await wait_jobs(api, answer)
    assert done["result"]["stopped"] is True


async def test_writes_need_a_key_and_the_owner(private_bank):
    api = private_bank
    for options in ({"update": True}, {"remove": True, "release": "1"}, {"removeall": True}, {"removepending": True},
                    {"repair": True}, {"publish": True}, {"unpublish": True}, {"freeze": True, "release": "1"},
                    {"unfreeze": True, "release": "1"}, {"owner": "user"}, {"visibility": "public"},
                    {"updatecancel": True}):
        await cli(api, "anonymous", 401, bank="example", **options)
        await cli(api, "user", 404, bank="example", **options)  # private: as an unknown bank
    assert (await api.node.store.get_bank("example"))["properties"]["owner"] == "owner"


async def test_the_key_in_the_options_body_is_not_a_credential(private_bank):
    body = {"options": {**CLI_DEFAULTS, "apikey": private_bank.keys["owner"], "update": True, "bank": "example"}}
    response = await private_bank.client.post("/api/daemon", json=body)  # no header
    assert response.status == 401


async def test_status_follows_visibility_in_text_and_json(private_bank):
    api = private_bank
    assert "example" not in (await cli(api, "anonymous", status=True))["msg"]
    assert "example" not in (await cli(api, "user", status=True))["msg"]
    text = (await cli(api, "owner", status=True))["msg"]
    assert text.splitlines()[1].split("|")[1].strip() == "Name" and "| example" in text and "private" in text
    data = (await cli(api, "admin", status=True, json=True))["msg"]
    assert data["headers"] == ["Name", "Type(s)", "Release", "Visibility", "Last update"]
    assert [row[:4] for row in data["banks"]] == [["example", "nucleic", "1", "private"]]
    await cli(api, "anonymous", 404, status=True, bank="example")  # private: as an unknown bank
    await cli(api, "user", 404, status=True, bank="example")
    detail = (await cli(api, "owner", status=True, bank="example", json=True))["msg"]["bank"]
    assert detail["info"]["headers"][0] == "Name" and detail["info"]["details"][0][0] == "example"
    assert detail["production"]["details"][0][2] == "1" and detail["pending"] == []
    text = (await cli(api, "owner", status=True, bank="example"))["msg"]
    assert "Published release" in text and "Remote release" in text


async def test_reads_hide_private_banks(private_bank):
    api = private_bank
    for options, word in (({"search": True}, "example"), ({"stats": True}, "example"), ({"history": True}, "example"),
                          ({"search": True, "formats": "fasta"}, "example")):
        assert word not in str((await cli(api, "anonymous", **options))["msg"]), options
        assert word in str((await cli(api, "owner", **options))["msg"]), options
    unknown = await cli(api, "anonymous", 404, show=True, bank="nobank")
    for who in ("anonymous", "user"):  # a private bank is answered as an unknown one
        for options in ({"show": True}, {"updatestatus": True}, {"lastlog": True}, {"check": True}, {"status": True}):
            hidden = await cli(api, who, 404, bank="example", **options)
            assert hidden["error"] == unknown["error"].replace("nobank", "example"), (who, options)


async def test_read_answers_have_biomaj3_shapes(public_bank):
    api = public_bank
    search = (await cli(api, "anonymous", search=True, formats="fasta", types="nucleic", json=True))["msg"]
    assert search["headers"] == ["Name", "Release", "Format(s)", "Type(s)", "Published"]
    assert search["matches"] == [["example", "1", "fasta", "nucleic", "yes"]]
    text = (await cli(api, "anonymous", search=True, formats="fasta"))["msg"]
    assert text.startswith("Search by formats=['fasta'], types=[]\n+") and "| example" in text
    assert "example" not in (await cli(api, "anonymous", search=True, formats="blast"))["msg"]
    show = (await cli(api, "anonymous", show=True, bank="example", json=True))["msg"]
    assert show["headers"][:3] == ["Name", "Release", "Format(s)"] and show["details"][0][1] == "1 (current)"
    assert "| example | 1 (current)" in (await cli(api, "anonymous", show=True, bank="example"))["msg"]
    await cli(api, "anonymous", 404, show=True, bank="example", release="9")
    stats = (await cli(api, "anonymous", stats=True, json=True))["msg"]
    assert stats["headers"] == ["Bank", "Release", "Size"] and stats["stats"][0][:2] == ["example", "All"]
    assert (await cli(api, "anonymous", stats=True))["msg"].startswith("BioMAJ statistics\n")
    history = (await cli(api, "anonymous", history=True, historyLimit=1, json=True))["msg"]
    assert history["headers"][:2] == ["Bank", "Action"] and len(history["history"]) == 1
    assert history["history"][0][:2] == ["example", "update"]
    whatsup = (await cli(api, "anonymous", whatsup=True, json=True))["msg"]
    assert whatsup == {"services": [], "headers": ["Type", "Bank", "Status"]}
    version = (await cli(api, "anonymous", version=True, json=True))["msg"]
    assert version["version"][0][0] == "biomaj"
    assert (await cli(api, "anonymous", statusko=True, json=True))["msg"]["banks"] == []
    check = (await cli(api, "anonymous", check=True, bank="example"))["msg"]
    assert check.startswith("example check: True")


async def test_update_status_and_last_log(private_bank):
    api = private_bank
    data = (await cli(api, "owner", updatestatus=True, bank="example", json=True))["msg"]
    assert data["pending"] == {"headers": ["Pending actions", "Date"], "actions": []}
    steps = dict(data["status"]["process"])
    assert data["status"]["headers"] == ["Workflow step", "Status"]
    assert steps["download"] == "over" and steps["over"] == "over" and steps["log_file"].endswith("example.log")
    text = (await cli(api, "owner", updatestatus=True, bank="example"))["msg"]
    assert "| Pending actions" in text and "| download" in text
    log = (await cli(api, "owner", lastlog=True, bank="example", tail="3"))["msg"]
    assert 0 < len(log.splitlines()) <= 3
    whole = (await cli(api, "owner", lastlog=True, bank="example", tail="0"))["msg"]
    assert "Workflow" in whole and whole.endswith(log)


async def test_update_status_while_a_job_is_queued(api):
    answer = await cli(api, "owner", update=True, bank="example")
    data = (await cli(api, "owner", updatestatus=True, bank="example", json=True))["msg"]
    if isinstance(data, dict) and data["pending"]["actions"]:  # unless the update already finished
        assert data["pending"]["actions"][0][0] in ("Update", "Update (running)")
    await wait_jobs(api, answer)


async def test_publish_freeze_and_remove_a_release(two_releases):
    api = two_releases
    assert (await cli(api, "owner", publish=True, bank="example", release="1"))["msg"] is None  # "Done."
    doc = await api.node.store.get_bank("example")
    assert doc["current"] == doc["production"][0]["session"]
    await cli(api, "owner", 409, remove=True, bank="example", release="1")  # the published one
    await cli(api, "owner", 400, remove=True, bank="example")  # no release
    await cli(api, "owner", 404, remove=True, bank="example", release="9")
    await cli(api, "owner", 404, remove=True, bank="example", release="9\r\n")
    await cli(api, "owner", 400, freeze=True, bank="example")
    await cli(api, "owner", freeze=True, bank="example", release="2")
    await cli(api, "owner", 409, remove=True, bank="example", release="2")  # frozen
    await cli(api, "admin", unfreeze=True, bank="example", release="2")
    answer = await cli(api, "owner", remove=True, bank="example", release="2")
    assert answer["msg"].startswith("Bank removal request sent for example (job ")
    await wait_jobs(api, answer)
    doc = await api.node.store.get_bank("example")
    assert [p["release"] for p in doc["production"]] == ["1"]
    await cli(api, "owner", unpublish=True, bank="example")
    assert (await api.node.store.get_bank("example")).get("current") is None


async def test_remove_all_repair_and_remove_pending_are_jobs(private_bank):
    api = private_bank
    answer = await cli(api, "owner", repair=True, bank="example")
    assert answer["msg"].startswith("Bank repair request sent for example (job ")
    await wait_jobs(api, answer)
    answer = await cli(api, "owner", removepending=True, bank="example")
    assert answer["jobs"][0]["kind"] == "remove-pending"
    await wait_jobs(api, answer)
    answer = await cli(api, "owner", removeall=True, bank="example", force=True)
    assert answer["jobs"][0]["kind"] == "remove-all" and answer["jobs"][0]["options"] == {"force": True}
    await wait_jobs(api, answer)
    assert await api.node.store.get_bank("example") is None
    await cli(api, "owner", 403, removeall=True, bank="example")  # no record, no owner: the admins' again
    await cli(api, "admin", 404, removeall=True, bank="example")  # nothing to remove


async def test_owner_and_visibility(private_bank):
    api = private_bank
    await cli(api, "owner", 404, owner="nobody", bank="example")
    await cli(api, "owner", 400, visibility="secret", bank="example")
    assert (await cli(api, "owner", owner="user", bank="example"))["msg"] is None
    await cli(api, "owner", 404, status=True, bank="example")  # private and not the owner's any more
    await cli(api, "user", status=True, bank="example")


async def test_cancel_needs_a_job_and_the_owner(private_bank):
    api = private_bank
    await cli(api, "owner", 404, updatecancel=True, bank="example")  # BioMAJ 3 cancelled the next run (W11)
    answer = await cli(api, "owner", update=True, bank="example", fromscratch=True)
    cancel = await api.call("owner", "POST", "/api/daemon", json={"options": {"updatecancel": True, "bank": "example"}})
    if cancel.status == 200:  # unless the update was already over
        body = await cancel.json()
        assert body["msg"].startswith("Requested to cancel update of bank example")
        assert body["jobs"][0]["id"] == answer["jobs"][0]["id"]
    else:
        assert cancel.status == 404
    await api.job_done(answer["jobs"][0]["id"], "owner")


async def test_maintenance_needs_an_admin(api):
    assert (await cli(api, "anonymous", maintenance="status"))["msg"] == "Maintenance: Off"
    await cli(api, "anonymous", 401, maintenance="on")
    await cli(api, "owner", 403, maintenance="on")
    await cli(api, "admin", 400, maintenance="maybe")
    assert (await cli(api, "admin", maintenance="on"))["msg"] == "Maintenance set to On"
    assert (await cli(api, "user", maintenance="status"))["msg"] == "Maintenance: On"
    assert (await (await api.client.get("/api/daemon/maintenance")).json()) == {"msg": "Maintenance: On"}
    assert (await cli(api, "admin", maintenance="off"))["msg"] == "Maintenance set to Off"


async def test_about_me_never_gives_a_key_for_a_password(api):
    answer = await cli(api, "anonymous", 401, aboutme=True, userlogin="owner", userpassword="secret password")
    assert "password" in answer["error"] and "bmj_" not in str(answer)
    me = await cli(api, "owner", aboutme=True, userlogin="owner", userpassword="whatever")
    assert me["msg"] == "User: owner\nEmail: \nAdmin: no\n"
    data = (await cli(api, "admin", aboutme=True, json=True))["msg"]
    assert data == {"user": "admin", "email": None, "is_admin": True}
    response = await api.call("owner", "POST", "/api/daemon/aboutme", json={"login": "owner", "password": "x"})
    text = await response.text()
    assert response.status == 200 and api.keys["owner"] not in text and "apikey" not in text


@pytest.mark.parametrize("body, words", [
    ({"options": {"status": True, "bogus": 1}}, "unknown option(s): bogus"),
    ({"options": {"a\nb": 1}}, "unknown option(s): a?b"),  # a 400, not a broken status line
    ({"options": {"status": "yes"}}, "status must be true or false"),
    ({"options": {"bank": 3, "status": True}}, "bank must be a string"),
    ({"options": {"history": True, "historyLimit": 0}}, "historyLimit must be a number"),
    ({"options": {"lastlog": True, "bank": "example", "tail": "../../etc"}}, "tail must be a number"),
    ({"options": {"lastlog": True, "bank": "example", "tail": "\u00b2"}}, "tail must be a number"),
    ({"options": {}}, "no option match"),
    ({"options": CLI_DEFAULTS}, "no option match"),
    ({"options": [1]}, '{"options": {...}}'),
    ({"options": {"update": True}}, "Bank name is missing"),
    ({"options": {"update": True, "bank": "../etc"}}, "not a bank name"),
    ({"options": {"show": True, "bank": "a,b"}}, "one bank"),
    ({"options": {"newbank": "other", "bank": "example"}}, "not supported"),
    ({"options": {"newdir": "/tmp", "bank": "example"}}, "not supported"),
    ({"options": {"search": True, "query": "x"}}, "not supported"),
    ({"options": {"datalist": True}}, "not supported"),
    ({"status": True}, "unknown field(s) status"),
    ([1, 2], "JSON object"),
])
async def test_bad_options_are_a_json_400(api, body, words):
    response = await api.call("owner", "POST", "/api/daemon", json=body)
    answer = await response.json()
    assert response.status == 400 and words in answer["error"], answer


async def test_bad_json_and_unknown_banks(api):
    response = await api.call("owner", "POST", "/api/daemon", data=b"{not json")
    assert response.status == 400 and "not valid JSON" in (await response.json())["error"]
    await cli(api, "owner", 404, update=True, bank="nobank")
    await cli(api, "owner", 404, status=True, bank="nobank")


async def test_a_wrong_key_is_refused_not_taken_for_anonymous(api):
    response = await api.client.post("/api/daemon", json={"options": {"status": True}},
                                     headers={"Authorization": "APIKEY bmj_wrong"})
    assert response.status == 401


# --- the log route ---------------------------------------------------------------------------------


async def test_the_log_route(private_bank):
    api = private_bank
    whole = await api.call("owner", "GET", "/api/daemon/bank/example/log")
    text = await whole.text()
    assert whole.status == 200 and whole.content_type == "text/plain"
    assert text.endswith("\n##END_OF_LOG") and "Workflow" in text
    tail = await (await api.call("owner", "GET", "/api/daemon/bank/example/log/2")).text()
    assert tail.splitlines()[-1] == "##END_OF_LOG" and len(tail.splitlines()) == 3
    assert text.endswith(tail)
    assert await (await api.call("owner", "GET", "/api/daemon/bank/example/log/0")).text() == text
    for who, status in (("anonymous", 404), ("user", 404), ("admin", 200)):
        assert (await api.call(who, "GET", "/api/daemon/bank/example/log")).status == status


@pytest.mark.parametrize("path", [
    "/api/daemon/bank/example/log/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/daemon/bank/example/log/-1",
    "/api/daemon/bank/example/log/1e3",
    "/api/daemon/bank/example/log/%C2%B2",  # "²": a digit to str.isdigit(), not to int()
    "/api/daemon/bank/..%2F..%2Fetc/log",
    "/api/daemon/bank/example%2F..%2F..%2Fetc/log",
    "/api/daemon/bank/.example/log",
    "/api/daemon/bank/example/log/../../../../etc/passwd",
])
async def test_the_log_route_refuses_traversal(private_bank, path):
    response = await private_bank.call("admin", "GET", path)
    text = await response.text()
    assert response.status in (400, 404), (response.status, text)
    assert "root:" not in text and "##END_OF_LOG" not in text


async def test_the_log_file_comes_from_the_store_and_stays_in_the_log_dir(private_bank):
    api = private_bank
    await api.node.store.set_status("example", {"log_file": {"status": "/etc/passwd", "progress": 0}})
    response = await api.call("admin", "GET", "/api/daemon/bank/example/log")
    text = await response.text()
    assert response.status == 404 and "outside its log directory" in text and "root:" not in text
    await cli(api, "admin", 404, lastlog=True, bank="example")


# --- REST routes -----------------------------------------------------------------------------------

# (method, path, body, expected for anonymous, user, owner, admin); the bank is private, so answered
# as an unknown bank (404) to whoever may not see it; writes need a key first (401).
MATRIX = [
    ("GET", "/api/daemon", None, (OK, OK, OK, OK)),
    ("POST", "/api/daemon", {"options": {"status": True}}, (OK, OK, OK, OK)),
    ("GET", "/api/daemon/status", None, (OK, OK, OK, OK)),
    ("GET", "/api/daemon/status/ko", None, (OK, OK, OK, OK)),
    ("GET", "/api/daemon/bank", None, (OK, OK, OK, OK)),
    ("GET", "/api/daemon/bank/example", None, (404, 404, OK, OK)),
    ("POST", "/api/daemon/bank/example", {}, (401, 404, OK, OK)),
    ("DELETE", "/api/daemon/bank/example", {"release": "9"}, (401, 404, OK, OK)),
    ("GET", "/api/daemon/bank/example/owns", None, (OK, OK, OK, OK)),
    ("GET", "/api/daemon/bank/example/check", None, (404, 404, OK, OK)),
    ("GET", "/api/daemon/bank/example/status", None, (404, 404, OK, OK)),
    ("GET", "/api/daemon/bank/example/show", None, (404, 404, OK, OK)),
    ("GET", "/api/daemon/bank/example/log", None, (404, 404, OK, OK)),
    ("GET", "/api/daemon/bank/example/log/5", None, (404, 404, OK, OK)),
    ("PUT", "/api/daemon/bank/example/cancel", None, (401, 404, OK, OK)),
    ("PUT", "/api/daemon/bank/example/owner/owner", None, (401, 404, OK, OK)),
    ("PUT", "/api/daemon/bank/example/visibility/private", None, (401, 404, OK, OK)),
    ("PUT", "/api/daemon/bank/example/name/other", None, (401, 400, 400, 400)),
    ("PUT", "/api/daemon/bank/example/move", {"path": "/tmp"}, (401, 400, 400, 400)),
    ("PUT", "/api/daemon/bank/example/repair", {}, (401, 404, OK, OK)),
    ("PUT", "/api/daemon/bank/example/publish", {}, (401, 404, OK, OK)),
    ("DELETE", "/api/daemon/bank/example/publish", None, (401, 404, OK, OK)),
    ("PUT", "/api/daemon/bank/example/freeze/1", None, (401, 404, OK, OK)),
    ("DELETE", "/api/daemon/bank/example/freeze/1", None, (401, 404, OK, OK)),
    ("GET", "/api/daemon/search", None, (OK, OK, OK, OK)),
    ("POST", "/api/daemon/aboutme", None, (401, OK, OK, OK)),
    ("GET", "/api/daemon/maintenance", None, (OK, OK, OK, OK)),
    ("POST", "/api/daemon/maintenance", None, (401, 403, 403, OK)),
    ("DELETE", "/api/daemon/maintenance", None, (401, 403, 403, OK)),
    ("GET", "/api/daemon/whatsup", None, (OK, OK, OK, OK)),
    ("GET", "/api/daemon/stats", None, (OK, OK, OK, OK)),
    ("GET", "/api/daemon/version", None, (OK, OK, OK, OK)),
    ("GET", "/api/daemon/history", None, (OK, OK, OK, OK)),
    ("GET", "/api/daemon/expose", None, (400, 400, 400, 400)),
]


def _template(path: str) -> str:
    for value, name in (("/owner/owner", "/owner/{owner}"), ("/visibility/private", "/visibility/{visibility}"),
                        ("/name/other", "/name/{name}"), ("/freeze/1", "/freeze/{release}"), ("/log/5", "/log/{tail}")):
        path = path.replace(value, name)
    return path.replace("/bank/example", "/bank/{bank}")


def test_the_matrix_covers_every_daemon_route():
    covered = {(method, _template(path)) for method, path, *_ in MATRIX}
    daemon = {(op.method, op.path) for op in api_operations() if op.path.startswith("/api/daemon")}
    assert daemon == covered
    assert all(op.tag == "biomaj3" for op in api_operations() if op.path.startswith("/api/daemon"))


@pytest.mark.parametrize("method, path, body, expected", MATRIX, ids=[f"{m} {p}" for m, p, *_ in MATRIX])
async def test_access(private_bank, method, path, body, expected):
    api = private_bank
    for who, want in zip(WHO, expected):
        kwargs = {"json": body} if body is not None else {}
        response = await api.call(who, method, path, **kwargs)
        text = await response.text()
        if response.status >= 400 or "/log" not in path:
            assert response.content_type == "application/json", (who, text)
        if want == OK:
            assert response.status not in (401, 403, 500), (who, response.status, text)
        else:
            assert response.status == want, (who, response.status, text)


async def test_rest_routes_answer_biomaj3_json(private_bank):
    api = private_bank
    banks = await (await api.call("owner", "GET", "/api/daemon/bank")).json()
    assert banks["headers"][0] == "Name" and banks["banks"][0][0] == "example"
    assert (await (await api.call("anonymous", "GET", "/api/daemon/bank")).json())["banks"] == []
    bank = await (await api.call("owner", "GET", "/api/daemon/bank/example")).json()
    assert set(bank["bank"]) == {"info", "production", "pending"}
    owns = {}
    for who in WHO:
        response = await api.call(who, "GET", "/api/daemon/bank/example/owns")
        owns[who] = (await response.json())["is_admin_or_owner"] if response.status == 200 else response.status
    assert owns == {"anonymous": 404, "user": 404, "owner": True, "admin": True}  # private: as an unknown bank
    assert (await api.call("owner", "GET", "/api/daemon/bank/nobank/owns")).status == 404
    show = await (await api.call("owner", "GET", "/api/daemon/bank/example/show?release=1")).json()
    assert show["details"][0][0] == "example"
    history = await (await api.call("owner", "GET", "/api/daemon/history?limit=1")).json()
    assert len(history["history"]) == 1
    assert (await api.call("owner", "GET", "/api/daemon/history?limit=x")).status == 400
    status = await (await api.call("anonymous", "GET", "/api/daemon/status")).json()
    assert {"status", "biomaj_services", "general_services"} <= set(status)
    assert {s["service"] for s in status["status"]} >= {"biomaj-store", "biomaj-manager"}
    assert all(s["host"] == "" for s in status["biomaj_services"] + status["general_services"])
    # the search route works (BioMAJ 3's view had the wrong signature: always a 500, W21)
    await api.call("owner", "PUT", "/api/daemon/bank/example/visibility/public")
    found = await (await api.call("anonymous", "GET", "/api/daemon/search?formats=fasta&types=nucleic")).json()
    assert found["matches"][0][:2] == ["example", "1"]
    legacy = await (await api.call("anonymous", "GET", "/api/daemon/search", json={"formats": ["fasta"]})).json()
    assert legacy["matches"][0][0] == "example"
    assert (await api.call("anonymous", "GET", "/api/daemon/search?query=x")).status == 400


async def test_rest_writes(two_releases):
    api = two_releases
    response = await api.call("owner", "PUT", "/api/daemon/bank/example/publish", json={"release": "1"})
    assert response.status == 200 and await response.json() == {"msg": None}
    assert (await api.call("owner", "DELETE", "/api/daemon/bank/example", json={})).status == 400
    assert (await api.call("owner", "DELETE", "/api/daemon/bank/example", json={"bogus\n": 1})).status == 400
    removed = await api.call("owner", "DELETE", "/api/daemon/bank/example", json={"release": "2"})
    body = await removed.json()
    assert removed.status == 200 and body["msg"].startswith("Bank removal request sent for example")
    await wait_jobs(api, body)
    update = await api.call("owner", "POST", "/api/daemon/bank/example", json={"stop_before": "download"})
    body = await update.json()
    assert update.status == 200 and body["jobs"][0]["options"] == {"stop_before": "download"}
    await wait_jobs(api, body)
    assert (await api.call("owner", "POST", "/api/daemon/bank/example", json={"publish": "yes"})).status == 400
    assert (await api.call("owner", "PUT", "/api/daemon/bank/example/visibility/secret")).status == 400
    response = await api.call("owner", "PUT", "/api/daemon/bank/example/freeze/1")
    assert response.status == 200
    assert (await api.node.store.get_bank("example"))["production"][0]["freeze"] is True
    pending = await api.call("owner", "DELETE", "/api/daemon/bank/example", json={"pending": True})
    await wait_jobs(api, await pending.json())


# --- expose (forward auth of /db) ------------------------------------------------------------------


def _basic(login: str, key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{login}:{key}".encode()).decode()}


async def test_expose_checks_visibility_on_the_normalised_path(private_bank):
    api = private_bank

    async def expose(uri: str, headers: dict | None = None) -> int:
        response = await api.client.get("/api/daemon/expose", headers={"X-Forwarded-Uri": uri, **(headers or {})})
        return response.status

    assert await expose("/db") == 200 and await expose("/db/") == 200
    assert await expose("/db/example/current/x.fasta") == 403
    assert await expose("/db/example/x", _basic("owner", api.keys["owner"])) == 200
    assert await expose("/db/example/x", _basic("admin", api.keys["admin"])) == 200
    assert await expose("/db/example/x", _basic("user", api.keys["user"])) == 403
    assert await expose("/db/example/x", _basic("user", api.keys["owner"])) == 403  # login bound to key (W31)
    assert await expose("/db/example/x", {"Authorization": "Basic !!!"}) == 403
    assert await expose("/db/nobank/x") == 403  # as a private bank: nobody tells them apart
    assert await expose("/db/nobank/../example/x") == 403  # W37: what nginx would serve
    assert await expose("/db/nobank/%2e%2e/example/x") == 403
    assert await expose("/db/../etc/passwd") == 403
    assert await expose("/elsewhere") == 403
    await api.call("owner", "PUT", "/api/daemon/bank/example/visibility/public")
    assert await expose("/db/example/x") == 200


async def test_the_openapi_document_lists_the_daemon_routes(api):
    spec = await (await api.client.get("/api/v1/openapi.json")).json()
    assert spec["paths"]["/api/daemon"]["post"]["tags"] == ["biomaj3"]
    assert "security" in spec["paths"]["/api/daemon/bank/{bank}"]["post"]
    ids = [op["operationId"] for methods in spec["paths"].values() for op in methods.values()]
    assert len(ids) == len(set(ids))
