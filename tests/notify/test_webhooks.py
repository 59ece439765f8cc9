"""Signed webhooks against a real receiver: an aiohttp server on 127.0.0.1 (a free port) that
checks every delivery's signature with the hook's secret, as docs/notifications.md tells a
receiver to, and keeps what it got.

Deliveries, retries and the bounded stop are driven through :class:`Webhooks` itself; the events
of real updates, removals and publications of a local bank through the workflow harness
(tests/workflow/harness.py); and the whole path, secrets from the environment to the absence of
the secret in every file of the run, through a real `biomaj ctl update` process.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from biomaj.config.service import config_from_mapping, load_config
from biomaj.errors import ConfigError
from biomaj.node.build import webhooks_of
from biomaj.notify.webhooks import EVENTS, Hook, Webhooks, payload
from biomaj.workflow import runner
from tests.conftest import free_port
from tests.workflow.harness import run_cli

SECRET = "whsec-Never-Logged-7f3a9c"
BANK = "local"


# --- the receiver ----------------------------------------------------------------------------------


@dataclass
class Delivery:
    headers: dict[str, str]
    raw: bytes
    signed: bool  # the signature matches the body and the secret

    @property
    def body(self) -> dict:
        return json.loads(self.raw)

    @property
    def event(self) -> str:
        return self.headers["X-Biomaj-Event"]

    @property
    def id(self) -> str:
        return self.headers["X-Biomaj-Delivery"]


class Receiver:
    """Answers each POST with the next status of ``answers`` (then 200); with ``hold`` set,
    keeps every request waiting until the event is set."""

    def __init__(self, secret: str = SECRET, answers: list[int] | None = None, hold: asyncio.Event | None = None):
        self.secret = secret.encode()
        self.answers = list(answers or [])
        self.hold = hold
        self.deliveries: list[Delivery] = []
        self.arrived = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        expected = "sha256=" + hmac.new(self.secret, raw, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(expected, request.headers.get("X-Biomaj-Signature", ""))
        self.deliveries.append(Delivery(dict(request.headers), raw, signed))
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        return web.Response(status=self.answers.pop(0) if self.answers else 200)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hooks/{name}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    def url(self, name: str = "main") -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{name}"

    async def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self.runner is not None:
            await self.runner.cleanup()

    def events(self) -> list[str]:
        return [d.event for d in self.deliveries]


@pytest.fixture
async def receiver():
    started: list[Receiver] = []

    async def start(**options) -> Receiver:
        started.append(await Receiver(**options).start())
        return started[-1]

    yield start
    for one in started:
        await one.close()


def hook(url: str, name: str = "main", **options) -> Hook:
    return Hook(name, url, SECRET.encode(), **options)


FAST = (0.05, 0.05)  # retry delays of the tests: three tries, quickly


# --- deliveries ------------------------------------------------------------------------------------


async def test_a_delivery_is_signed_and_carries_the_summary(receiver):
    got = await receiver()
    hooks = Webhooks([hook(got.url())], retry_delays=FAST)
    session = {"id": 1700000000.5, "release": "2024-3-1", "remoterelease": "2024-3-1", "error": None,
               "changes": {"added": {"count": 2, "bytes": 10}, "against": "2024-2-1"}}
    body = payload("release.published", "alu", action="update", status="done", session=session,
                   started=1700000000.0, ended=1700000042.5, release_dir="/data/alu/alu_2024-3-1")
    [delivery_id] = hooks.send("release.published", body)
    assert await hooks.flush(5)
    await hooks.close()

    [delivery] = got.deliveries
    assert delivery.signed
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.event == "release.published" and delivery.id == delivery_id
    received = delivery.body
    assert received["event"] == "release.published" and received["delivery"] == delivery_id
    assert (received["bank"], received["release"], received["session"], received["status"]) == \
        ("alu", "2024-3-1", 1700000000.5, "done")
    assert received["changes"] == session["changes"]
    assert received["duration"] == 42.5 and received["started"] == "2023-11-14T22:13:20+00:00"
    assert received["error"] is None and received["release_dir"] == "/data/alu/alu_2024-3-1"
    # a receiver with another secret would refuse it
    forged = "sha256=" + hmac.new(b"another secret", delivery.raw, hashlib.sha256).hexdigest()
    assert forged != delivery.headers["X-Biomaj-Signature"]


def test_a_summary_without_a_change_report_has_no_changes_and_a_failure_says_why():
    session = {"id": 1.0, "release": "3", "error": {"task": "download", "message": "2 of 9 files failed"}}
    failed = payload("update.failed", "alu", action="update", status="failed", session=session)
    assert "changes" not in failed
    assert (failed["error"], failed["failed_task"]) == ("2 of 9 files failed", "download")
    assert payload("update.started", "alu", action="update", status="running", session=session)["error"] is None


async def test_a_failing_receiver_gets_the_same_delivery_again_with_back_off(receiver, caplog):
    got = await receiver(answers=[500, 503])
    hooks = Webhooks([hook(got.url())], retry_delays=FAST)
    caplog.set_level(logging.INFO, logger="biomaj.bank.alu")
    hooks.send("update.failed", payload("update.failed", "alu", action="update", status="failed"),
               log=logging.getLogger("biomaj.bank.alu"))
    assert await hooks.flush(5)
    await hooks.close()

    assert len(got.deliveries) == 3
    assert len({d.id for d in got.deliveries}) == 1  # one delivery, tried three times
    assert len({d.raw for d in got.deliveries}) == 1 and all(d.signed for d in got.deliveries)
    text = caplog.text
    assert "not delivered yet (try 1 of 3: HTTP 500" in text and "(try 2 of 3: HTTP 503" in text
    assert "Notify:webhook main (127.0.0.1): update.failed delivered" in text


async def test_a_refusal_is_not_retried_and_a_redirect_not_followed(receiver, caplog):
    got = await receiver(answers=[400, 302])
    hooks = Webhooks([hook(got.url())], retry_delays=FAST)
    hooks.send("update.started", payload("update.started", "alu", action="update", status="running"))
    assert await hooks.flush(5)
    hooks.send("update.started", payload("update.started", "alu", action="update", status="running"))
    assert await hooks.flush(5)
    await hooks.close()
    assert len(got.deliveries) == 2
    assert "try 1 of 3): HTTP 400" in caplog.text and "a redirect, not followed" in caplog.text


async def test_sending_never_waits_and_stopping_is_bounded(receiver, caplog):
    """A receiver that never answers holds no one: send returns at once, and close gives the
    delivery its bounded wait, then abandons it with a warning."""
    hold = asyncio.Event()
    got = await receiver(hold=hold)
    dead = free_port()  # nothing listens there
    hooks = Webhooks([hook(got.url(), "stuck", timeout=60), hook(f"http://127.0.0.1:{dead}/x", "dead")],
                     retry_delays=FAST)
    ids = hooks.send("release.removed", payload("release.removed", "alu", action="remove", status="done"))
    assert len(ids) == 2 and got.deliveries == []  # queued, nothing delivered yet
    await got.arrived.wait()
    await hooks.close(timeout=0.5)
    assert len(got.deliveries) == 1
    assert "Notify:webhook stuck (127.0.0.1): release.removed of alu abandoned" in caplog.text
    assert "Notify:webhook dead (127.0.0.1): release.removed not delivered" in caplog.text  # three refused tries
    assert "try 3 of 3" in caplog.text
    assert hooks.send("update.started", {"bank": "alu"}) == []  # stopped: nothing more is queued


async def test_only_the_events_of_a_hook_and_the_banks_naming_it(receiver, caplog):
    got = await receiver()
    hooks = Webhooks([hook(got.url("all"), "all", events=frozenset({"release.published"})),
                      hook(got.url("some"), "some", all_banks=False)], retry_delays=FAST)
    hooks.send("update.started", {"bank": "a"})
    hooks.send("release.published", {"bank": "a"})
    hooks.send("release.published", {"bank": "b"}, named=["some", "typo"])
    await hooks.close(5)
    sent = sorted((d.headers["X-Biomaj-Event"], d.body["bank"], d.body["delivery"] and 1) for d in got.deliveries)
    assert sent == [("release.published", "a", 1), ("release.published", "b", 1), ("release.published", "b", 1)]
    assert "notify.webhooks names typo, which config.yml's notify.webhooks does not define" in caplog.text


async def test_a_host_outside_the_allow_list_is_refused_at_delivery(receiver, caplog):
    got = await receiver()
    hooks = Webhooks([hook(got.url())], allow=["*.example.org"], retry_delays=FAST)
    hooks.send("update.started", {"bank": "alu"})
    await hooks.close(5)
    assert got.deliveries == [] and "the host is not in notify.webhook_allow" in caplog.text


# --- config.yml ------------------------------------------------------------------------------------


def notify_config(*hooks: dict, **notify) -> dict:
    return {"notify": {"webhooks": list(hooks), **notify}}


@pytest.mark.parametrize("url, words", [
    ("ftp://hooks.example.org/x", "only http:// and https:// URLs are accepted, not ftp"),
    ("file:///etc/passwd", "only http:// and https:// URLs are accepted, not file"),
    ("hooks.example.org/x", "only http:// and https:// URLs are accepted, not a URL without scheme"),
    ("https:///x", "the URL names no host"),
])
def test_a_url_other_than_http_is_refused_when_config_yml_is_loaded(tmp_path, url, words):
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(notify_config({"name": "x", "url": url, "secret": SECRET})))
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})
    assert f"{path}: notify.webhooks.0.url:" in str(refused.value) and words in str(refused.value)
    assert SECRET not in str(refused.value)


@pytest.mark.parametrize("notify, words", [
    (notify_config({"name": "x", "url": "https://a.example.org/"}), "set either secret or secret_env"),
    (notify_config({"name": "x", "url": "https://a.example.org/", "secret": SECRET, "secret_env": "X_SECRET"}),
     "set either secret or secret_env"),
    (notify_config({"name": "x", "url": "https://a.example.org/", "secret": SECRET},
                   {"name": "x", "url": "https://b.example.org/", "secret": SECRET}), "two webhooks are named x"),
    (notify_config({"name": "x", "url": "https://evil.example.net/", "secret": SECRET}, webhook_allow=["*.example.org"]),
     "webhook x: host evil.example.net is not in notify.webhook_allow"),
    (notify_config({"name": "x", "url": "https://a.example.org/", "secret": SECRET, "events": ["release.deleted"]}),
     "notify.webhooks.0.events: value error, unknown event 'release.deleted'"),
    (notify_config({"name": "x", "url": "https://a.example.org/", "secret": 123456789}), "notify.webhooks.0.secret"),
    (notify_config({"name": "x", "url": "https://a.example.org/", "secret_env": "HOOK_KEY"}),
     "HOOK_KEY: name a variable with SECRET, TOKEN, PASSWORD or CREDENTIAL in it"),
])
def test_bad_webhooks_are_refused_without_showing_their_secret(notify, words):
    with pytest.raises(ConfigError) as refused:
        config_from_mapping(notify, None, environ={})
    assert words in str(refused.value)
    assert SECRET not in str(refused.value) and "123456789" not in str(refused.value)


def test_secrets_come_from_config_yml_or_the_environment(caplog):
    config = config_from_mapping(notify_config(
        {"name": "inline", "url": "https://a.example.org/", "secret": SECRET},
        {"name": "from-env", "url": "https://b.example.org/", "secret_env": "HOOK_SECRET", "all_banks": False},
        {"name": "unset", "url": "https://c.example.org/", "secret_env": "UNSET_SECRET"},
        webhook_allow=["a.example.org", "*.example.org"]), None, environ={})
    hooks = webhooks_of(config, {"HOOK_SECRET": "from the environment"})
    assert [(h.name, h.secret, h.all_banks) for h in hooks.hooks] == [
        ("inline", SECRET.encode(), True), ("from-env", b"from the environment", False)]
    assert "webhook unset left out: its secret_env UNSET_SECRET is not set" in caplog.text
    assert SECRET not in repr(config.settings) and SECRET not in repr(hooks.hooks)
    assert set(hooks.hooks[0].events) == set(EVENTS)


# --- the workflow's events -------------------------------------------------------------------------


async def test_update_publish_remove_and_failure_send_their_events(site, receiver):
    got = await receiver()
    run_hooks = Webhooks([hook(got.url())], retry_delays=FAST)
    site.add_bank(BANK)

    def context():
        run = site.context()
        run.webhooks = run_hooks
        return run

    first = await runner.update_bank(context(), BANK, runner.UpdateOptions(publish=True))
    assert first.ok and first.updated, first.error
    await run_hooks.flush(5)
    assert got.events() == ["update.started", "release.published"]
    started, published = (d.body for d in got.deliveries)
    assert all(d.signed for d in got.deliveries)
    assert (started["bank"], started["status"], started["session"]) == (BANK, "running", first.session_id)
    assert (published["bank"], published["release"], published["status"]) == (BANK, first.release, "done")
    assert published["release_dir"] == str(first.release_dir) and published["ended"] is not None
    session = await site.session(BANK)
    assert ("changes" in published) == ("changes" in session)
    if "changes" in session:
        assert published["changes"] == session["changes"]

    # a new remote release, but the remote is gone: update.failed, with the reason
    for path in site.remote.iterdir():
        os.utime(path, (time.time() + 86400, time.time() + 86400))
    site.set(BANK, remote__dir=str(site.remote / "gone") + "/")
    failed = await runner.update_bank(context(), BANK, runner.UpdateOptions())
    assert not failed.ok
    await run_hooks.flush(5)
    assert got.events()[-2:] == ["update.started", "update.failed"]
    body = got.deliveries[-1].body
    assert body["status"] == "failed" and body["error"] == failed.error and body["failed_task"]

    # ctl publish (here: the operation it runs) and a removal
    site.set(BANK, remote__dir=str(site.remote) + "/")
    second = await runner.update_bank(context(), BANK, runner.UpdateOptions(fromscratch=True))
    assert second.ok and second.updated, second.error
    await runner.publish_bank(context(), BANK, second.release)
    await runner.unpublish_bank(context(), BANK)
    await runner.remove_bank_release(context(), BANK, first.release)
    await run_hooks.close(5)
    tail = [(d.event, d.body["action"], d.body["release"]) for d in got.deliveries[-3:]]
    assert tail == [("update.started", "update", None), ("release.published", "publish", second.release),
                    ("release.removed", "remove", first.release)]
    assert all(d.signed for d in got.deliveries)


# --- the whole path: `biomaj ctl update` -----------------------------------------------------------


def configure(root: Path, *hooks: dict, **notify) -> None:
    """config.yml of a `biomaj init` root with these webhooks and the application log in a file."""
    path = root / "config.yml"
    config = yaml.safe_load(path.read_text())
    config["notify"].update(webhooks=list(hooks), **notify)
    config["logging"].update(file="log/biomaj.log", level="DEBUG")
    path.write_text(yaml.safe_dump(config))


def files_holding(root: Path, text: str) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and text.encode() in path.read_bytes()]


async def test_ctl_update_sends_signed_events_and_never_writes_the_secret(biomaj_root, biomaj_cmd, receiver):
    got = await receiver(answers=[500])  # the first delivery is tried again
    configure(biomaj_root, {"name": "galaxy", "url": got.url("galaxy"), "secret_env": "GALAXY_HOOK_SECRET"},
              webhook_retry_delays=[0.2, 0.2])
    code, out, err = await run_cli([*biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "--json",
                                    "update", "example", "--publish"], env={"GALAXY_HOOK_SECRET": SECRET})

    assert code == 0, err
    job = json.loads(out)
    # every event arrived before the command ended, signed with the secret from the environment
    assert sorted(got.events()) == ["release.published", "update.started", "update.started"]
    assert all(d.signed for d in got.deliveries)
    first, second = [d for d in got.deliveries if d.event == "update.started"]
    assert first.id == second.id and first.raw == second.raw  # the same delivery, tried again
    [published] = [d.body for d in got.deliveries if d.event == "release.published"]
    assert (published["bank"], published["release"], published["status"]) == ("example", job["result"]["release"], "done")
    assert published["session"] == job["result"]["session_id"]
    assert files_holding(biomaj_root, SECRET) == [] and SECRET not in out + err
    app_log = (biomaj_root / "log" / "biomaj.log").read_text()
    assert "Notify:webhook galaxy (127.0.0.1): release.published delivered" in app_log
    session_log = Path(job["result"]["log_file"]).read_text()
    for event in ("update.started", "release.published"):  # their outcome comes later, in the application log
        assert f"Notify:webhook galaxy (127.0.0.1): {event} queued (delivery " in session_log


async def test_ctl_update_is_not_held_by_a_receiver_that_never_answers(biomaj_root, biomaj_cmd, receiver):
    hold = asyncio.Event()
    got = await receiver(hold=hold)
    configure(biomaj_root, {"name": "stuck", "url": got.url("stuck"), "secret": SECRET, "timeout": 120},
              {"name": "dead", "url": f"http://127.0.0.1:{free_port()}/x", "secret": SECRET},
              webhook_retry_delays=[0.1, 0.1], webhook_exit_wait=1.0)
    code, out, err = await run_cli([*biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "--json",
                                    "update", "example", "--publish"], env={})

    assert code == 0, err  # the update succeeded, and the command ended while the receiver still held on
    assert json.loads(out)["state"] == "done"
    assert not hold.is_set() and got.deliveries
    app_log = (biomaj_root / "log" / "biomaj.log").read_text()
    assert "Notify:webhook stuck (127.0.0.1): release.published of example abandoned" in app_log
    assert "Notify:webhook dead (127.0.0.1): update.started not delivered" in app_log
    assert files_holding(biomaj_root / "log", SECRET) == [] and SECRET not in out + err


# --- docs ------------------------------------------------------------------------------------------


async def test_the_receiver_of_the_docs_checks_real_deliveries(tmp_path, caplog):
    """The receiver example of docs/notifications.md, run as written: it takes a delivery signed
    with its secret (204) and refuses one signed with another (401, not tried again)."""
    caplog.set_level(logging.INFO, logger="biomaj.notify.webhooks")
    page = (Path(__file__).resolve().parents[2] / "docs" / "notifications.md").read_text()
    (tmp_path / "receiver.py").write_text(page.split("```python\n", 1)[1].split("```", 1)[0])
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(tmp_path / "receiver.py"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HOOK_SECRET": SECRET, "PORT": str(port)})
    try:
        url = f"http://127.0.0.1:{port}/"
        hooks = Webhooks([hook(url, "right"), Hook("forged", url, b"another secret")], retry_delays=(0.2,) * 20)
        hooks.send("release.published", payload("release.published", "alu", action="update", status="done",
                                                 release="2024-3-1"))
        line = await asyncio.wait_for(process.stdout.readline(), 30)  # the receiver was not up at once: tried again
        await hooks.close(30)
    finally:
        process.terminate()
        await process.wait()
    assert line.decode().split() == ["release.published", "alu", "2024-3-1", "done"]
    assert "Notify:webhook right (127.0.0.1): release.published delivered" in caplog.text
    assert "Notify:webhook forged (127.0.0.1): release.published not delivered" in caplog.text
    assert "HTTP 401" in caplog.text
