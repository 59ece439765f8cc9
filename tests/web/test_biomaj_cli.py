"""The real `biomaj-cli.py` from PyPI (BioMAJ 3's client) against a real `biomaj serve --all`.

biomaj-cli is installed, with its dependencies (requests, biomaj-core and elasticsearch, which
biomaj-core imports at module level, and setuptools for the ``pkg_resources`` it imports too: a
Python 3.12 venv has none, setuptools 81 drops it), in a venv of its own, cached under the
temporary directory by version so that later runs start at once. Without PyPI the tests skip
(they fail when CI=true)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.servers.biomaj_service import Server, biomaj_server, clean_env

BIOMAJ_CLI_VERSION = os.environ.get("BIOMAJ_CLI_VERSION", "3.1.11")
VENV = Path(tempfile.gettempdir()) / f"biomaj-test-biomaj-cli-venv-{BIOMAJ_CLI_VERSION}"
READY = ".biomaj-test-ready"
JOB = re.compile(r"\(job ([0-9a-f]+)\)")

pytestmark = pytest.mark.timeout(600)


def _usable(venv: Path) -> bool:
    python = venv / "bin" / "python"
    if not (venv / READY).exists() or not python.exists() or not (venv / "bin" / "biomaj-cli.py").exists():
        return False
    probe = subprocess.run([str(python), "-c", "import biomaj_cli.utils, biomaj_core.config, requests"],
                           capture_output=True, timeout=120)
    return probe.returncode == 0


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def biomaj_cli() -> list[str]:
    """The command running biomaj-cli.py with its venv's python (several test sessions may share
    the cache: a lock file serialises the first install)."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.with_name(VENV.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _usable(VENV):
            shutil.rmtree(VENV, ignore_errors=True)
            made = subprocess.run([sys.executable, "-m", "venv", str(VENV)], capture_output=True, text=True,
                                  timeout=300)
            if made.returncode != 0:
                _unavailable(f"cannot create a venv for biomaj-cli: {made.stderr.strip()[-500:]}")
            pip = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                                  "-q", f"biomaj-cli=={BIOMAJ_CLI_VERSION}", "setuptools<81"],
                                 capture_output=True, text=True,
                                 timeout=600)
            if pip.returncode != 0:
                _unavailable(f"pip cannot install biomaj-cli=={BIOMAJ_CLI_VERSION} (PyPI unreachable?): "
                             f"{pip.stderr.strip()[-800:]}")
            (VENV / READY).write_text(BIOMAJ_CLI_VERSION)
            if not _usable(VENV):
                _unavailable("biomaj-cli was installed but does not import")
    return [str(VENV / "bin" / "python"), str(VENV / "bin" / "biomaj-cli.py")]


@pytest.fixture(scope="module")
def server(tmp_path_factory, biomaj_cmd):
    """`biomaj serve --all` on a fresh `biomaj init` root, with users alice and bob, and carol, an admin."""
    with biomaj_server(tmp_path_factory.mktemp("biomaj-cli") / "root", biomaj_cmd,
                       {"alice": False, "bob": False, "carol": True}) as srv:
        yield srv


def run_cli(biomaj_cli: list[str], server: Server, *args: str, who: str | None = "alice") -> tuple[int, str]:
    key = ["--api-key", server.keys[who]] if who else []
    done = subprocess.run([*biomaj_cli, "--proxy", server.url, *key, *args], capture_output=True, text=True,
                          timeout=120, env=clean_env())
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout


def update(biomaj_cli, server: Server) -> dict:
    code, out = run_cli(biomaj_cli, server, "--update", "--bank", "example")
    assert code == 0 and out.startswith("Bank update request sent for example (job "), out
    job = server.wait_job(JOB.search(out).group(1), "alice")
    assert job["state"] == "done", job
    return job


def test_about_me(biomaj_cli, server):
    code, out = run_cli(biomaj_cli, server, "--about-me")
    assert code == 0 and "User: alice" in out and server.keys["alice"] not in out
    # BioMAJ 3 gave the API key for a login and a password: refused (and biomaj-cli says it failed)
    code, out = run_cli(biomaj_cli, server, "--about-me", "--user-login", "alice", "--user-password", "pw", who=None)
    assert code == 1 and "Failed to contact BioMAJ daemon" in out


def test_a_bank_s_life_through_biomaj_cli(biomaj_cli, server):
    code, out = run_cli(biomaj_cli, server, "--status")
    assert code == 0 and "| Name" in out and "example" not in out  # nothing updated yet
    # a bank with no owner yet is the admins' (BioMAJ 3: its first updater's): an admin gives it away
    code, out = run_cli(biomaj_cli, server, "--update", "--bank", "example")
    assert code == 1 and "Failed to contact BioMAJ daemon" in out
    code, out = run_cli(biomaj_cli, server, "--owner", "alice", "--bank", "example", who="carol")
    assert code == 0, out

    job = update(biomaj_cli, server)
    assert job["user"] == "alice" and job["result"]["release"] == "1"

    code, out = run_cli(biomaj_cli, server, "--status")
    assert code == 0 and re.search(r"\| example +\| nucleic +\| 1 +\| public", out), out
    code, out = run_cli(biomaj_cli, server, "--status", "--bank", "example")
    assert code == 0 and "Published release" in out and "example_1" in out, out
    code, out = run_cli(biomaj_cli, server, "--update-status", "--bank", "example")
    assert code == 0 and re.search(r"\| download +\| over", out) and "Pending actions" in out, out
    code, out = run_cli(biomaj_cli, server, "--last-log", "--bank", "example")
    assert code == 0 and "Workflow" in out and out.rstrip().endswith("##END_OF_LOG"), out
    code, out = run_cli(biomaj_cli, server, "--last-log", "--bank", "example", "--tail", "2")
    assert code == 0 and len(out.strip().splitlines()) == 3, out
    code, out = run_cli(biomaj_cli, server, "--search", "--formats", "fasta", "--types", "nucleic")
    assert code == 0 and "Search by formats=['fasta'], types=['nucleic']" in out and "| example" in out, out
    code, out = run_cli(biomaj_cli, server, "--show", "--bank", "example")
    assert code == 0 and "1 (current)" in out, out
    for option in ("--whatsup", "--stats", "--history", "--status-ko"):
        code, out = run_cli(biomaj_cli, server, option)
        assert code == 0 and "An error occured" not in out, (option, out)

    # a second release, then publish the first one and remove the second
    (server.root / "example-remote" / "release.txt").write_text("Release 2\n")
    assert update(biomaj_cli, server)["result"]["release"] == "2"
    code, out = run_cli(biomaj_cli, server, "--publish", "--bank", "example", "--release", "1")
    assert code == 0 and out.strip() == "Done.", out
    code, out = run_cli(biomaj_cli, server, "--status", "--json")
    assert code == 0 and json.loads(out)["banks"][0][:3] == ["example", "nucleic", "1"], out
    code, out = run_cli(biomaj_cli, server, "--remove", "--bank", "example", "--release", "2")
    assert code == 0 and out.startswith("Bank removal request sent for example (job "), out
    assert server.wait_job(JOB.search(out).group(1), "alice")["state"] == "done"
    code, out = run_cli(biomaj_cli, server, "--status", "--bank", "example", "--json")
    production = json.loads(out)["bank"]["production"]
    assert [row[2] for row in production["details"]] == ["1"], out

    # another user may not touch it, and once private may not see it
    code, out = run_cli(biomaj_cli, server, "--update", "--bank", "example", who="bob")
    assert code == 1 and "Failed to contact BioMAJ daemon" in out
    code, out = run_cli(biomaj_cli, server, "--visibility", "private", "--bank", "example")
    assert code == 0 and "private" in out, out
    code, out = run_cli(biomaj_cli, server, "--status", who="bob")
    assert code == 0 and "example" not in out, out
    code, out = run_cli(biomaj_cli, server, "--last-log", "--bank", "example", who="bob")
    assert "private" in out and "Workflow" not in out, out
    code, out = run_cli(biomaj_cli, server, "--status")  # its owner still does
    assert code == 0 and re.search(r"\| example +\| nucleic +\| 1 +\| private", out), out


def test_bad_requests_fail_cleanly(biomaj_cli, server):
    code, out = run_cli(biomaj_cli, server, "--update")  # no --bank
    assert code == 1 and "Failed to contact BioMAJ daemon" in out
    code, out = run_cli(biomaj_cli, server, "--update", "--bank", "example", "--stop-after", "nope")
    assert code == 1
    code, out = run_cli(biomaj_cli, server, "--status", who=None)
    assert code == 0 and "| Name" in out
