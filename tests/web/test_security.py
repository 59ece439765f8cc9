"""Findings of the live security review (issue 17) on a real node: bodies that nest too deep or are too
large, a bank with no owner yet (the admins'), unknown and private banks told apart by nobody, no
server path in messages, the log tail read from the end, the right checked before the body."""

from __future__ import annotations

import json
import logging
import os
import random
import tracemalloc

import pytest

from biomaj.web.app import api_operations

NESTED = [b"[" * 5000 + b"]" * 5000, b'{"a":' * 5000 + b"1" + b"}" * 5000, b"[" * 33 + b"]" * 33,
          b'{"options": ' + b"[" * 5000 + b"]" * 5000 + b"}"]


def _concrete(path: str) -> str:
    return (path.replace("{bank}", "example").replace("{path:.*}", "x").replace("{tail}", "5")
            .replace("{", "").replace("}", ""))


def _json_routes() -> list[tuple[str, str]]:
    """Every documented route that takes a request body, and every POST/PUT/DELETE."""
    return [(op.method, _concrete(op.router_path)) for op in api_operations()
            if op.body is not None or op.method in ("POST", "PUT", "DELETE")]


def _json_headers(api, who: str) -> dict[str, str]:
    return {**api.headers(who), "Content-Type": "application/json"}


# --- 1: nested and huge JSON bodies ----------------------------------------------------------------


@pytest.mark.parametrize("body", NESTED, ids=["array", "object", "one-level-too-deep", "inside-options"])
async def test_a_deeply_nested_body_is_a_json_400_without_traceback(api, body, caplog):
    caplog.set_level(logging.ERROR)
    for method, path in _json_routes():
        for who in ("anonymous", "user", "admin"):
            response = await api.client.request(method, path, data=body, headers=_json_headers(api, who))
            text = await response.text()
            assert response.status < 500, (who, method, path, text)
            if response.status >= 400:  # routes that read no body may succeed
                assert json.loads(text)["status"] == response.status, (who, method, path, text)
    response = await api.call("anonymous", "POST", "/api/daemon", data=body)
    answer = await response.json()
    assert response.status == 400 and answer["error"].startswith("the body is nested too deeply"), answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_shallow_body_still_works(api):
    nested = {"options": {"status": True, "options": [[[[1]]]]}}
    response = await api.call("anonymous", "POST", "/api/daemon", json=nested)
    assert response.status == 200, await response.text()


async def test_a_huge_body_is_a_json_413_on_every_json_route(api, caplog):
    caplog.set_level(logging.ERROR)
    huge = b'{"a": "' + b"x" * (1024 * 1024) + b'"}'
    for method, path in _json_routes():
        for who in ("anonymous", "admin"):
            response = await api.client.request(method, path, data=huge, headers=_json_headers(api, who))
            answer = await response.json()
            assert response.status in (401, 403, 404, 405, 413), (who, method, path, answer)
            assert answer["status"] == response.status
    response = await api.call("anonymous", "POST", "/api/daemon", data=huge)
    assert response.status == 413 and "web.max_request_bytes" in (await response.json())["error"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


# --- 2: a bank with no owner yet is the admins' ----------------------------------------------------

CAPTURES = [
    ("POST", "/api/v1/banks/example/update", {}),
    ("PUT", "/api/v1/banks/example/visibility", {"visibility": "private"}),
    ("PUT", "/api/v1/banks/example/owner", {"owner": "user"}),
    ("POST", "/api/v1/banks/example/release-check", None),
    ("POST", "/api/daemon/bank/example", {}),
    ("PUT", "/api/daemon/bank/example/visibility/private", None),
    ("PUT", "/api/daemon/bank/example/owner/user", None),
    ("POST", "/api/daemon", {"options": {"update": True, "bank": "example"}}),
    ("POST", "/api/daemon", {"options": {"visibility": "private", "bank": "example"}}),
    ("POST", "/api/daemon", {"options": {"owner": "user", "bank": "example"}}),
]


@pytest.mark.parametrize("method, path, body", CAPTURES, ids=[f"{m} {p} {b}" for m, p, b in CAPTURES])
async def test_a_plain_user_cannot_capture_a_bank_with_no_owner(bare_api, method, path, body):
    api = bare_api
    response = await api.call("user", method, path, **({"json": body} if body is not None else {}))
    answer = await response.json()
    assert response.status == 403 and "has no owner yet" in answer["error"], answer
    assert await api.node.store.get_bank("example") is None  # no record made, no owner given
    assert await api.node.store.list_jobs(bank="example", limit=None) == []


async def test_an_admin_gives_a_bank_with_no_owner_to_a_user_who_then_owns_it(bare_api):
    api = bare_api
    owns = await (await api.call("user", "GET", "/api/daemon/bank/example/owns")).json()
    assert owns == {"is_admin_or_owner": False}
    given = await api.call("admin", "PUT", "/api/v1/banks/example/owner", json={"owner": "user"})
    assert given.status == 200, await given.text()
    response = await api.call("user", "PUT", "/api/v1/banks/example/visibility", json={"visibility": "private"})
    assert response.status == 200, await response.text()
    assert (await api.call("owner", "POST", "/api/v1/banks/example/update", json={})).status == 404  # hidden


async def test_an_admin_who_updates_a_bank_with_no_owner_becomes_its_owner(bare_api):
    api = bare_api
    response = await api.call("admin", "POST", "/api/v1/banks/example/update", json={})
    assert response.status == 202, await response.text()
    assert (await api.job_done((await response.json())["id"]))["state"] == "done"
    assert (await api.node.store.get_bank("example"))["properties"]["owner"] == "admin"
    refused = await api.call("user", "POST", "/api/v1/banks/example/update", json={})
    assert refused.status == 403 and "owned by admin" in (await refused.json())["error"]


# --- 5: unknown and private banks answer alike; no server path ---------------------------------------

HIDING_ROUTES = ["/api/v1/banks/{}", "/api/v1/banks/{}/sessions", "/api/v1/banks/{}/status", "/api/v1/banks/{}/check",
                 "/api/v1/banks/{}/show", "/api/v1/banks/{}/sessions/last/log",
                 "/api/v1/banks/{}/releases/1/provenance", "/api/daemon/bank/{}",
                 "/api/daemon/bank/{}/check", "/api/daemon/bank/{}/status", "/api/daemon/bank/{}/show",
                 "/api/daemon/bank/{}/log", "/api/daemon/bank/{}/log/5", "/api/daemon/bank/{}/owns"]


@pytest.mark.parametrize("route", HIDING_ROUTES)
async def test_a_private_bank_is_answered_as_an_unknown_one(private_bank, route):
    api = private_bank
    for who in ("anonymous", "user"):
        hidden = await api.call(who, "GET", route.format("example"))
        unknown = await api.call(who, "GET", route.format("nobank"))
        assert (hidden.status, unknown.status) == (404, 404), (who, await hidden.text(), await unknown.text())
        assert (await hidden.json())["error"] == (await unknown.json())["error"].replace("nobank", "example"), who


async def test_writes_on_a_private_bank_are_answered_as_on_an_unknown_one(private_bank):
    api = private_bank
    for method, path in (("POST", "/api/v1/banks/{}/update"), ("PUT", "/api/v1/banks/{}/visibility"),
                         ("DELETE", "/api/daemon/bank/{}"), ("PUT", "/api/daemon/bank/{}/owner/user")):
        hidden = await api.call("user", method, path.format("example"), json={})
        unknown = await api.call("user", method, path.format("nobank"), json={})
        assert (hidden.status, unknown.status) == (404, 404), path
        assert (await hidden.json())["error"] == (await unknown.json())["error"].replace("nobank", "example")


async def test_no_server_path_in_errors_nor_in_the_check_of_a_bank_never_updated(api):
    root = str(api.node.config.root)
    answers = []
    for who in ("anonymous", "user", "admin"):
        for method, path, body in (("GET", "/api/v1/banks/global/check", None), ("GET", "/api/v1/banks/nobank", None),
                                   ("GET", "/api/v1/banks/example/check", None),
                                   ("POST", "/api/v1/banks/nobank/update", {}),
                                   ("POST", "/api/daemon", {"options": {"check": True, "bank": "nobank"}}),
                                   ("POST", "/api/daemon", {"options": {"update": True, "bank": "nobank"}}),
                                   ("GET", "/api/daemon/bank/nobank/owns", None)):
            response = await api.call(who, method, path, **({"json": body} if body is not None else {}))
            answers.append((who, path, response.status, await response.text()))
    for who, path, status, text in answers:  # admins (the operators) read the check's paths as they are
        if status >= 400 or who != "admin":
            assert root not in text and "/tmp" not in text, (who, path, text)
    check = json.loads(next(text for who, path, _, text in answers if path.endswith("example/check")))
    assert check["file"] == "conf/example.properties"


async def test_a_bank_with_no_bank_file_says_so(bare_api):  # 10, the API part
    api = bare_api
    for who in ("admin", "owner"):
        response = await api.call(who, "GET", "/api/v1/banks/nobank")
        error = (await response.json())["error"]
        assert response.status == 404 and error.startswith("bank nobank: no bank file conf/nobank.properties"), error
        assert "never updated" not in error
    response = await api.call("admin", "POST", "/api/daemon", json={"options": {"update": True, "bank": "nobank"}})
    assert response.status == 404 and "no bank file conf/nobank.properties" in (await response.json())["error"]
    never = await api.call("admin", "GET", "/api/v1/banks/example")  # a bank file, no update yet
    assert never.status == 404 and "never updated" in (await never.json())["error"]


# --- 6: the log tail reads from the end ------------------------------------------------------------


@pytest.mark.parametrize("content, lines, expected", [
    (b"", 5, b""),
    (b"a\nb\nc\n", 2, b"b\nc\n"),
    (b"a\nb\nc", 2, b"b\nc"),
    (b"a\nb\nc", 9, b"a\nb\nc"),
    (b"\n\n\n", 2, b"\n\n"),
    (b"only\n", 1, b"only\n"),
    (b"x" * 10 + b"\n" + b"y" * 25 + b"\nz", 2, b"y" * 25 + b"\nz"),
])
def test_tail_of_small_files(tmp_path, content, lines, expected):
    from biomaj.web.tail import tail

    path = tmp_path / "log"
    path.write_bytes(content)
    for block in (1, 3, 8, 1 << 16):
        with path.open("rb") as handle:
            assert tail(handle, lines, block) == expected, block
            assert handle.tell() == len(content)


@pytest.mark.parametrize("content, lines, max_bytes, expected", [
    (b"aaaa\nbbbb\ncccc\n", 9, 10, b"bbbb\ncccc\n"),  # the bound falls just after a newline
    (b"aaaa\nbbbb\ncccc\n", 9, 8, b"cccc\n"),  # the line it cuts is left out
    (b"aaaa\nbbbb\ncccc\n", 1, 10, b"cccc\n"),  # the lines bound first
    (b"aaaa\nbbbb\ncccc\n", 9, 99, b"aaaa\nbbbb\ncccc\n"),
    (b"aaaa\nbbbb\ncc", 9, 6, b"cc"),
    (b"x" * 20 + b"\n", 9, 5, b""),  # one line longer than the bound
    (b"x" * 20, 9, 5, b""),
])
def test_tail_within_a_byte_bound(tmp_path, content, lines, max_bytes, expected):
    from biomaj.web.tail import tail

    path = tmp_path / "log"
    path.write_bytes(content)
    for block in (1, 3, 8, 1 << 16):
        with path.open("rb") as handle:
            assert tail(handle, lines, block, max_bytes=max_bytes) == expected, block
            assert handle.tell() == len(content)


def test_tail_of_a_big_log_reads_only_its_end(tmp_path):
    from biomaj.web.tail import tail

    path = tmp_path / "big.log"
    rng = random.Random(17)
    with path.open("wb") as out:
        written = 0
        while written < 50 * 1024 * 1024:
            line = b"%d " % written + b"x" * rng.randrange(0, 3000) + b"\n"
            out.write(line)
            written += len(line)
        long_line = b"L" * 300_000 + b"\n"  # longer than a block
        out.write(long_line + b"last line, no newline")
    reads: list[int] = []
    with open(path, "rb", buffering=0) as raw:
        handle = _Counting(raw, reads)
        got = tail(handle, 3)
    assert got.endswith(long_line + b"last line, no newline") and got.count(b"\n") == 2
    with open(path, "rb") as whole:
        expected_tail = b"\n".join(whole.read().split(b"\n")[-3:])
    assert got == expected_tail
    assert sum(reads) < 2 * 1024 * 1024, sum(reads)  # the end only, not the 50 MB


class _Counting:
    """A binary file that counts the bytes read through it."""

    def __init__(self, raw, reads: list[int]):
        self.raw, self.reads = raw, reads

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def read(self, size: int = -1) -> bytes:
        chunks = []
        while size < 0 or sum(map(len, chunks)) < size:
            chunk = self.raw.read(size - sum(map(len, chunks)) if size >= 0 else 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        self.reads.append(len(data))
        return data


async def test_the_log_routes_tail_a_big_log(private_bank):
    api = private_bank
    doc = await api.node.store.get_bank("example")
    log_file = doc["status"]["log_file"]["status"]
    with open(log_file, "ab") as out:
        out.write((b"filler " * 200 + b"\n") * 30_000)  # some 40 MB
        out.write(b"penultimate\nultimate")
    tracemalloc.start()
    try:
        v1 = await (await api.call("owner", "GET", "/api/v1/banks/example/sessions/last/log?tail=2")).read()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert v1 == b"penultimate\nultimate"
    assert peak < 8 * 1024 * 1024, peak  # not the whole 40 MB log in memory
    daemon = await (await api.call("owner", "GET", "/api/daemon/bank/example/log/2")).read()
    assert daemon == b"penultimate\nultimate\n##END_OF_LOG"


# --- 7: the right before the body -------------------------------------------------------------------


@pytest.mark.parametrize("method, path", [
    ("DELETE", "/api/daemon/bank/example"), ("POST", "/api/daemon/bank/example"),
    ("PUT", "/api/daemon/bank/example/repair"), ("PUT", "/api/daemon/bank/example/publish"),
    ("POST", "/api/v1/banks/example/update"), ("PUT", "/api/v1/banks/example/owner"),
    ("POST", "/api/v1/banks/example/verify"),
    ("PUT", "/api/v1/banks/example/visibility"), ("POST", "/api/v1/banks/example/publish"),
])
async def test_a_non_owner_is_refused_before_the_body_is_read(private_bank, method, path):
    api = private_bank
    await api.call("owner", "PUT", "/api/v1/banks/example/visibility", json={"visibility": "public"})
    for kwargs in ({}, {"data": b"{not json"}, {"json": {"bogus": 1}}):
        response = await api.call("user", method, path, **kwargs)
        assert response.status == 403, (kwargs, await response.text())
        response = await api.call("anonymous", method, path, **kwargs)
        assert response.status == 401, (kwargs, await response.text())


async def test_no_server_path_in_any_answer_to_anonymous_users(private_bank):
    """A public bank's record, sessions, status tables and UI page name no absolute server path to an
    anonymous visitor; its owner still reads BioMAJ 3's fields (data_dir) as they are."""
    api = private_bank
    response = await api.call("owner", "PUT", "/api/v1/banks/example/visibility", json={"visibility": "public"})
    assert response.status == 200, await response.text()
    root = str(api.node.config.root)
    for path in ("/api/v1/banks/example", "/api/v1/banks/example/sessions", "/api/v1/banks/example/status",
                 "/api/v1/banks?format=table", "/api/v1/status", "/ui/banks/example", "/ui/",
                 "/api/v1/banks/example/releases/1/provenance"):
        response = await api.call("anonymous", "GET", path)
        text = await response.text()
        assert response.status == 200 and root not in text and "/tmp/" not in text, (path, text[:2000])
    record = await (await api.call("owner", "GET", "/api/v1/banks/example")).json()
    assert record["production"][0]["data_dir"].startswith(root)
