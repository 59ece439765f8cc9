"""`biomaj init` and `biomaj ctl check|banks` run as a user runs them: the real command."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BOTH, OURS, upstream_paths


def run(cmd: list[str], *args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "BIOMAJ_CONFIG"}
    full_env.update(env or {})
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=60)


def test_init_lays_out_a_root(tmp_path, biomaj_cmd):
    root = tmp_path / "x"
    result = run(biomaj_cmd, "init", str(root))
    assert result.returncode == 0, result.stderr
    for name in ("conf", "lock", "db", "cache", "process", "log", "data"):
        assert (root / name).is_dir()
    assert (root / "config.yml").is_file()
    assert stat.S_IMODE((root / "config.yml").stat().st_mode) == 0o600
    assert (root / "conf" / "global.properties").is_file()
    assert (root / "conf" / "example.properties").is_file()
    assert (root / "example-remote" / "release.txt").read_text() == "Release 1\n"
    assert "ctl check example" in result.stdout


def test_init_generates_a_secret_per_root(tmp_path, biomaj_cmd):
    import yaml

    secrets = set()
    for name in ("a", "b"):
        assert run(biomaj_cmd, "init", str(tmp_path / name)).returncode == 0
        secrets.add(yaml.safe_load((tmp_path / name / "config.yml").read_text())["web"]["secret"])
    assert len(secrets) == 2 and all(len(s) >= 32 for s in secrets)


def test_init_refuses_to_overwrite_without_force(tmp_path, biomaj_cmd):
    root = tmp_path / "x"
    assert run(biomaj_cmd, "init", str(root)).returncode == 0
    (root / "config.yml").write_text("web:\n  port: 5999\n")
    again = run(biomaj_cmd, "init", str(root))
    assert again.returncode != 0
    assert "already exists" in again.stderr and "--force" in again.stderr
    assert (root / "config.yml").read_text() == "web:\n  port: 5999\n"
    forced = run(biomaj_cmd, "init", str(root), "--force")
    assert forced.returncode == 0
    assert "5999" not in (root / "config.yml").read_text()


def test_init_keeps_a_copied_global_properties_and_says_so(tmp_path, biomaj_cmd):
    """A BioMAJ 3 global.properties copied in before the first init (the container's volume) stays."""
    root = tmp_path / "x"
    (root / "conf").mkdir(parents=True)
    copied = "[GENERAL]\n# copied from a BioMAJ 3 site\ndata.dir=" + str(root / "data") + "\n"
    (root / "conf" / "global.properties").write_text(copied)
    result = run(biomaj_cmd, "init", str(root))
    assert result.returncode == 0, result.stderr
    assert "kept the existing conf/global.properties (--force overwrites it)" in result.stdout
    assert (root / "conf" / "global.properties").read_text() == copied
    assert (root / "config.yml").is_file() and (root / "conf" / "example.properties").is_file()
    (root / "config.yml").unlink()
    again = json.loads(run(biomaj_cmd, "init", str(root), "--json").stdout)
    assert str(root / "conf" / "global.properties") in again["kept"]
    assert str(root / "conf" / "example.properties") in again["kept"] and str(root / "config.yml") in again["files"]


def test_root_with_a_percent_sign_is_escaped(tmp_path, biomaj_cmd):
    root = tmp_path / "100%data"
    assert run(biomaj_cmd, "init", str(root)).returncode == 0
    check = run(biomaj_cmd, "-c", str(root / "config.yml"), "ctl", "check", "example")
    assert check.returncode == 0, check.stdout + check.stderr


def test_check_example_bank(biomaj_root, biomaj_cmd):
    result = run(biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "check", "example")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("example check: True")


def test_check_json_and_config_from_environment(biomaj_root, biomaj_cmd):
    result = run(biomaj_cmd, "ctl", "--json", "check", "example", env={"BIOMAJ_CONFIG": str(biomaj_root / "config.yml")})
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["bank"] == "example" and doc["valid"] is True
    assert all(p["level"] == "warning" for p in doc["problems"])


def test_config_option_after_the_command(biomaj_root, biomaj_cmd):
    result = run(biomaj_cmd, "ctl", "check", "example", "-c", str(biomaj_root / "config.yml"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["valid"] is True


def test_check_invalid_bank_lists_every_problem_and_fails(biomaj_root, biomaj_cmd):
    (biomaj_root / "conf" / "broken.properties").write_text(
        "[GENERAL]\ndb.fullname=broken\nprotocol=gopher\ndir.version=/abs\nlocal.files=^x\n"
    )
    result = run(biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "--json", "check", "broken")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["valid"] is False
    keys = {p["key"] for p in doc["problems"] if p["level"] == "error"}
    assert {"protocol", "dir.version", "offline.dir.name"} <= keys


@pytest.mark.parametrize("files", BOTH, indirect=True)
def test_check_a_biomaj3_bank_file_by_path(biomaj_root, biomaj_cmd, files):
    name = files.expect["uniprot_like"]  # a real-world-shaped bank with a large process DAG
    bank = files.real_world / f"{name}.properties"
    result = run(biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "check", str(bank))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"{name} check: True")
    assert "frequency.update" in result.stdout and "not read by BioMAJ 3" in result.stdout  # legacy: warned, not fatal


@pytest.mark.parametrize(
    "bank_file",
    # ours: the real-world-shaped banks and one that fails its check (every one of ours gets its
    # verdict in process in tests/config/test_fixtures.py; a subprocess each is slow)
    [pytest.param(p, id=f"ours/{p.parent.name}/{p.name}") for p in
     sorted(OURS.real_world.glob("*.properties")) + [OURS.bank("locallist")]]
    + upstream_paths("*/*.properties"),
)
def test_every_fixture_bank_gets_a_verdict_from_ctl_check(biomaj_root, biomaj_cmd, bank_file):
    result = run(biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "--json", "check", str(bank_file))
    assert result.returncode in (0, 1), result.stderr
    doc = json.loads(result.stdout)
    assert doc["valid"] is (result.returncode == 0)
    assert "Traceback" not in result.stderr


def test_banks_lists_conf_banks_with_store_state(biomaj_root, biomaj_cmd):
    (biomaj_root / "conf" / "second.properties").write_text((biomaj_root / "conf" / "example.properties").read_text())
    result = run(biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "--json", "banks")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"example", "second"}
    assert rows["example"]["config"] == "ok" and rows["example"]["in_store"] is False
    assert (biomaj_root / "db" / "biomaj.sqlite").exists()


async def test_banks_shows_published_release_and_orphans(biomaj_root, biomaj_cmd):
    from biomaj.storage import open_store

    async with open_store("", biomaj_root) as store:
        await store.ensure_bank("example", {"visibility": "public", "owner": "biomaj", "type": ["nucleic"], "tags": []})
        await store.save_session("example", {"id": 100.0, "release": "1"})
        await store.add_production("example", {"release": "1", "remoterelease": "1", "session": 100.0, "prod_dir": "example_1"})
        await store.set_bank_fields("example", current=100.0, last_update_session=100.0)
        await store.ensure_bank("gone", {"visibility": "private", "owner": "x", "type": [], "tags": []})
    result = run(biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "--json", "banks")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["example"]["published"] == "1" and rows["example"]["releases"] == 1
    assert rows["gone"]["config"] == "no bank file"
    table = run(biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "banks")
    assert table.returncode == 0
    assert "example" in table.stdout and "gone" in table.stdout and "no bank file" in table.stdout
