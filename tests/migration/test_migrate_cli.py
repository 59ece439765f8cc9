"""`biomaj migrate` and `storage.url: mongodb://` as a user runs them, in-process (click's runner):
the MongoDB server is the test double, which lives in this process only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from biomaj.cli import cli

from . import biomaj3_db
from .conftest import double_url


def run(root: Path, *args: str):
    result = CliRunner().invoke(cli, ["-c", str(root / "config.yml"), *args], catch_exceptions=False)
    return result


def set_storage(root: Path, url: str) -> None:
    config = root / "config.yml"
    data = yaml.safe_load(config.read_text()) or {}
    data.setdefault("storage", {})["url"] = url
    config.write_text(yaml.safe_dump(data))


def test_from_mongo_prints_counts_then_nothing_to_copy(biomaj_root, biomaj3_url):
    first = run(biomaj_root, "migrate", "--from-mongo", biomaj3_url, "--users-db", "biomaj_user")
    assert first.exit_code == 0, first.output
    assert "hunter2" not in first.output
    assert "from mongodb mongodb://admin:***@" in first.stdout and "into sqlite " in first.stdout
    rows = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")[1:]]
            for line in first.stdout.splitlines() if "|" in line}
    assert rows["production"] == [str(biomaj3_db.EXPECTED["production"]), "0", "0"]
    assert rows["history"] == ["10", "0", "0"] and rows["api keys"] == ["3", "0", "0"]
    assert "bank alu (new): 3 sessions, 2 production, 1 pending copied" in first.stderr
    assert "nothing to copy" not in first.stdout

    again = run(biomaj_root, "migrate", "--json", "--from-mongo", biomaj3_url, "--users-db", "biomaj_user")
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["changed"] is False and report["present"] == biomaj3_db.EXPECTED
    assert "hunter2" not in again.output
    text = run(biomaj_root, "migrate", "--from-mongo", biomaj3_url, "--users-db", "biomaj_user")
    assert "nothing to copy: the target already holds everything the source has" in text.stdout


def test_dry_run_and_skips_are_reported(biomaj_root, uses_double):
    url = double_url("biomaj")
    uses_double.append(url)
    biomaj3_db.build(url, broken=True)
    dry = run(biomaj_root, "migrate", "--from-mongo", url, "--users-db", "biomaj_user", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "dry run: nothing was written" in dry.stdout
    assert "skipped production broken 7: the release is twice in production" in dry.stdout
    assert "skipped banks _id " in dry.stdout
    report = json.loads(run(biomaj_root, "migrate", "--json", "--from-mongo", url, "--users-db",
                            "biomaj_user").stdout)
    assert report["copied"]["banks"] == 4 and len(report["skipped"]) == len(biomaj3_db.BROKEN)


def test_a_bioMAJ3_database_as_the_store_shows_its_banks_releases_and_history(biomaj_root, biomaj3_url):
    """storage.url naming the BioMAJ 3 database itself: biomaj serves it as it is."""
    set_storage(biomaj_root, biomaj3_url.rstrip("/") + "/biomaj")
    history = run(biomaj_root, "ctl", "--json", "history", "--limit", "100")
    assert history.exit_code == 0, history.output
    assert len(json.loads(history.stdout)) == 10
    banks = run(biomaj_root, "ctl", "--json", "status")
    assert banks.exit_code == 0, banks.output
    [alu] = [b for b in json.loads(banks.stdout) if b.get("Name", b.get("name")) == "alu"]
    assert "2003-11-26" in json.dumps(alu)
    show = run(biomaj_root, "ctl", "show", "alu")
    assert show.exit_code == 0, show.output
    assert "2003-11-26__1 (current)" in show.stdout
    # migrate in place: the users' clear API keys become hashed keys of this store
    moved = json.loads(run(biomaj_root, "migrate", "--json", "--from-mongo", biomaj3_url,
                           "--users-db", "biomaj_user").stdout)
    assert moved["present"]["banks"] == 3 and moved["copied"]["api_keys"] == 3


def test_to_mongo_exports_the_configured_store(biomaj_root, biomaj3_url, uses_double):
    assert run(biomaj_root, "migrate", "--from-mongo", biomaj3_url, "--users-db", "biomaj_user").exit_code == 0
    cluster = double_url("", password="cluster-pass")
    uses_double.append(cluster)
    exported = run(biomaj_root, "migrate", "--json", "--to-mongo", cluster, "--db", "biomaj_cluster")
    assert exported.exit_code == 0, exported.output
    report = json.loads(exported.stdout)
    assert "cluster-pass" not in exported.output
    assert report["copied"] == biomaj3_db.EXPECTED and "database biomaj_cluster" in report["target"]
    # the cluster's nodes then use it as their store
    set_storage(biomaj_root, cluster.rstrip("/") + "/biomaj_cluster")
    history = run(biomaj_root, "ctl", "--json", "history", "--limit", "100")
    assert len(json.loads(history.stdout)) == 10
    again = run(biomaj_root, "migrate", "--to-mongo", cluster, "--db", "biomaj_cluster")
    assert again.exit_code != 0 and "configured store already" in again.output


@pytest.mark.parametrize("args, message", [
    ([], "exactly one of --from-mongo URL and --to-mongo URL"),
    (["--from-mongo", "mongodb://a/b", "--to-mongo", "mongodb://c/d"], "exactly one of"),
    (["--from-mongo", "http://user:pw@a/b"], "expected a mongodb:// or mongodb+srv:// URL"),
    (["--to-mongo", "mongodb://a/b", "--users-db", "u"], "--users-db goes with --from-mongo"),
])
def test_bad_options(biomaj_root, args, message):
    result = run(biomaj_root, "migrate", *args)
    assert result.exit_code == 2 and message in result.output
    assert "pw@" not in result.output
