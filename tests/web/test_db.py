"""`/db/<bank>/...` on a real node: layout, visibility, Range, caching headers, HEAD, traversal,
index pages both BioMAJ parsers read, and a bank mirrored from another server's /db (the acceptance
test of HTTP read access: a mirror of a mirror, byte for byte)."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import os
from pathlib import Path

import pytest
from yarl import URL

from biomaj.config.scaffold import init_root
from biomaj.config.service import load_config
from biomaj.config.settings import HTTP_PARSE_DIR_LINE, HTTP_PARSE_FILE_LINE
from biomaj.jobs import submit_job
from biomaj.node.serve import Node
from biomaj.protocols.base import HttpParse
from biomaj.protocols.html_index import parse_index
from biomaj.web.app import api_operations
from biomaj.web.db import DbPath, Refused, Row, index_page, parse_db_path
from tests.servers.published_tree import (
    SECRET,
    mirror_bank_file,
    plant_escape_attempts,
    tree,
)
from tests.servers.published_tree import release_dir as published_release_dir

WHO = ("anonymous", "user", "owner", "admin")
OK = "ok"


async def _update(api, who: str = "owner") -> None:
    response = await api.call(who, "POST", "/api/v1/banks/example/update", json={})
    assert response.status == 202, await response.text()
    job = await api.job_done((await response.json())["id"], who)
    assert job["state"] == "done", job


@pytest.fixture
async def public_bank(api):
    """The example bank, updated and published by its owner; public (visibility.default)."""
    await _update(api)
    return api


async def release_dir(api, bank: str = "example") -> Path:
    return await published_release_dir(api.node.store, bank)


async def get(api, who: str, path: str, method: str = "GET", **kwargs):
    """A request as `who`, with more headers."""
    headers = {**api.headers(who), **kwargs.pop("headers", {})}
    return await api.client.request(method, path, headers=headers, **kwargs)


# --- layout --------------------------------------------------------------------------------------


async def test_anonymous_reads_a_public_bank(public_bank):
    api = public_bank
    release = await release_dir(api)
    assert release.name == "example_1"

    banks = await api.call("anonymous", "GET", "/db/")
    assert banks.status == 200 and banks.content_type == "text/html"
    assert [e.name for e in parse_index(await banks.text(), str(api.client.make_url("/db/")))] == ["example"]

    top = await api.call("anonymous", "GET", "/db/example/")
    entries = list(parse_index(await top.text(), str(api.client.make_url("/db/example/"))))
    assert [(e.name, e.is_dir) for e in entries] == [("current", True), ("example_1", True)]

    for prefix in ("current", "example_1"):
        listing = await api.call("anonymous", "GET", f"/db/example/{prefix}/flat/")
        assert listing.status == 200, await listing.text()
        found = {e.name: e.size for e in parse_index(await listing.text(), str(listing.url))}
        assert found == {name: len(data) for name, data in tree(release / "flat").items()}

    for name, data in tree(release).items():
        response = await api.call("anonymous", "GET", f"/db/example/current/{name}")
        assert response.status == 200 and await response.read() == data, name
        assert int(response.headers["Content-Length"]) == len(data)
        assert response.headers["Accept-Ranges"] == "bytes"
        modified = email.utils.parsedate_to_datetime(response.headers["Last-Modified"]).timestamp()
        assert 0 <= modified - (release / name).stat().st_mtime < 1  # whole seconds, rounded up


async def test_directories_without_a_slash_are_redirected(public_bank):
    api = public_bank
    for path in ("/db", "/db/example", "/db/example/current", "/db/example/current/flat"):
        location = path + "/"
        response = await api.call("anonymous", "GET", path, allow_redirects=False)
        assert (response.status, response.headers["Location"]) == (301, location), path
    assert (await api.call("anonymous", "GET", "/db/example/current/flat/release.txt/")).status == 404


async def test_unknown_banks_releases_and_files_are_404(public_bank):
    api = public_bank
    release = await release_dir(api)
    stray = release.parent / "example_2"  # a directory the store does not record (pending, offline ...)
    stray.mkdir()
    (stray / "secret.txt").write_text(SECRET)
    for path in ("/db/nope/", "/db/nope/current/x", "/db/example/example_2/secret.txt", "/db/example/example_2/",
                 "/db/example/RELEASE.txt", "/db/example/current/nope", "/db/example/1/flat/release.txt",
                 "/db/offline/", "/db/example/current/flat/nope/"):
        response = await api.call("admin", "GET", path)
        assert response.status == 404, path
        body = await response.json()
        assert body["status"] == 404 and SECRET not in body["error"]
    assert "example_2" not in await (await api.call("admin", "GET", "/db/example/")).text()


async def test_an_unpublished_bank_keeps_its_releases_but_has_no_current(public_bank):
    api = public_bank
    assert (await api.call("owner", "POST", "/api/v1/banks/example/unpublish")).status == 200
    assert (await api.call("anonymous", "GET", "/db/example/current/flat/release.txt")).status == 404
    top = await (await api.call("anonymous", "GET", "/db/example/")).text()
    assert "current/" not in top and "example_1/" in top
    assert await (await api.call("anonymous", "GET", "/db/example/example_1/flat/release.txt")).read() == b"Release 1\n"


async def test_expose_0_turns_db_off(public_bank):
    api = public_bank
    global_properties = api.node.config.global_properties
    global_properties.write_text(global_properties.read_text() + "\nexpose=0\n")
    for path in ("/db/", "/db/example/", "/db/example/current/flat/release.txt"):
        response = await api.call("admin", "GET", path)
        assert response.status == 404 and "expose=0" in (await response.json())["error"], path


# --- who may read ----------------------------------------------------------------------------------

# (method, path, expected for anonymous, user, owner, admin); the bank is private. Anonymous requests
# get the 401 challenge (mirror clients send credentials only after one) for unknown banks too.
MATRIX = [
    ("GET", "/db/", (OK, OK, OK, OK)),
    ("HEAD", "/db/", (OK, OK, OK, OK)),
    ("GET", "/db/example/", (401, 404, OK, OK)),
    ("GET", "/db/example", (401, 404, OK, OK)),
    ("GET", "/db/example/current/", (401, 404, OK, OK)),
    ("GET", "/db/example/example_1/flat/", (401, 404, OK, OK)),
    ("GET", "/db/example/current/flat/release.txt", (401, 404, OK, OK)),
    ("HEAD", "/db/example/current/flat/release.txt", (401, 404, OK, OK)),
    ("GET", "/db/example/current/flat/nope.txt", (401, 404, 404, 404)),
    ("GET", "/db/nope/", (401, 404, 404, 404)),  # unknown: answered as private, nothing tells them apart
]


def test_the_matrix_covers_every_db_route():
    covered = {(m, "/db/{bank}/{path}" if p.startswith("/db/example") else p) for m, p, _ in MATRIX}
    documented = {(op.method, op.path) for op in api_operations() if op.path.startswith("/db")}
    assert documented and documented <= covered, f"/db routes without a row in the matrix: {documented - covered}"
    assert all(getattr(op, "head", False) for op in api_operations() if op.path.startswith("/db"))


@pytest.mark.parametrize("method, path, expected", MATRIX, ids=[f"{m} {p}" for m, p, _ in MATRIX])
async def test_access(private_bank, method, path, expected):
    api = private_bank
    for who, want in zip(WHO, expected):
        response = await api.call(who, method, path, allow_redirects=False)
        if want == OK:
            assert response.status in (200, 301), (who, response.status, await response.text())
        else:
            assert response.status == want, (who, response.status, await response.text())
        if response.status == 401:
            assert "Basic" in response.headers["WWW-Authenticate"]
        if method == "HEAD":
            assert await response.read() == b""


async def test_private_banks_are_listed_to_their_owner_only(private_bank):
    api = private_bank
    assert "example/" not in await (await api.call("anonymous", "GET", "/db/")).text()
    assert "example/" not in await (await api.call("user", "GET", "/db/")).text()
    assert "example/" in await (await api.call("owner", "GET", "/db/")).text()
    assert "example/" in await (await api.call("admin", "GET", "/db/")).text()


def _basic(login: str, key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{login}:{key}".encode()).decode()}


async def test_basic_login_apikey_reads_a_private_bank(private_bank):
    """What a bank's server.credentials=login:apikey sends; the key must be the login's."""
    api = private_bank
    path = "/db/example/current/flat/release.txt"
    assert (await api.client.get(path, headers=_basic("owner", api.keys["owner"]))).status == 200
    assert (await api.client.get(path, headers=_basic("admin", api.keys["admin"]))).status == 200
    assert (await api.client.get(path, headers=_basic("user", api.keys["user"]))).status == 404
    for headers in (_basic("user", api.keys["owner"]), _basic("owner", "nope"), {"Authorization": "Basic !!"}):
        response = await api.client.get(path, headers=headers)
        assert response.status == 401 and "Release" not in await response.text(), headers
    assert (await api.client.get(path, headers={"Authorization": "APIKEY nope"})).status == 401


# --- HTTP semantics of files ---------------------------------------------------------------------


async def test_ranges(public_bank):
    api = public_bank
    data = (await release_dir(api) / "flat" / "example.fasta").read_bytes()
    path = "/db/example/current/flat/example.fasta"
    for header, start, end in (("bytes=2-5", 2, 5), ("bytes=10-", 10, len(data) - 1), ("bytes=-7", len(data) - 7,
                                                                                      len(data) - 1)):
        response = await get(api, "anonymous", path, headers={"Range": header})
        assert response.status == 206, header
        assert await response.read() == data[start:end + 1], header
        assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
        assert int(response.headers["Content-Length"]) == end - start + 1
    for header in (f"bytes={len(data)}-", f"bytes={len(data) + 10}-{len(data) + 20}"):
        response = await get(api, "anonymous", path, headers={"Range": header})
        assert response.status == 416, header
        assert response.headers["Content-Range"] == f"bytes */{len(data)}"
        assert data not in await response.read()


async def test_if_modified_since_and_head(public_bank):
    api = public_bank
    path = "/db/example/current/flat/example.fasta"
    first = await api.call("anonymous", "GET", path)
    modified = first.headers["Last-Modified"]
    again = await get(api, "anonymous", path, headers={"If-Modified-Since": modified})
    assert again.status == 304 and await again.read() == b""
    older = email.utils.format_datetime(email.utils.parsedate_to_datetime(modified).replace(year=2000), usegmt=True)
    assert (await get(api, "anonymous", path, headers={"If-Modified-Since": older})).status == 200

    head = await api.call("anonymous", "HEAD", path)
    assert head.status == 200 and await head.read() == b""
    assert head.headers["Content-Length"] == first.headers["Content-Length"]
    assert head.headers["Last-Modified"] == modified
    listing = await api.call("anonymous", "HEAD", "/db/example/current/flat/")
    assert listing.status == 200 and listing.content_type == "text/html" and await listing.read() == b""
    assert (await api.call("anonymous", "HEAD", "/db/nope/")).status == 401  # as a private bank


async def test_a_file_is_sent_as_stored_never_a_gz_sibling(public_bank):
    api = public_bank
    flat = await release_dir(api) / "flat"
    (flat / "example.fasta.gz").write_bytes(b"\x1f\x8bnot the fasta")
    response = await get(api, "anonymous", "/db/example/current/flat/example.fasta",
                         headers={"Accept-Encoding": "gzip, br"}, auto_decompress=False)
    assert "Content-Encoding" not in response.headers
    assert await response.read() == (flat / "example.fasta").read_bytes()


# --- traversal -----------------------------------------------------------------------------------


async def test_no_path_leaves_the_release(public_bank):
    api = public_bank
    root = api.node.config.root
    flat = await release_dir(api) / "flat"
    plant_escape_attempts(root, flat)

    raw = [
        "/db/example/current/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "/db/example/current/flat/%2E%2E/%2E%2E/%2E%2E/%2E%2E/secret.txt",
        "/db/example/current/flat/..%2f..%2f..%2f..%2fsecret.txt",
        "/db/example/current/flat/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.txt",
        "/db/example/%2e%2e/%2e%2e/secret.txt",
        "/db/%2e%2e/secret.txt",
        "/db/example/current/flat/..%5c..%5c..%5csecret.txt",
        "/db/example/current/flat/%00",
        "/db/example/current/flat/release.txt%00.fasta",
        "/db/example/current/%2F" + str(root / "secret.txt").lstrip("/").replace("/", "%2F"),
        "/db/example/current/" + "/" + str(root / "secret.txt").lstrip("/"),
        "/db/example/current/flat/escape",
        "/db/example/current/flat/escdir/secret.txt",
        "/db/example/current/flat/escdir/",
        "/db/example/current/flat/older/secret.txt",
        "/db/example/current/flat/.hidden",
        "/db/example/current/flat/%2ehidden",
        "/db/example/current/flat/loop",
        "/db/example/current/%2e/flat/release.txt",
        "/db/example/%2E/current/flat/release.txt",
        "/db/example/current/flat/../../../../secret.txt",  # aiohttp normalises it to /secret.txt: no route
    ]
    for path in raw:
        for method in ("GET", "HEAD"):
            response = await api.call("admin", method, URL(path, encoded=True), allow_redirects=False)
            text = await response.text()
            assert response.status in (403, 404), (method, path, response.status, text)
            assert SECRET not in text, path

    listing = await (await api.call("admin", "GET", "/db/example/current/flat/")).text()
    names = [e.name for e in parse_index(listing, str(api.client.make_url("/db/example/current/flat/")))]
    assert set(names) == {"example.fasta", "example2.fasta", "inner", "release.txt"}
    assert await (await api.call("anonymous", "GET", "/db/example/current/flat/inner")).read() == \
        (flat / "example.fasta").read_bytes()


def test_the_path_rule_shared_with_expose():
    assert parse_db_path("/db") == DbPath(None)
    assert parse_db_path("/db/") == DbPath(None, directory=True)
    assert parse_db_path("/db/alu") == DbPath("alu")
    assert parse_db_path("/db//alu/current//flat/a.fa") == DbPath("alu", "current", ("flat", "a.fa"))
    assert parse_db_path("/db/alu/alu_1/flat/").url() == "/db/alu/alu_1/flat/"
    assert DbPath("a b", "c#d", ("%",)).url() == "/db/a%20b/c%23d/%25"
    for path in ("/dbx", "/", "/api/v1/banks", "/db/..", "/db/alu/../private", "/db/alu/./current", "/db/alu/.git",
                 "/db/alu/current/a\\b", "/db/alu/current/a\x00b", "db/alu"):
        with pytest.raises(Refused):
            parse_db_path(path)


# --- the index page --------------------------------------------------------------------------------

NAMES = ["plain.fa", "with space.txt", "hash#q?.txt", "pct%41.txt", "colon:x.txt", "üñí©ødé.txt", "a&b<c>\"d'.txt",
         "line\nbreak.txt", "x" * 120]


@pytest.mark.parametrize("mode", ["auto", "biomaj3 defaults"])
def test_index_pages_parse_with_either_mode_of_the_http_protocol(mode):
    parse = HttpParse() if mode == "auto" else HttpParse(dir_line=HTTP_PARSE_DIR_LINE, file_line=HTTP_PARSE_FILE_LINE)
    rows = [Row(name, False, 1000 + i, 1_700_000_000 + 3600 * i) for i, name in enumerate(NAMES)]
    rows += [Row("sub dir", True, None, 1_700_000_000), Row("2024-01-01", True, None, 1_600_000_000)]
    page = index_page("/db/b/current/", rows)
    entries = {e.name: e for e in parse_index(page, "http://127.0.0.1:5000/db/b/current/", parse)}
    assert set(entries) == {r.name for r in rows}
    for row in rows:
        entry = entries[row.name]
        assert entry.is_dir == row.is_dir, row
        assert entry.size == row.size, row
        assert entry.mtime == row.mtime // 60 * 60, row


# --- OpenAPI ---------------------------------------------------------------------------------------


async def test_the_openapi_document_describes_db(api):
    spec = await (await api.client.get("/api/v1/openapi.json")).json()
    files = spec["paths"]["/db/{bank}/{path}"]["get"]
    assert [p["name"] for p in files["parameters"]] == ["bank", "path"] and "security" not in files
    assert "/db/" in spec["paths"]


# --- a mirror of a mirror ----------------------------------------------------------------------------

@pytest.mark.parametrize("visibility", ["public", "private"])
async def test_a_bank_mirrors_another_servers_db_byte_for_byte(api, tmp_path, visibility):
    """The acceptance test: a second biomaj mirrors the first one's published release over its /db,
    with protocol=http and no http.parse.* setting; a private bank with server.credentials=owner:apikey."""
    await _update(api)
    if visibility == "private":
        response = await api.call("owner", "PUT", "/api/v1/banks/example/visibility", json={"visibility": "private"})
        assert response.status == 200
    source = await release_dir(api)
    expected = tree(source)
    assert len(expected) >= 3

    root = tmp_path / "mirror-root"
    init_root(root, web_port=0)
    # release.credentials: remote_config(prefix="release.") does not fall back to server.credentials
    login = f"owner:{api.keys['owner']}"
    credentials = f"server.credentials={login}\nrelease.credentials={login}" if visibility == "private" else ""
    bank_file = mirror_bank_file("http", api.client.server.port, "/db/example/current/", credentials)
    (root / "conf" / "mirror.properties").write_text(bank_file)
    node = Node(load_config(root / "config.yml"), ["manager", "download", "process"])
    await node.start()
    try:
        job_id = await submit_job(node.store, node.bus, "update", "mirror", {}, "mirror-admin", admin=True)
        async with asyncio.timeout(90):
            while (job := await node.store.get_job(job_id))["state"] not in ("done", "failed", "cancelled"):
                await asyncio.sleep(0.1)
        assert job["state"] == "done", job
        doc = await node.store.get_bank("mirror")
        [entry] = doc["production"]
        assert entry["release"] == "1"
        mirrored = Path(entry["data_dir"], entry["dir_version"], entry["prod_dir"])
    finally:
        await node.stop()
    assert tree(mirrored / "flat") == expected
    for name in expected:  # the remote date is kept, to the minute the index page gives
        assert int(os.stat(mirrored / "flat" / name).st_mtime) // 60 == int(os.stat(source / name).st_mtime) // 60
