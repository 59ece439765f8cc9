"""The web UI in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright for
Python through `executable_path`) against a real `biomaj serve --all`.

What a person does: log in, see the dashboard, update the example bank and watch its progress
reach the end, open the log, freeze, unfreeze, verify and remove a release, make the bank private and
see an anonymous visitor told it is unknown; every main page at 1280 px and at a phone's 390 px without
horizontal scrolling. Screenshots of the main pages go to $BIOMAJ_TEST_ARTEFACTS (default
<tmp>/biomaj-ui-screenshots). Without Chromium or Playwright the tests skip, and fail when CI=true.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.servers.biomaj_service import biomaj_server, clean_env

pytestmark = pytest.mark.timeout(300)

USERS = {"alice": True, "bob": False}  # alice: an admin, as in the README; bob: a plain user
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-1"}
WIDE, PHONE = (1280, 900), (390, 844)


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} (required when CI=true: .ci/run installs it)")
    pytest.skip(reason)


def _chromium() -> str:
    path = shutil.which("chromium") or next((p for p in ("/usr/bin/chromium", "/usr/lib/chromium/chromium")
                                             if os.access(p, os.X_OK)), None)
    if path is None:
        _unavailable("chromium not found: apt-get install chromium")
    return path


@pytest.fixture(scope="module")
def artefacts() -> Path:
    folder = Path(os.environ.get("BIOMAJ_TEST_ARTEFACTS") or Path(tempfile.gettempdir()) / "biomaj-ui-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nweb UI screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: pip install -e '.[test]'")
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=args)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, biomaj_cmd):
    root = tmp_path_factory.mktemp("ui") / "root"
    with biomaj_server(root, biomaj_cmd, USERS) as server:
        for name, password in PASSWORDS.items():
            done = subprocess.run([*biomaj_cmd, "-c", str(server.config), "users", "passwd", name, "--password-stdin"],
                                  input=password + "\n", capture_output=True, text=True, timeout=60, env=clean_env(),
                                  check=False)
            assert done.returncode == 0, done.stderr
        yield server


class Person:
    """One browser context (its own cookies), with what the tests check on every page."""

    def __init__(self, browser, server, artefacts: Path, viewport=WIDE):
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, locale="en-GB")
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.base = server.url
        self.artefacts = artefacts
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        # a refused request is logged by the browser ("Failed to load resource"): the tests check
        # those answers themselves; any other console error is a bug of the page
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error"
                     and not m.text.startswith("Failed to load resource") else None)

    def open(self, path: str, status: int = 200):
        response = self.page.goto(self.base + path)
        assert response.status == status, (path, response.status, self.page.content()[:2000])
        return response

    def login(self, name: str) -> None:
        self.open("/ui/login")
        self.page.fill("#user", name)
        self.page.fill("#password", PASSWORDS[name])
        self.page.press("#password", "Enter")  # the keyboard: no mouse needed
        self.page.wait_for_url(self.base + "/ui/")
        assert self.page.inner_text("#current-user").startswith(name)

    def fits(self) -> None:
        width, inner = self.page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
        assert width <= inner, f"{self.page.url}: horizontal scrolling ({width} px wide in {inner} px)"

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.artefacts / f"{name}.png"), full_page=True)

    def release_row(self, release: str):
        return self.page.locator(f'#bank-data tr[data-release="{release}"]')

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors


def _update_and_watch(alice: Person, release: str) -> None:
    """Start an update from the bank page (with the keyboard) and watch the pushed progress reach
    the end."""
    page = alice.page
    page.wait_for_selector('#live[data-sse="open"]', state="attached")
    page.focus("#update-button")
    page.keyboard.press("Enter")
    page.wait_for_function("""() => { const live = document.getElementById("live");
        return live.dataset.submitted && live.dataset.job === live.dataset.submitted && live.dataset.state === "done"; }""",
                           timeout=60_000)
    assert re.search(rf"release {release} updated", page.inner_text("#live-status")), page.inner_text("#live-status")
    flash = page.locator("#flash")  # the job's "queued" message gave way to its end
    assert flash.is_hidden() or "queued" not in flash.inner_text(), flash.inner_text()
    states = page.eval_on_selector_all("#live-steps li", "items => items.map(li => li.className)")
    assert states == ["step done"] * len(states), states
    assert page.inner_text("#live-count") == "3/3 files"
    assert page.eval_on_selector("#live-files", "p => p.value === p.max")
    assert page.is_visible("#live-chart-box")  # throughput over time, drawn from the pushed events
    alice.release_row(release).wait_for()  # the releases refreshed when the job ended
    assert alice.release_row(release).get_attribute("data-state") == "published"


def test_an_operator_drives_the_example_bank(browser, server, artefacts):
    anonymous = Person(browser, server, artefacts)
    anonymous.open("/")  # redirected to the dashboard
    assert anonymous.page.url == server.url + "/ui/"
    assert "No bank to show" in anonymous.page.inner_text("#banks")

    alice = Person(browser, server, artefacts)
    page = alice.page
    alice.login("alice")
    row = page.locator('#banks tr[data-bank="example"]')
    assert "never updated" in row.inner_text()

    # the README's first update, from the dashboard: the bank page of a bank never updated
    row.locator("a").click()
    page.wait_for_url(server.url + "/ui/banks/example")
    page.click("#update-button")
    page.wait_for_selector('body[data-first-update="done"]', state="attached")  # listens again, redraws
    alice.release_row("1").wait_for(timeout=60_000)
    assert "published" in alice.release_row("1").inner_text()

    # a second release, followed live as it runs
    (server.root / "example-remote" / "release.txt").write_text("Release 2\n")
    _update_and_watch(alice, "2")
    page.locator("details#live-log-box summary").click()
    alice.shot("bank")

    # the dashboard tells the state at a glance
    alice.open("/ui/")
    row = page.locator('#banks tr[data-bank="example"]')
    assert "2" in row.locator('td[data-label="Published"]').inner_text()
    assert "current" in row.locator('td[data-label="Last update"]').inner_text()
    alice.shot("dashboard")

    # the log of the last session
    row.locator("a").click()
    page.locator("#bank-data a.log-link").first.click()
    page.wait_for_url(re.compile(r".*/sessions/.*/log$"))
    log_text = page.inner_text("#log")
    assert "Workflow:Start:download" in log_text and "release 2 updated" in log_text
    alice.shot("log")
    page.go_back()

    # freeze and unfreeze the old release, then remove it (confirmed)
    old = alice.release_row("1")
    assert old.get_attribute("data-state") == "kept"
    old.locator('button[data-action="freeze"]').click()
    page.wait_for_selector('#bank-data tr[data-release="1"][data-state="frozen"]', state="attached")
    alice.release_row("1").locator('button[data-action="unfreeze"]').click()
    page.wait_for_selector('#bank-data tr[data-release="1"][data-state="kept"]', state="attached")

    # verify the published release against its provenance file, then after a hand edit
    alice.release_row("2").locator('button[data-action="verify"]').click()
    page.wait_for_function("() => document.getElementById('flash').textContent.includes('files as recorded')",
                           timeout=30_000)
    with (server.root / "data" / "example" / "example_2" / "flat" / "release.txt").open("a") as edited:
        edited.write("a hand edit\n")
    alice.release_row("2").locator('button[data-action="verify"]').click()
    page.wait_for_selector("#flash.error", timeout=30_000)
    assert "1 changed (flat/release.txt)" in page.inner_text("#flash")
    questions: list[str] = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.accept()))
    alice.release_row("1").locator('button[data-action="remove"]').click()
    page.wait_for_selector('#bank-data tr[data-release="1"]', state="detached", timeout=60_000)
    assert questions and "Remove release 1" in questions[0]
    assert alice.release_row("2").get_attribute("data-state") == "published"

    # an action the API refuses: its error is shown as the API words it
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-button")
    page.wait_for_selector("#flash.error")
    assert "no job queued or running on bank example" in page.inner_text("#flash")

    # private: an anonymous visitor is denied it, and does not see it listed
    page.select_option("#visibility-select", "private")
    page.click("#visibility-form button")
    page.wait_for_function("() => document.getElementById('visibility')?.textContent === 'private'")
    anonymous.open("/ui/banks/example", status=404)  # as an unknown bank, with a way to log in
    assert "private bank" in anonymous.page.inner_text("#error-message")
    assert anonymous.page.locator('a[href^="/ui/login"]').count() >= 1
    anonymous.shot("private-bank-anonymous")
    anonymous.open("/ui/")
    assert anonymous.page.locator('#banks tr[data-bank="example"]').count() == 0

    # a plain user is denied it too, and has no admin pages
    bob = Person(browser, server, artefacts)
    bob.login("bob")
    bob.open("/ui/banks/example", status=404)
    assert bob.page.locator('a[href="/ui/users"]').count() == 0
    bob.open("/ui/users", status=403)

    # logging out ends the session
    page.click("header form button")
    page.wait_for_url(server.url + "/ui/")
    assert page.locator("#current-user").count() == 0
    alice.open("/ui/banks/example", status=404)  # logged out: the private bank is unknown again
    for person in (anonymous, alice, bob):
        person.close()


PAGES = [("dashboard", "/ui/"), ("nodes", "/ui/nodes"), ("users", "/ui/users"), ("schedules", "/ui/schedules"),
         ("bank", "/ui/banks/example")]


@pytest.mark.parametrize("size", [WIDE, PHONE], ids=["1280px", "390px"])
def test_main_pages_fit_the_screen(browser, server, artefacts, size):
    person = Person(browser, server, artefacts, viewport=size)
    person.open("/ui/login")
    person.fits()
    person.shot(f"login-{size[0]}")
    person.login("alice")
    page = person.page
    page.keyboard.press("Tab")  # the first stop of the keyboard: the skip link
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for name, path in PAGES:
        person.open(path)
        if name == "schedules":
            page.wait_for_selector('#schedules:not([data-state="loading"])', state="attached")
            assert page.get_attribute("#schedules", "data-state") in ("loaded", "unavailable")
        person.fits()
        person.shot(f"{name}-{size[0]}")
    logs = page.locator("#bank-data a.log-link")
    if logs.count():
        logs.first.click()
        page.wait_for_url(re.compile(r".*/log$"))
        person.fits()
        person.shot(f"log-{size[0]}")
    person.close()


def test_an_admin_manages_users_and_schedules(browser, server, artefacts):
    person = Person(browser, server, artefacts)
    person.login("alice")
    page = person.page
    person.open("/ui/users")
    page.fill("#u-name", "carol")
    page.fill("#u-password", "carol-secret-1")
    page.click("#create-user button[type=submit]")
    page.wait_for_selector("#new-key:not([hidden])")
    assert page.inner_text("#new-key-value").startswith("bmj_")  # shown once, here
    page.wait_for_selector('tr[data-user="carol"]')
    person.open("/ui/users")
    assert page.is_hidden("#new-key")  # and never again

    person.open("/ui/schedules")
    page.wait_for_selector('#schedules:not([data-state="loading"])', state="attached")
    if page.get_attribute("#schedules", "data-state") == "unavailable":
        assert "No scheduler" in page.inner_text("#schedules-status")
    else:
        page.fill("#s-name", "nightly")
        page.fill("#s-cron", "0 3 * * *")
        page.fill("#s-banks", "example")
        page.click("#schedule-form button[type=submit]")
        page.wait_for_selector('tr[data-schedule="nightly"]')
        person.shot("schedules")
        person.open("/ui/")
        assert page.locator('#banks tr[data-bank="example"] td[data-label="Next run"] time').count() == 1
    person.close()


def _post(server, path: str, who: str) -> dict:
    request = urllib.request.Request(server.url + path, data=b"{}", method="POST", headers={
        "Authorization": f"APIKEY {server.keys[who]}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_a_job_that_ends_unheard_leaves_no_running_or_queued_banner(browser, server, artefacts):
    """The page was drawn while a job ran, and the job ended while the page's event stream was
    down (it never heard the end): once the stream opens again, the page fetches the state anew
    and shows the bank idle, with the steps of its last update."""
    example = (server.root / "conf" / "example.properties").read_text()
    (server.root / "conf" / "slowbank.properties").write_text(
        example.replace("db.name=example", "db.name=slowbank").replace("dir.version=example", "dir.version=slowbank")
        .replace("offline/example_tmp", "offline/slowbank_tmp")
        + "\ndb.pre.process=META0\nMETA0=PROC0\nPROC0.name=wait\nPROC0.exe=sleep\nPROC0.args=3\n")
    alice = Person(browser, server, artefacts)
    alice.login("alice")
    page = alice.page
    page.route("**/api/v1/events*", lambda route: route.abort())  # the stream is down
    job = _post(server, "/api/v1/banks/slowbank/update", "alice")
    alice.open("/ui/banks/slowbank")
    assert page.get_attribute("#live", "data-state") in ("queued", "running")
    assert server.wait_job(job["id"], "alice")["state"] == "done"
    assert page.get_attribute("#live", "data-state") in ("queued", "running")  # nothing heard yet
    page.unroute("**/api/v1/events*")  # the stream comes back (EventSource reconnects by itself)
    page.wait_for_selector('#live[data-state="idle"]', state="attached", timeout=30_000)
    assert "last update" in page.inner_text("#live-status")
    states = page.eval_on_selector_all("#live-steps li", "items => items.map(li => li.className)")
    assert states and set(states) == {"step done"}, states
    facts = page.inner_text(".facts")
    assert "queued" not in facts and "running" not in facts, facts
    alice.close()
