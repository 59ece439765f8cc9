"""The change reports in the REST API, on a real node: ``/api/v1/banks/{bank}/changes`` (records and
tables, with the requester's visibility), the ``changes`` of the sessions and of the bank's
productions, and a dry run asked through ``POST .../update`` and through biomaj-cli's
``/api/daemon``. The example bank of `biomaj init` is updated for real from its local tree."""

from __future__ import annotations

from pathlib import Path

from tests.web.conftest import Api


def remote(api: Api) -> Path:
    return Path(api.node.config.root) / "example-remote"


def second_release(api: Api) -> None:
    """Release 2: example.fasta changed, example2.fasta.gz removed, example3.fasta added."""
    tree = remote(api)
    (tree / "release.txt").write_text("Release 2\n")
    (tree / "example.fasta").write_text(">seq1 changed\nACGT\n")
    (tree / "example2.fasta.gz").unlink()
    (tree / "example3.fasta").write_text(">seq3\nTTTT\n")


async def update(api: Api, **options) -> dict:
    response = await api.call("owner", "POST", "/api/v1/banks/example/update", json=options)
    assert response.status == 202, await response.text()
    job = await api.job_done((await response.json())["id"], "owner")
    assert job["state"] == "done", job
    return job


async def get(api: Api, who: str, path: str, status: int = 200):
    response = await api.call(who, "GET", path)
    assert response.status == status, await response.text()
    return await response.json()


async def test_changes_of_each_release_as_records_tables_sessions_and_bank(api: Api):
    await update(api)
    first_sizes = {p.name: p.stat().st_size for p in remote(api).iterdir()}
    second_release(api)
    await update(api)

    records = await get(api, "anonymous", "/api/v1/banks/example/changes")
    assert [(r["release"], r["state"], r["against"]) for r in records] == [("1", "production", None),
                                                                           ("2", "published", "1")]
    first, second = records
    assert first["added"] == {"count": 3, "bytes": sum(first_sizes.values())}
    assert first["files"]["added"] == ["example.fasta", "example2.fasta.gz", "release.txt"]
    assert second["files"] == {"added": ["example3.fasta"], "removed": ["example2.fasta.gz"],
                               "changed": ["example.fasta", "release.txt"]}
    tree = remote(api)
    assert second["added"] == {"count": 1, "bytes": (tree / "example3.fasta").stat().st_size}
    assert second["removed"] == {"count": 1, "bytes": first_sizes["example2.fasta.gz"]}
    assert second["changed"] == {"count": 2, "bytes": sum((tree / n).stat().st_size
                                                          for n in ("example.fasta", "release.txt"))}
    assert second["unchanged"] == {"count": 0, "bytes": 0} and second["dry_run"] is False

    only = await get(api, "anonymous", "/api/v1/banks/example/changes?release=2")
    assert only == [second]
    missing = await get(api, "anonymous", "/api/v1/banks/example/changes?release=9", status=404)
    assert "no release 9" in missing["error"]

    table = (await get(api, "anonymous", "/api/v1/banks/example/changes?format=table"))["tables"][0]
    assert table["title"] == "Changes against the previous release"
    assert table["headers"] == ["Release", "Against", "Added", "Removed", "Changed", "Unchanged"]
    assert table["rows"][1][:2] == ["2 (current)", "1"] and table["rows"][1][2].startswith("1 (")

    sessions = await get(api, "anonymous", "/api/v1/banks/example/sessions")
    assert sessions[0]["changes"] == {k: v for k, v in second.items() if k not in ("release", "session", "state")}
    bank = await get(api, "anonymous", "/api/v1/banks/example")
    assert [p["changes"]["against"] for p in bank["production"]] == [None, "1"]


async def test_a_private_bank_s_changes_are_its_owner_s(api: Api):
    await update(api)
    response = await api.call("owner", "PUT", "/api/v1/banks/example/visibility", json={"visibility": "private"})
    assert response.status == 200
    await get(api, "anonymous", "/api/v1/banks/example/changes", status=404)
    await get(api, "user", "/api/v1/banks/example/changes", status=404)
    assert len(await get(api, "owner", "/api/v1/banks/example/changes")) == 1


async def test_dry_run_through_the_rest_api_and_biomaj_cli_s_route(api: Api):
    await update(api)
    second_release(api)
    job = await update(api, dry_run=True)
    details = job["result"]["details"]
    assert details["dry_run"] is True and details["update"] is True and job["result"]["release"] == "2"
    assert details["changes"]["files"]["changed"] == ["example.fasta", "release.txt"]
    assert details["transfer"]["fetch"]["count"] == 3  # example.fasta, release.txt, example3.fasta
    assert len(await get(api, "owner", "/api/v1/banks/example/changes")) == 1  # nothing recorded

    response = await api.call("owner", "POST", "/api/daemon/bank/example", json={"dry_run": True})
    assert response.status == 200, await response.text()
    job_id = (await api.node.store.list_jobs(bank="example", limit=1))[0]["id"]
    job = await api.job_done(job_id, "owner")
    assert job["options"] == {"dry_run": True} and job["result"]["details"]["update"] is True
    bank = await get(api, "owner", "/api/v1/banks/example")
    assert [p["release"] for p in bank["production"]] == ["1"]

    bad = await api.call("owner", "POST", "/api/v1/banks/example/update", json={"dry_run": "yes"})
    assert bad.status == 400 and "option dry_run must be" in (await bad.json())["error"]
