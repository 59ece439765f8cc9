"""Operations on a real node: Prometheus metrics after a real update, readiness naming the backend
that fails, request logs, CORS, the request size limit, and a fuzz of the whole API from its
OpenAPI document (schemathesis) against a real server on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import tempfile
import threading
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from biomaj.errors import ConfigError
from biomaj.web.app import create_app

ORIGIN = "https://portal.example.org"


@contextlib.asynccontextmanager
async def app_with(api, **web_settings):
    """Another app on the fixture's node, with these ``web`` settings."""
    for key, value in web_settings.items():
        setattr(api.node.config.settings.web, key, value)
    async with TestClient(TestServer(create_app(api.node))) as client:
        yield client


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus text page."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(page: dict, name: str, **labels) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    matching = [v for (n, lab), v in page.items() if n == name and wanted <= set(lab)]
    assert matching, f"no sample {name}{labels}"
    return sum(matching)


async def scrape(client, headers=None) -> dict:
    response = await client.get("/metrics", headers=headers or {})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(await response.text())


async def update_example(api) -> dict:
    response = await api.call("owner", "POST", "/api/v1/banks/example/update", json={})
    assert response.status == 202, await response.text()
    job = await api.job_done((await response.json())["id"], "owner")
    assert job["state"] == "done", job
    return job


# --- metrics ----------------------------------------------------------------------------------


async def test_metrics_follow_a_real_update(api):
    before = await scrape(api.client)
    assert value(before, "biomaj_updates_total", result="done") == 0
    assert value(before, "biomaj_download_files_total", result="downloaded") == 0
    assert value(before, "biomaj_nodes", role="manager") == 1
    assert value(before, "biomaj_nodes", role="download") == 1
    assert value(before, "biomaj_nodes", role="web") == 0  # the test client serves this app, not a web role
    assert value(before, "biomaj_nodes_registered") == 1
    assert value(before, "biomaj_build_info") == 1

    await update_example(api)
    async with asyncio.timeout(10):  # the per-file events reach the app's reader task asynchronously
        while value(after := await scrape(api.client), "biomaj_download_files_total", result="downloaded") < 3:
            await asyncio.sleep(0.05)
    assert value(after, "biomaj_updates_total", result="done") == 1
    assert value(after, "biomaj_updates_total", result="failed") == 0
    assert value(after, "biomaj_jobs_total", kind="update", result="done") == 1
    assert value(after, "biomaj_job_duration_seconds_count", kind="update") == 1
    assert 0 < value(after, "biomaj_job_duration_seconds_sum", kind="update") < 60
    assert value(after, "biomaj_download_bytes_total") > 0
    assert value(after, "biomaj_download_files_total", result="failed") == 0
    assert value(after, "biomaj_jobs_active", state="queued") == value(after, "biomaj_jobs_active", state="running") == 0
    assert value(after, "biomaj_errors_total") == 0
    assert value(after, "biomaj_actor_messages_total", actor="downloader", outcome="succeeded") >= 3
    assert value(after, "biomaj_bus_queue_messages", queue="biomaj.download", state="ready") == 0
    assert value(after, "biomaj_http_requests_total", method="POST", route="/api/v1/banks/{bank}/update",
                 status="202") == 1
    assert value(after, "biomaj_metrics_source_up", source="store") == 1
    # counted once, however often it is scraped
    again = await scrape(api.client)
    assert value(again, "biomaj_updates_total", result="done") == 1
    assert value(again, "biomaj_job_duration_seconds_count", kind="update") == 1
    # public metrics carry no bank name
    text = await (await api.client.get("/metrics")).text()
    assert "example" not in text and "bank=" not in text


async def test_a_failed_update_counts_as_an_error(api):
    response = await api.call("owner", "POST", "/api/v1/banks/example/update", json={"release": "nope"})
    assert response.status == 202, await response.text()
    job = await api.job_done((await response.json())["id"], "owner")
    assert job["state"] == "failed", job
    page = await scrape(api.client)
    assert value(page, "biomaj_updates_total", result="failed") == 1
    assert value(page, "biomaj_updates_total", result="done") == 0
    assert value(page, "biomaj_errors_total", source="job") == 1


async def test_metrics_count_jobs_already_in_the_store(api):
    """A web process that starts after the updates sees them (read from the store)."""
    await update_example(api)
    async with app_with(api) as client:
        page = await scrape(client)
    assert value(page, "biomaj_updates_total", result="done") == 1


async def test_private_metrics_need_an_admin_key_and_show_banks(api):
    await update_example(api)
    async with app_with(api, metrics_public=False) as client:
        anonymous = await client.get("/metrics")
        assert anonymous.status == 401 and anonymous.headers["WWW-Authenticate"].startswith("APIKEY")
        assert (await anonymous.json())["status"] == 401
        user = await client.get("/metrics", headers=api.headers("user"))
        assert user.status == 403 and (await user.json()) == {"error": "admin rights needed", "status": 403, "exit_code": 1}
        page = await scrape(client, api.headers("admin"))
    assert value(page, "biomaj_bank_jobs_total", bank="example", kind="update", result="done") == 1
    assert value(page, "biomaj_bank_last_update_timestamp_seconds", bank="example") > 0


async def test_the_job_tracker_counts_each_finished_job_once(tmp_path, monkeypatch):
    """Jobs that finish between two reads, in any order, more of them than the read window,
    and purged jobs: each finished job is counted exactly once."""
    from biomaj.storage import open_store
    from biomaj.web.metrics import JobTracker

    monkeypatch.setattr(JobTracker, "WINDOW", 3)
    tracker = JobTracker()
    async with open_store("", tmp_path) as store:
        async def job(finish: bool = True) -> str:
            job_id = await store.add_job({"kind": "update", "bank": "b"})
            await store.claim_job("w", job_id)
            if finish:
                await store.finish_job(job_id, "done")
            return job_id

        async def read() -> list[str]:
            finished, _active = await tracker.read(store)
            ids = [j["id"] for j in finished]
            assert len(ids) == len(set(ids))
            return ids

        old_running = await job(finish=False)
        queued = await store.add_job({"kind": "update", "bank": "c"})
        first = [await job() for _ in range(5)]
        assert sorted(await read()) == sorted(first)
        later = [await job() for _ in range(7)]  # more than the window
        await store.finish_job(old_running, "failed")
        await store.cancel_job(queued)
        assert sorted(await read()) == sorted(later + [old_running, queued])
        assert await read() == []
        await store.purge_jobs(before=2e10)  # every finished job gone
        assert await read() == []
        fresh = await job()
        assert await read() == [fresh]


# --- readiness --------------------------------------------------------------------------------


async def test_ready_when_every_backend_answers(api):
    response = await api.client.get("/readyz")
    body = await response.json()
    assert response.status == 200 and body["status"] == "ok", body
    assert {name for name, check in body["checks"].items() if check["ok"]} == {"store", "bus", "state"}


async def _break_store(node):
    await node.store.close()


async def _break_bus(node):
    await node.bus.close()


async def _break_state(node):
    from biomaj.state import StateError

    async def unreachable():
        raise StateError("redis://state:6379/0 does not answer")

    node.state.nodes = unreachable


@pytest.mark.parametrize("backend, breaks", [("store", _break_store), ("bus", _break_bus), ("state", _break_state)])
async def test_readiness_names_the_backend_that_fails(api, backend, breaks):
    await breaks(api.node)
    response = await api.client.get("/readyz")
    body = await response.json()
    assert response.status == 503 and body["status"] == "unavailable", body
    failing = {name for name, check in body["checks"].items() if not check["ok"]}
    assert failing == {backend}, body
    assert body["checks"][backend]["error"]
    assert (await api.client.get("/healthz")).status == 200  # alive all the same


# --- request log ------------------------------------------------------------------------------


async def test_one_log_line_per_request_without_the_key(api, caplog):
    caplog.set_level(logging.DEBUG, logger="biomaj.web.access")
    await api.call("user", "GET", "/api/v1/me")
    await api.call("anonymous", "GET", "/api/v1/banks")
    await api.client.get("/api/v1/me", headers={"Authorization": "APIKEY bmj_not-a-key"})
    await api.client.get("/api/v1/me", headers={"X-API-KEY": api.keys["admin"]})
    await api.client.get("/healthz")
    await api.client.get("/metrics")
    await api.client.get("/nope%0AFORGED%20LINE")
    records = [r for r in caplog.records if r.name == "biomaj.web.access"]
    seen = [(r.method, r.path, r.status, r.user, r.levelno) for r in records]
    assert seen == [
        ("GET", "/api/v1/me", 200, "user", logging.INFO),
        ("GET", "/api/v1/banks", 200, "anonymous", logging.INFO),
        ("GET", "/api/v1/me", 401, "anonymous", logging.INFO),
        ("GET", "/api/v1/me", 200, "admin", logging.INFO),
        ("GET", "/healthz", 200, "anonymous", logging.DEBUG),
        ("GET", "/metrics", 200, "anonymous", logging.DEBUG),
        ("GET", "/nope%0AFORGED%20LINE", 404, "anonymous", logging.INFO),  # as sent: no forged line
    ]
    assert all(r.duration_ms >= 0 for r in records)
    assert records[0].getMessage().startswith("GET /api/v1/me 200 ")
    from biomaj.logs import JsonFormatter, TextFormatter

    written = "".join(TextFormatter().format(r) + JsonFormatter().format(r) for r in records)
    for secret in (*[k for k in api.keys.values() if k], "bmj_not-a-key", "APIKEY", "Authorization"):
        assert secret not in written


# --- CORS -------------------------------------------------------------------------------------


async def test_cors_is_off_by_default(api):
    response = await api.client.get("/api/v1/banks", headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = await api.client.options("/api/v1/banks", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in preflight.headers


async def test_cors_for_configured_origins_only(api):
    async with app_with(api, cors_origins=[ORIGIN + "/"]) as client:
        ok = await client.get("/api/v1/banks", headers={"Origin": ORIGIN})
        assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert ok.headers["Access-Control-Allow-Credentials"] == "true"
        assert "Origin" in ok.headers.getall("Vary")
        # errors too, so that the page can read the JSON error
        missing = await client.get("/api/v1/banks/nobank", headers={"Origin": ORIGIN})
        assert missing.status == 404 and missing.headers["Access-Control-Allow-Origin"] == ORIGIN
        other = await client.get("/api/v1/banks", headers={"Origin": "https://evil.example.com"})
        assert other.status == 200 and "Access-Control-Allow-Origin" not in other.headers
        assert "Origin" in other.headers.getall("Vary")
        outside_api = await client.get("/healthz", headers={"Origin": ORIGIN})
        assert "Access-Control-Allow-Origin" not in outside_api.headers

        preflight = await client.options("/api/v1/banks/example/update", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type, X-Evil"})
        assert preflight.status == 204  # no key needed for a preflight
        assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        assert preflight.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
        refused = await client.options("/api/v1/banks/example/update", headers={
            "Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"})
        assert refused.status == 405 and "Access-Control-Allow-Origin" not in refused.headers
        assert (await refused.json())["status"] == 405


async def test_cors_any_origin_never_allows_credentials(api):
    async with app_with(api, cors_origins=["*"]) as client:
        response = await client.get("/api/v1/banks", headers={"Origin": "https://anywhere.example.net"})
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in response.headers
        preflight = await client.options("/api/v1/me", headers={"Origin": "https://x.example",
                                                                "Access-Control-Request-Method": "GET"})
        assert preflight.status == 204 and "Access-Control-Allow-Credentials" not in preflight.headers


async def test_a_bad_cors_origin_is_a_config_error(api):
    api.node.config.settings.web.cors_origins = ["portal.example.org/path"]
    with pytest.raises(ConfigError, match="cors_origins"):
        create_app(api.node)


# --- request size -----------------------------------------------------------------------------


async def test_a_body_over_the_default_limit_is_a_json_413(api):
    response = await api.client.post("/api/v1/users", data=b"x" * (1024 * 1024 + 1),
                                     headers={"Content-Type": "application/json", **api.headers("admin")})
    assert response.status == 413
    assert (await response.json())["status"] == 413


async def test_the_size_limit_is_a_setting(api):
    async def chunked(size: int):
        for _ in range(size // 1000):
            yield b" " * 1000

    async with app_with(api, max_request_bytes=4096) as client:
        headers = {"Content-Type": "application/json", **api.headers("admin")}
        declared = await client.post("/api/v1/users", data=b" " * 5000, headers=headers)
        body = await declared.json()
        assert (declared.status, body["status"]) == (413, 413) and "web.max_request_bytes" in body["error"]
        streamed = await client.post("/api/v1/users", data=chunked(5000), headers=headers)
        assert streamed.status == 413 and (await streamed.json())["status"] == 413
        small = await client.post("/api/v1/users", json={"name": "bad name"}, headers=headers)
        assert small.status == 400
    async with app_with(api, max_request_bytes=4 * 1024 * 1024) as client:  # above aiohttp's 1 MiB
        padded = b'{"name": "bad name"' + b" " * (2 * 1024 * 1024) + b"}"
        big = await client.post("/api/v1/users", data=padded, headers=headers)
        assert big.status == 400 and "invalid user name" in (await big.json())["error"]


# --- fuzz -------------------------------------------------------------------------------------
# Every operation of /api/v1/openapi.json, with schemathesis' positive and negative data, as
# anonymous, as a plain user and as an admin, then deeply nested and huge JSON bodies on every
# route, against a real node served on a loopback port (the node's own web actor, in a thread with
# its own event loop: schemathesis calls are synchronous). No answer may be a 500, and every error
# must be the JSON {error, status} of the OpenAPI document.

FUZZ_EXAMPLES = int(os.environ.get("BIOMAJ_FUZZ_EXAMPLES", "25"))
SKIPPED = {"GET /api/v1/events"}  # a never-ending event stream


def _operations() -> list[str]:
    from biomaj.web.app import api_operations

    return [label for op in api_operations() if (label := f"{op.method} {op.path}") not in SKIPPED]


class ServedNode:
    """A node with the web role on 127.0.0.1:<free port>, in its own thread and event loop."""

    def __init__(self, root: Path):
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzzed-node", daemon=True)

    def __enter__(self) -> ServedNode:
        self.thread.start()
        self.node, self.keys, port = self.run(self._start())
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc_info) -> None:
        self.run(self.node.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self):
        from biomaj.auth.users import Users
        from biomaj.config.scaffold import init_root
        from biomaj.config.service import load_config
        from biomaj.node.serve import Node
        from biomaj.workflow import runner
        from biomaj.workflow.bank import RunContext

        init_root(self.root, web_port=0)
        node = Node(load_config(self.root / "config.yml"), ["manager", "download", "process", "web"])
        await node.start()
        users = Users(node.store, frozenset())
        keys = {name: (await users.create(name, admin=admin))[1]
                for name, admin in (("owner", False), ("user", False), ("admin", True))}
        # the example bank given to "owner" (a bank with no owner is the admins'): "user" is a stranger to it
        await runner.set_owner(RunContext(store=node.store, global_properties=node.config.global_properties,
                                          job_id="fuzz", user="admin", admins=frozenset({"admin"})),
                               "example", "owner")
        [web] = [actor for actor in node.actors if actor.name == "web"]
        return node, keys, web.port


@pytest.fixture(scope="module")
def served():
    import schemathesis

    with tempfile.TemporaryDirectory() as tmp, ServedNode(Path(tmp) / "root") as server:
        server.schema = schemathesis.openapi.from_url(f"{server.url}/api/v1/openapi.json")
        yield server


@pytest.mark.parametrize("label", _operations())
def test_fuzz_the_api_from_its_openapi_document(served, label):
    import hypothesis
    from hypothesis import HealthCheck, strategies as st
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import response_schema_conformance

    method, path = label.split(" ", 1)
    operation = served.schema[path][method]
    strategies = [operation.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    if "{bank}" in path:  # also reach past "no such bank" into the example bank
        strategies += [operation.as_strategy(GenerationMode.POSITIVE, path_parameters={"bank": "example"}),
                       operation.as_strategy(GenerationMode.NEGATIVE, path_parameters={"bank": "example"})]
    random = "BIOMAJ_FUZZ_EXAMPLES" in os.environ  # a longer, random run; the default is reproducible

    @hypothesis.settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=not random,
                         suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate])
    @hypothesis.given(case=st.one_of(strategies), who=st.sampled_from(["anonymous", "user", "admin"]))
    def fuzz(case, who):
        headers = {"Authorization": f"APIKEY {served.keys[who]}"} if who != "anonymous" else {}
        response = case.call(base_url=served.url, headers=headers, timeout=30)
        request = f"{who}: {case.method} {case.formatted_path} query={case.query} body={getattr(case, 'body', None)!r}"
        assert response.status_code < 500, f"{request} -> {response.status_code} {response.text[:300]}"
        if response.status_code >= 400:
            content_type = (response.headers.get("content-type") or [""])[0]
            assert content_type.startswith("application/json"), f"{request} -> {content_type}"
            error = json.loads(response.text)
            assert isinstance(error.get("error"), str) and error.get("status") == response.status_code, \
                f"{request} -> {response.text[:300]}"
            case.validate_response(response, checks=[response_schema_conformance])

    try:
        fuzz()
    except hypothesis.errors.Unsatisfiable:  # nothing to vary (no parameter, no body): nothing to find
        pass


HOSTILE_BODIES = {
    "nested arrays": b"[" * 5000 + b"]" * 5000,
    "nested objects": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "nested in a field": b'{"options": {"status": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
    "huge": b'{"release": "' + b"x" * (1024 * 1024 + 1) + b'"}',
}


@pytest.mark.parametrize("label", _operations())
def test_hostile_json_bodies_on_every_route(served, label, caplog):
    """Deeply nested and huge JSON bodies, as anonymous, a plain user and an admin: a JSON 400 or 413
    (or the route's own answer when it reads no body), never a 500, no traceback logged."""
    import requests

    method, path = label.split(" ", 1)
    url = served.url + re.sub(r"{(\w+)(:[^}]*)?}", lambda m: "example" if m.group(1) == "bank" else "x", path)
    caplog.set_level(logging.ERROR)
    for who in ("anonymous", "user", "admin"):
        headers = {"Content-Type": "application/json"}
        if who != "anonymous":
            headers["Authorization"] = f"APIKEY {served.keys[who]}"
        for name, body in HOSTILE_BODIES.items():
            response = requests.request(method, url, data=body, headers=headers, timeout=30, stream=True)
            status = response.status_code
            assert status < 500, f"{who}: {method} {url} {name} -> {status} {response.text[:300]}"
            if status >= 400 and method != "HEAD":
                error = response.json()
                assert isinstance(error.get("error"), str) and error["status"] == status, (who, name, error)
            response.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_the_fuzzed_server_never_answered_500(served):
    """Its own metrics agree: every request above, and not one answer >= 500."""
    import requests

    page = samples(requests.get(f"{served.url}/metrics", timeout=30).text)
    assert value(page, "biomaj_errors_total", source="http") == 0
    assert value(page, "biomaj_http_requests_total") >= 1


async def test_a_non_utf8_body_is_a_400(api):  # found by the fuzz
    response = await api.client.post("/api/v1/users", data=b'{"name": "\xff"}',
                                     headers={"Content-Type": "application/json", **api.headers("admin")})
    assert response.status == 400


async def test_a_newline_in_a_bank_name_is_a_404(api):  # found by the fuzz: CR/LF in an HTTP reason was a 500
    response = await api.call("admin", "GET", "/api/v1/banks/no%0Abank")
    assert response.status == 404
