"""The web UI's pages and its session cookie, through aiohttp's client against a real node: login
and logout, cookie flags, CSRF refusals, who sees which page and action, secrets never shown, the
charts drawn. Actions are the REST API's, called with the cookie and the page's CSRF token."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from urllib.parse import quote

import pytest
from aiohttp import CookieJar
from aiohttp.test_utils import TestClient, TestServer

from biomaj.web.app import create_app
from biomaj.web.auth import SESSIONS_KEY
from biomaj.web.ui import views
from biomaj.web.ui.sessions import CSRF_COOKIE, LIFETIME, SESSION_COOKIE
from biomaj.web.ui.throttle import Throttle

from .conftest import PASSWORDS, Browser, Site


def _morsel(response, name: str):
    assert name in response.cookies, (name, dict(response.headers))
    return response.cookies[name]


# --- login, logout, the cookies -----------------------------------------------------------------


async def test_root_and_ui_lead_to_the_dashboard(site: Site):
    browser = await site.browser()
    for path in ("/", "/ui"):
        response = await browser.get(path)
        assert response.status == 302 and response.headers["Location"] == "/ui/"
    text = await browser.page("/ui/")
    assert "<h1>Banks</h1>" in text and "Log in" in text


async def test_pages_carry_security_headers(site: Site):
    browser = await site.browser()
    for path in ("/ui/", "/ui/login", "/ui/static/biomaj.js", "/ui/nope"):
        response = await browser.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (await browser.get("/ui/")).headers["Cache-Control"] == "no-store"
    head = await browser.client.head("/ui/")
    assert head.status == 200


async def test_login_sets_a_signed_httponly_samesite_cookie(site: Site):
    browser = await site.browser()
    first = await browser.get("/ui/login")
    csrf = _morsel(first, CSRF_COOKIE)
    assert csrf["httponly"] and csrf["samesite"] == "Strict" and csrf["path"] == "/"
    response = await browser.login("owner", next_page="/ui/nodes")
    assert response.status == 303 and response.headers["Location"] == "/ui/nodes"
    cookie = _morsel(response, SESSION_COOKIE)
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
    assert int(cookie["max-age"]) == LIFETIME and not cookie["secure"]  # Secure over https only
    assert "owner" not in cookie.value.split(":")[1]  # the name is encoded, and the whole is signed
    assert (await (await browser.client.get("/api/v1/me")).json())["id"] == "owner"
    assert 'id="current-user">owner' in await browser.page("/ui/")


async def test_a_failed_login_says_nothing_about_which_part_was_wrong(site: Site):
    browser = await site.browser()
    wrong_password = await browser.login("owner", "not-it")
    unknown_user = await browser.login("nobody", "not-it")
    for response in (wrong_password, unknown_user):
        assert response.status == 401
        assert "Wrong user name or password." in await response.text()
        assert SESSION_COOKIE not in response.cookies
    assert (await browser.client.get("/api/v1/me")).status == 401


async def _post_login(client, name: str, password: str, csrf: str, forwarded_for: str | None = None):
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return await client.post("/ui/login", allow_redirects=False, headers=headers,
                             data={"user": name, "password": password, "csrf_token": csrf, "next": "/ui/"})


async def test_failed_logins_slow_down_guessing_and_never_lock_the_right_password_out(site: Site):
    site.server.app[SESSIONS_KEY].throttle = Throttle(max_delay=0.3)
    browser = await site.browser()
    await browser.page("/ui/login")
    for attempt in range(12):  # more than the old lock-out's 10
        if attempt:
            await asyncio.sleep(0.3)  # each failure's back-off: short, however many came before
        assert (await _post_login(browser.client, "owner", "bad", browser.csrf)).status == 401, attempt
    refused = await _post_login(browser.client, "owner", PASSWORDS["owner"], browser.csrf)  # within the back-off
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    assert "Too many failed logins: try again in 1 second." in await refused.text()
    await asyncio.sleep(0.3)  # the back-off is short, however many failures came before
    assert (await _post_login(browser.client, "owner", PASSWORDS["owner"], browser.csrf)).status == 303
    other = await site.browser()
    assert (await other.login("admin")).status == 303  # another user is not held back


def test_the_login_back_off_is_short_and_the_throttle_table_bounded():
    throttle = Throttle(max_entries=100)
    key = ("203.0.113.7", "owner")
    delays = [throttle.failed(key) for _ in range(1000)]
    assert delays[0] <= 1 and delays == sorted(delays) and max(delays) <= 5
    assert 0 < throttle.wait(key) <= 5
    throttle.succeeded(key)
    assert throttle.wait(key) == 0
    for i in range(10_000):  # a flood of names and addresses
        throttle.failed((f"198.51.{i // 256}.{i % 256}", f"name-{i}"))
    assert len(throttle) <= 100


async def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(site: Site):
    browser = await site.browser()
    await browser.page("/ui/login")
    # no trusted proxy (the default): the header is the client's to forge, the peer address counts
    assert (await _post_login(browser.client, "owner", "bad", browser.csrf, "203.0.113.1")).status == 401
    refused = await _post_login(browser.client, "owner", PASSWORDS["owner"], browser.csrf, "203.0.113.2")
    assert refused.status == 429
    # behind a trusted proxy, each client behind it has its own back-off
    site.node.config.settings.web.trusted_proxies = ["127.0.0.0/8", "::1"]
    proxied = TestServer(create_app(site.node))
    await proxied.start_server()
    try:
        behind = Browser(TestClient(proxied, cookie_jar=CookieJar(unsafe=True)))
        await behind.client.start_server()
        await behind.page("/ui/login")
        chain = "198.51.100.9, 203.0.113.1"  # what the client sent, then what the proxy saw
        assert (await _post_login(behind.client, "owner", "bad", behind.csrf, chain)).status == 401
        assert (await _post_login(behind.client, "owner", PASSWORDS["owner"], behind.csrf, chain)).status == 429
        neighbour = await _post_login(behind.client, "owner", PASSWORDS["owner"], behind.csrf, "203.0.113.2")
        assert neighbour.status == 303
        await behind.client.close()
    finally:
        await proxied.close()


def test_trusted_proxies_must_be_addresses_or_networks():
    from biomaj.config.service import WebSettings

    assert WebSettings().trusted_proxies == []
    assert WebSettings(trusted_proxies=["10.0.0.0/8", "::1", "192.0.2.1"]).trusted_proxies
    with pytest.raises(ValueError, match="trusted_proxies"):
        WebSettings(trusted_proxies=["proxy.example.org"])


async def test_login_needs_the_csrf_token_and_never_redirects_elsewhere(site: Site):
    browser = await site.browser()
    await browser.page("/ui/login")
    response = await browser.client.post("/ui/login", allow_redirects=False,
                                         data={"user": "owner", "password": PASSWORDS["owner"]})
    assert response.status == 403 and "CSRF" in await response.text()
    assert response.content_type == "text/html"
    for target in ("https://evil.example/", "//evil.example/ui/", "/api/v1/me", "/ui\\..\\x"):
        response = await browser.login("owner", next_page=target)
        assert response.headers["Location"] == "/ui/", target


NEXT_TARGETS = {  # the next field of the login form -> where the login leads
    "/ui/nodes": "/ui/nodes", "/ui/banks/example?x=1": "/ui/banks/example?x=1",
    "/ui/nodes\r\nSet-Cookie: evil=1": "/ui/", "/ui/nodes\n": "/ui/", "/ui/\r": "/ui/", "\r\n": "/ui/",
    "//evil.example": "/ui/", "///evil.example": "/ui/", "/ui//evil.example": "/ui/", "https://evil.example/ui/": "/ui/",
    "javascript:alert(1)": "/ui/", "/\\evil.example": "/ui/", "/ui/\\evil": "/ui/", "/ui/\tx": "/ui/",
    "/ui/\u2028x": "/ui/", "/ui/\x85x": "/ui/", "/ui/../api/v1/me": "/ui/", "/ui/%2e%2e/api": "/ui/",
    "/ui/banks/b\u00e4nk": "/ui/banks/b%C3%A4nk", "/ui/\u0101\U0001f600": "/ui/%C4%81%F0%9F%98%80",
    "/ui/" + "a" * 100_000: "/ui/", "": "/ui/", "ui/": "/ui/",
}


async def test_login_leads_only_to_a_safe_local_page(site: Site, caplog):
    browser = await site.browser()
    for target, expected in NEXT_TARGETS.items():
        response = await browser.login("owner", next_page=target)
        assert response.status == 303, (target[:40], response.status)
        assert response.headers["Location"] == expected, target[:40]
        page = await browser.get(f"/ui/login?next={quote(target[:4000], safe='')}")
        assert page.status == 200 and response.headers["Location"] in await page.text()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_logout_clears_the_cookie(site: Site):
    browser = await site.browser("owner")
    response = await browser.client.post("/ui/logout", allow_redirects=False, data={"csrf_token": browser.csrf})
    assert response.status == 303
    assert _morsel(response, SESSION_COOKIE)["max-age"] == "0"
    assert (await browser.client.get("/api/v1/me")).status == 401
    refused = await browser.client.post("/ui/logout", allow_redirects=False)  # anonymous: harmless
    assert refused.status == 303


async def test_a_cookie_that_does_not_verify_is_anonymous(site: Site):
    browser = await site.browser("owner")
    good = next(c for c in browser.client.session.cookie_jar if c.key == SESSION_COOKIE).value
    version, user, expiry, nonce, signature = good.split(":")
    stranger = await site.browser()
    for forged in (f"{version}:{user}:{int(expiry) + 3600}:{nonce}:{signature}",  # a longer life
                   f"{version}:YWRtaW4:{expiry}:{nonce}:{signature}",  # another user (admin)
                   "v1:b3duZXI:1:abc:def", "garbage"):
        stranger.client.session.cookie_jar.update_cookies({SESSION_COOKIE: forged})
        assert (await stranger.client.get("/api/v1/me")).status == 401, forged
    assert (await browser.client.get("/api/v1/me")).status == 200


async def test_a_new_password_or_a_deleted_user_ends_the_sessions(site: Site):
    from biomaj.auth.users import Users

    owner, user = await site.browser("owner"), await site.browser("user")
    users = Users(site.node.store)
    await users.set_password("owner", "another-one-1")
    await users.delete("user")
    assert (await owner.client.get("/api/v1/me")).status == 401
    assert (await user.client.get("/api/v1/me")).status == 401


async def test_expired_sessions_end(site: Site, monkeypatch):
    browser = await site.browser("owner")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + LIFETIME + 60)
    assert (await browser.client.get("/api/v1/me")).status == 401


# --- CSRF on the API when the cookie authenticates -------------------------------------------------


async def test_state_changes_with_the_cookie_need_the_csrf_token(site: Site):
    browser = await site.browser("admin")  # a bank with no owner yet is the admins'
    refused = await browser.api("POST", "/api/v1/banks/example/update", json={}, csrf=False)
    assert refused.status == 403 and "CSRF" in (await refused.json())["error"]
    browser_token, browser.csrf = browser.csrf, "forged-token"
    assert (await browser.api("POST", "/api/v1/banks/example/update", json={})).status == 403
    browser.csrf = browser_token
    assert not await site.node.store.list_jobs(bank="example")  # nothing was queued
    accepted = await browser.api("POST", "/api/v1/banks/example/update", json={})
    assert accepted.status == 202, await accepted.text()
    # the token of another browser does not fit this one
    other = await site.browser("owner")
    browser.csrf = other.csrf
    assert (await browser.api("POST", "/api/v1/banks/example/cancel")).status == 403
    # an API key needs no token (a browser never sends one on its own), even beside the cookie
    keyed = await browser.client.post("/api/v1/banks/example/cancel",
                                      headers={"Authorization": f"APIKEY {site.keys['admin']}"})
    assert keyed.status in (200, 404), await keyed.text()


async def test_reads_and_events_work_with_the_cookie(updated: Site):
    browser = await updated.browser("owner")
    response = await browser.client.get("/api/v1/events?bank=example&log=true")
    assert response.status == 200 and response.content_type == "text/event-stream"
    assert (await response.content.readline()).startswith(b": biomaj job events")
    response.close()
    assert (await browser.client.get("/api/v1/banks/example/sessions/last/log")).status == 200


# --- who sees what -------------------------------------------------------------------------------

PAGES = {  # path -> status for anonymous, user, owner, admin (the example bank is private)
    "/ui/": (200, 200, 200, 200),
    "/ui/banks/example": (404, 404, 200, 200),  # a private bank is an unknown one to others
    "/ui/banks/example/sessions/last/log": (404, 404, 200, 200),
    "/ui/nodes": (303, 200, 200, 200),
    "/ui/schedules": (303, 403, 403, 200),
    "/ui/users": (303, 403, 403, 200),
    "/ui/banks/nope": (404, 404, 404, 404),
}


async def test_who_may_see_which_page(updated: Site):
    owner = await updated.browser("owner")
    response = await owner.api("PUT", "/api/v1/banks/example/visibility", json={"visibility": "private"})
    assert response.status == 200, await response.text()
    people = {"anonymous": await updated.browser(), **{who: await updated.browser(who) for who in ("user", "owner", "admin")}}
    for path, expected in PAGES.items():
        for (who, browser), want in zip(people.items(), expected):
            response = await browser.get(path)
            assert response.status == want, (path, who, response.status)
            if want == 303:
                assert response.headers["Location"].startswith("/ui/login?next=")
            else:
                assert response.content_type == "text/html"
    dashboards = {who: await browser.page("/ui/") for who, browser in people.items()}
    assert 'data-bank="example"' not in dashboards["anonymous"] and 'data-bank="example"' not in dashboards["user"]
    assert 'data-bank="example"' in dashboards["owner"] and 'data-bank="example"' in dashboards["admin"]
    private = await people["anonymous"].page("/ui/banks/example", 404)
    unknown = await people["anonymous"].page("/ui/banks/nope", 404)
    assert private.replace("example", "nope") == unknown and "Log in" in private  # nothing tells them apart


async def test_actions_are_offered_to_owners_and_admins_only(updated: Site):
    forms = re.compile(r'id="(update-form|cancel-form|unpublish-form|visibility-form)"')
    for who, offered in (("anonymous", False), ("user", False), ("owner", True), ("admin", True)):
        browser = await updated.browser(None if who == "anonymous" else who)
        text = await browser.page("/ui/banks/example")  # public
        assert bool(forms.search(text)) is offered, who
        assert ('data-action="freeze"' in text) is offered, who
        assert ('data-action="verify"' in text) is offered, who
    # and the API refuses them to others whatever the page shows
    user = await updated.browser("user")
    refused = await user.api("POST", "/api/v1/banks/example/releases/1/freeze")
    assert refused.status == 403


async def test_a_bank_never_updated_is_shown_to_users_only_and_is_the_admins(site: Site):
    """A bank with no owner yet is the admins' (docs/api.md): a plain user sees it, with no action."""
    anonymous, user = await site.browser(), await site.browser("user")
    assert 'data-bank="example"' not in await anonymous.page("/ui/")
    await anonymous.page("/ui/banks/example", 404)
    dashboard = await user.page("/ui/")
    assert 'data-bank="example"' in dashboard and "never updated" in dashboard
    page = await user.page("/ui/banks/example")
    assert "no owner yet" in page and 'id="actions"' not in page and 'id="update-form"' not in page
    page = await (await site.browser("admin")).page("/ui/banks/example")
    assert 'id="update-form"' in page and 'data-first-update="1"' in page


async def test_ui_errors_are_pages_and_api_errors_stay_json(site: Site):
    browser = await site.browser()
    page = await browser.get("/ui/banks/nope/sessions/1/log")
    assert page.status == 404 and page.content_type == "text/html"
    assert "<h1>Not found</h1>" in await page.text()
    missing = await browser.get("/ui/no/such/page")
    assert missing.status == 404 and missing.content_type == "text/html"
    api = await browser.client.get("/api/v1/banks/nope")
    assert api.status == 404 and api.content_type == "application/json"
    key = await browser.client.get("/ui/", headers={"Authorization": "APIKEY wrong"})
    assert key.status == 401 and key.content_type == "text/html"


# --- what the pages show -------------------------------------------------------------------------


async def test_bank_page_shows_releases_sessions_charts_and_live_panel(updated: Site):
    browser = await updated.browser("owner")
    text = await browser.page("/ui/banks/example")
    assert 'data-release="1" data-state="published"' in text
    assert text.count('<svg class="chart"') == 2 and 'role="img"' in text and '<rect class="bar ok"' in text
    assert "Size of each release of example" in text and "Duration of the recent updates" in text
    assert 'id="live"' in text and 'data-events="/api/v1/events?bank=example&amp;log=true"' in text
    for task in ("init", "release", "download", "publish", "over"):
        assert f'data-step="{task}"' in text
    assert re.search(r'class="step done"[^>]*><span class="name">download</span>', text)
    assert 'class="log-link"' in text and "<time datetime=" in text


def _live_panel(page: str) -> str:
    start = page.index('<section id="live"')
    return page[start:page.index("</section>", start)]


def _step_states(live: str) -> dict[str, str]:
    return dict(re.findall(r'<li data-step="([^"]+)" class="step ([a-z-]+)"', live))


async def test_an_idle_bank_shows_the_steps_of_its_last_update(updated: Site):
    browser = await updated.browser("owner")
    live = _live_panel(await browser.page("/ui/banks/example"))
    doc = await updated.node.store.get_bank("example")
    session = views.session_of(doc, doc["last_update_session"])
    assert session["status"] and all(session["status"].values())
    assert 'data-state="idle"' in live and "last update" in live and "pending" not in live
    assert _step_states(live) == dict.fromkeys(session["status"], "done")
    # a failed update: each step as it ended
    (updated.node.config.root / "example-remote" / "release.txt").write_text("no release here\n")
    response = await browser.api("POST", "/api/v1/banks/example/update", json={})
    assert (await updated.job_done((await response.json())["id"]))["state"] == "failed"
    live = _live_panel(await browser.page("/ui/banks/example"))
    steps = _step_states(live)
    assert (steps["init"], steps["release"], steps["download"], steps["over"]) == ("done", "failed", "not-run", "not-run")
    assert 'data-state="idle"' in live and "pending" not in live and "failed" in live


async def test_a_bank_never_updated_says_so_in_its_live_panel(site: Site):
    live = _live_panel(await (await site.browser("user")).page("/ui/banks/example"))
    assert 'data-state="idle"' in live and "never been updated" in live


async def test_the_queued_state_ends_with_the_job(updated: Site):
    """A job queued when the page is drawn shows as queued; once it ended (here cancelled before
    it ran), the page's state (what the script fetches again when a job ends or its event stream
    opens) is idle, with no queued banner left."""
    job_id = await updated.node.store.add_job({"kind": "update", "bank": "example", "options": {}, "user": "owner",
                                               "admin": False}, dedup_key="update:example")
    owner = await updated.browser("owner")
    page = await owner.page("/ui/banks/example")
    live = _live_panel(page)
    assert 'data-state="queued"' in live and "update queued" in live
    assert '<span class="badge queued">queued</span>' in page
    assert set(_step_states(live).values()) == {"pending"}  # the queued update's steps, not the last one's
    cancelled = await owner.api("POST", "/api/v1/banks/example/cancel")
    assert cancelled.status == 200, await cancelled.text()
    assert (await updated.node.store.get_job(job_id))["state"] == "cancelled"
    page = await owner.page("/ui/banks/example")
    live = _live_panel(page)
    assert 'data-state="idle"' in live and "queued" not in live and "badge queued" not in page
    assert set(_step_states(live).values()) == {"done"}


async def test_the_log_page_shows_the_session_log(updated: Site):
    browser = await updated.browser("owner")
    doc = await updated.node.store.get_bank("example")
    session = doc["sessions"][-1]["id"]
    text = await browser.page(f"/ui/banks/example/sessions/{session}/log")
    assert "Workflow:Start:download" in text and "release 1 updated" in text
    assert f'data-url="/api/v1/banks/example/sessions/{session}/log"' in text
    await browser.page("/ui/banks/example/sessions/12345/log", 404)


async def test_the_configuration_hides_secrets(site: Site):
    conf = site.node.config.root / "conf" / "example.properties"
    conf.write_text(conf.read_text() + "\nserver.credentials=anonymous:SuperSecret42\nmy.ftp.password=Hunter2Secret\n"
                    "proxy=http://me:ProxyPw9@proxy.example:3128\nwebhook.api_key=KeyKeyKey77\n")
    browser = await site.browser("owner")
    text = await browser.page("/ui/banks/example")
    for secret in ("SuperSecret42", "Hunter2Secret", "ProxyPw9", "KeyKeyKey77"):
        assert secret not in text
    assert text.count("(hidden)") >= 4
    assert "remote.files" in text and "keep.old.version" in text  # the rest is shown


async def test_the_dashboard_shows_a_failure_with_its_step_and_message(updated: Site):
    (updated.node.config.root / "example-remote" / "release.txt").write_text("no release here\n")
    owner = await updated.browser("owner")
    response = await owner.api("POST", "/api/v1/banks/example/update", json={})
    job = await updated.job_done((await response.json())["id"])
    assert job["state"] == "failed"
    text = await owner.page("/ui/")
    row = text[text.index('data-bank="example"'):]
    assert 'class="result-failed"' in text and '<span class="badge failed">failed</span>' in row
    assert "at <strong>release</strong>: release.regexp=" in row
    assert "<strong>1</strong>" in row  # release 1 stays published
    assert '<span class="badge failed">1 failed</span>' in text


async def test_the_dashboard_shows_the_next_scheduled_run(updated: Site):
    await updated.node.store.put_schedule("nightly", {
        "kind": "cron", "cron": "0 3 * * *", "banks": ["example"], "user": "owner", "created": time.time(),
        "created_by": "admin", "last_run": None, "last_fired": None, "last_result": None, "last_jobs": {}})
    text = await (await updated.browser("owner")).page("/ui/")
    row = text[text.index('data-bank="example"'):]
    next_run = row[row.index('data-label="Next run"'):row.index('data-label="Access"')]
    assert "<time datetime=" in next_run


async def test_nodes_and_users_pages(updated: Site):
    admin = await updated.browser("admin")
    nodes = await admin.page("/ui/nodes")
    assert updated.node.node_id in nodes and "manager" in nodes
    users = await admin.page("/ui/users")
    for name in ("owner", "user", "admin"):
        assert f'data-user="{name}"' in users
    assert "$argon2" not in users and "hashed_password" not in users
    created = await admin.api("POST", "/api/v1/users", json={"name": "newcomer", "password": "pw-12345"})
    assert created.status == 201 and (await created.json())["api_key"].startswith("bmj_")
    newcomer = await updated.browser()
    assert (await newcomer.login("newcomer", "pw-12345")).status == 303


# --- the pure parts --------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value, hidden", [
    ("server.credentials", "a:b", True), ("mail.password", "x", True), ("db.api.key", "x", True),
    ("irods.secret", "x", True), ("proxy", "http://u:p@host", True), ("remote.dir", "/pub/", False),
    ("keep.old.version", "1", False), ("db.fullname", "x", False)])
def test_which_properties_are_hidden(key, value, hidden):
    assert views.is_hidden(key, value) is hidden


def test_durations_read_well():
    assert [views.duration_text(s) for s in (0.04, 42, 185, 7260, None)] == ["0.0 s", "42 s", "3 min 5 s",
                                                                              "2 h 1 min", ""]


def test_a_job_that_failed_before_any_session_is_the_last_run():
    doc = {"name": "b", "sessions": [{"id": 100.0, "last_update_time": 110.0, "workflow_status": True, "status": {}}],
           "last_update_session": 100.0}
    failed = {"kind": "update", "state": "failed", "started": 200.0, "finished": 201.0,
              "error": "bank file invalid", "result": None}
    run = views.last_run(doc, [failed])
    assert (run.result, run.message, run.at) == ("failed", "bank file invalid", 201.0)
    assert views.last_run(doc, []).result == "ok"
    running = {"kind": "update", "state": "running", "id": "j", "started": 300.0}
    assert views.last_run(doc, [running, failed], {"step": "download"}).step == "download"



def test_the_log_page_shows_the_end_of_a_log_in_whole_lines(tmp_path, monkeypatch):
    from biomaj.web.ui import pages

    monkeypatch.setattr(pages, "LOG_TAIL_BYTES", 100)
    monkeypatch.setattr(pages, "LOG_TAIL_LINES", 3)
    log = tmp_path / "session.log"
    log.write_bytes(b"first\r\nsecond\n")
    assert pages._tail(log) == ("first\nsecond", False)
    log.write_bytes(b"".join(b"line %d\n" % n for n in range(5)))
    assert pages._tail(log) == ("line 2\nline 3\nline 4", True)  # the lines bound
    log.write_bytes(b"x" * 150 + b"\n" + b"y" * 60 + b"\nz")
    assert pages._tail(log) == ("y" * 60 + "\nz", True)  # the bytes bound: no partial first line


async def test_bank_page_and_api_show_where_releases_are_published(updated: Site):
    record = {"url": "s3://127.0.0.1:9000/banks/mirror/example/example_1/",
              "marker": "s3://127.0.0.1:9000/banks/mirror/example/current", "complete": True, "current": True,
              "at": 1796650000.0, "files": 4, "size": 434}
    assert await updated.node.store.update_production("example", "1", {"buckets": [record]})  # as publish.s3 records it
    browser = await updated.browser("user")
    text = await browser.page("/ui/banks/example")
    assert '<th scope="col">Bucket</th>' in text
    assert re.search(r'<td data-label="Bucket"><div class="bucket"><code>s3://127\.0\.0\.1:9000/banks/mirror/example/'
                     r'example_1/</code> <span class="badge published">current</span></div></td>', text)
    answer = await (await browser.api("GET", "/api/v1/banks/example")).json()
    assert answer["production"][0]["buckets"] == [record]
    tables = (await (await browser.api("GET", "/api/v1/banks/example?format=table")).json())["tables"]
    assert tables[-1]["title"] == "Published to buckets" and tables[-1]["rows"][0][:4] == ["1", record["url"], "yes", "yes"]
