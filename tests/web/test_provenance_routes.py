"""The provenance routes on a real node: a release's ro-crate-metadata.json for whoever may see
the bank, the verify job for its owner and the admins; and the RELEASE of the URL fuzzed (no
500, no file outside the release ever answered)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from biomaj.workflow import crate

PROVENANCE = "/api/v1/banks/example/releases/{}/provenance"


def release_dir(api) -> Path:
    return Path(api.node.config.root) / "data" / "example" / "example_1"


async def verify(api, who: str = "owner", **body) -> dict:
    response = await api.call(who, "POST", "/api/v1/banks/example/verify", json=body)
    assert response.status == 202, await response.text()
    return await api.job_done((await response.json())["id"], who)


async def test_the_owner_verifies_a_release_and_sees_what_changed(private_bank):
    api = private_bank
    job = await verify(api)
    assert job["state"] == "done", job
    [report] = job["result"]["details"]["releases"]
    assert report["release"] == "1" and report["ok"] and report["files"] == 3

    flat = release_dir(api) / "flat"
    (flat / "release.txt").write_text("Release 666\n")  # a hand edit
    os.remove(flat / "example.fasta")
    job = await verify(api, "admin", release="1")
    assert job["state"] == "failed"
    [report] = job["result"]["details"]["releases"]
    assert report["missing"] == ["flat/example.fasta"]
    assert [c["path"] for c in report["changed"]] == ["flat/release.txt"]
    assert "1 changed (flat/release.txt), 1 missing (flat/example.fasta)" in job["error"]


async def test_verify_names_only_a_release_of_the_bank(private_bank):
    api = private_bank
    for release in ("nope", "../../etc", "1/../..", "example_1/flat", "\x00", "é" * 300):
        response = await api.call("owner", "POST", "/api/v1/banks/example/verify", json={"release": release})
        assert response.status == 404, (release, await response.text())
        assert "no production release named" in (await response.json())["error"]
    for body in ({"release": 1}, {"all": "yes"}, {"bogus": True}):
        response = await api.call("owner", "POST", "/api/v1/banks/example/verify", json=body)
        assert response.status == 400, (body, await response.text())


async def test_the_provenance_file_is_served_to_whoever_may_see_the_bank(private_bank):
    api = private_bank
    for who in ("anonymous", "user"):
        assert (await api.call(who, "GET", PROVENANCE.format("1"))).status == 404
    for who in ("owner", "admin"):
        response = await api.call(who, "GET", PROVENANCE.format("1"))
        assert response.status == 200 and response.content_type == "application/ld+json"
        document = json.loads(await response.read())
        assert crate.problems(document) == []
    await api.call("owner", "PUT", "/api/v1/banks/example/visibility", json={"visibility": "public"})
    response = await api.call("anonymous", "GET", PROVENANCE.format("example_1"))  # by its directory name too
    assert response.status == 200
    assert await response.read() == (release_dir(api) / crate.FILE_NAME).read_bytes()

    (release_dir(api) / crate.FILE_NAME).unlink()
    response = await api.call("anonymous", "GET", PROVENANCE.format("1"))
    assert response.status == 404
    assert "has no provenance file" in (await response.json())["error"]


@pytest.mark.parametrize("release", [
    "..", "../..", "..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e", "1%2F..%2F..", "1%00", "%00", "example_1%2Fflat",
    "flat", "..%5C..", "%252e%252e%252f", "1;rm -rf", "1'\"<x>", "%C3%A9" * 100, "x" * 5000, "~root", "2",
])
async def test_a_fuzzed_release_is_a_404_never_a_file_nor_a_500(private_bank, release):
    api = private_bank
    await api.call("owner", "PUT", "/api/v1/banks/example/visibility", json={"visibility": "public"})
    (release_dir(api).parent / "secret.txt").write_text("root:x:0:0 must not leak\n")
    for who in ("anonymous", "owner", "admin"):
        response = await api.client.get(f"/api/v1/banks/example/releases/{release}/provenance",
                                        headers=api.headers(who))
        text = await response.text()
        assert response.status in (404, 400), (who, release, response.status, text[:300])
        assert "root:x:0:0" not in text and "@graph" not in text
