"""`biomaj-users`, BioMAJ 3's user tool, as an admin runs it: the console script declared in
pyproject.toml, run in a subprocess on a `biomaj init` root, against the same store as `biomaj users`."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from biomaj.auth.users import Users
from biomaj.storage import open_store

PROJECT = Path(__file__).resolve().parents[2]
ENTRY_POINT = "biomaj.cli.biomaj_users:main"


def test_the_console_script_is_declared():
    scripts = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["biomaj-users"] == ENTRY_POINT
    module, function = ENTRY_POINT.split(":")
    assert callable(getattr(importlib.import_module(module), function))


def run(root: Path, *args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """The console script as pip's wrapper runs it: import the entry point, call it."""
    module, function = ENTRY_POINT.split(":")
    environ = {k: v for k, v in os.environ.items() if k not in ("BIOMAJ_CONFIG", "BIOMAJ_USER_PASSWORD")}
    environ.update({"BIOMAJ_CONFIG": str(root / "config.yml"), **(env or {})})
    return subprocess.run([sys.executable, "-c", f"from {module} import {function}; {function}()", *args],
                          capture_output=True, text=True, env=environ, input=stdin, timeout=60)


@pytest.fixture
def root(tmp_path, biomaj_cmd) -> Path:
    root = tmp_path / "root"
    assert subprocess.run([*biomaj_cmd, "init", str(root)], capture_output=True, timeout=60).returncode == 0
    return root


def lookup(root: Path, *, key: str | None = None, name: str | None = None, password: str | None = None):
    async def go():
        store = open_store("", root)
        async with store:
            users = Users(store)
            if key is not None:
                found = await users.by_api_key(key)
                return found.name if found else None
            if password is not None:
                found = await users.by_password(name, password)
                return found.name if found else None
            return await users.get(name)

    return asyncio.run(go())


def table_row(stdout: str) -> dict[str, str]:
    """The psql table's one row, by header."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    headers, row = ([c.strip() for c in line.strip("|").split(" | ")] for line in lines[:2])
    return dict(zip(headers, row))


def test_create_with_the_password_on_stdin_prints_the_user_and_a_working_key(root):
    created = run(root, "--action", "create", "--user", "alice", "--email", "alice@example.org", "--password-stdin",
                  stdin="a long secret\n")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("User successfully created\n") and "warning" not in created.stderr
    row = table_row(created.stdout)
    assert row["User"] == "alice" and row["Email"] == "alice@example.org" and row["Password"] == "(as given)"
    assert lookup(root, key=row["API Key"]) == "alice"
    assert lookup(root, name="alice", password="a long secret") == "alice"
    assert "a long secret" not in created.stdout + created.stderr


def test_a_password_on_the_command_line_works_and_warns(root):
    created = run(root, "-A", "add", "-U", "bob", "-E", "bob@example.org", "-P", "on the command line")
    assert created.returncode == 0, created.stderr
    assert "visible to every user of this machine" in created.stderr and "--password-stdin" in created.stderr
    assert "on the command line" not in created.stdout
    assert lookup(root, name="bob", password="on the command line") == "bob"


def test_json_output_as_docker_test_reads_it(root):
    """biomaj-docker's docker-test.sh: `biomaj-users.py -A add ... --json | jq -r '.apikey'`."""
    created = run(root, "-A", "add", "-E", "carol@example.org", "-U", "carol", "--json",
                  env={"BIOMAJ_USER_PASSWORD": "from the environment"})
    assert created.returncode == 0, created.stderr
    doc = json.loads(created.stdout)
    assert lookup(root, key=doc["apikey"]) == "carol" and doc["id"] == "carol" and doc["email"] == "carol@example.org"
    assert "hashed_password" not in doc and "password" not in doc and "warning" not in created.stderr
    assert lookup(root, name="carol", password="from the environment") == "carol"


def test_without_a_password_one_is_generated_and_shown_once(root):
    created = run(root, "-A", "create", "-U", "dave")
    assert created.returncode == 0, created.stderr
    row = table_row(created.stdout)
    assert len(row["Password"]) == 16 and lookup(root, name="dave", password=row["Password"]) == "dave"
    assert lookup(root, key=row["API Key"]) == "dave"


def test_the_other_actions(root):
    first = table_row(run(root, "-A", "create", "-U", "erin", "--password-stdin", stdin="first password\n").stdout)
    # renew: a new key, the old one revoked (BioMAJ 3's user had one key)
    renewed = run(root, "-A", "renew", "-U", "erin")
    assert renewed.returncode == 0, renewed.stderr
    assert renewed.stdout.startswith("[renew] User erin, successfully renewed API key: 'bmj_")
    new_key = renewed.stdout.split("'")[1]
    assert lookup(root, key=new_key) == "erin" and lookup(root, key=first["API Key"]) is None
    # update: email and password
    updated = run(root, "-A", "update", "-U", "erin", "-E", "erin@example.org", "--password-stdin",
                  stdin="second password\n")
    assert updated.returncode == 0 and updated.stdout == "User erin successfully updated\n", updated.stderr
    assert lookup(root, name="erin")["email"] == "erin@example.org"
    assert lookup(root, name="erin", password="second password") == "erin"
    assert run(root, "-A", "update", "-U", "erin").stdout == "[update] User erin not updated\n"
    # view: the key's id, never a key
    viewed = run(root, "-A", "view", "-U", "erin")
    assert viewed.returncode == 0, viewed.stderr
    row = table_row(viewed.stdout)
    assert row["User"] == "erin" and row["Email"] == "erin@example.org" and row["Password"] == "set"
    assert row["API keys (ids)"] == lookup(root, name="erin")["api_keys"][0]["id"] and "bmj_" not in viewed.stdout
    # the same store as `biomaj users`
    for action in ("delete", "rm"):
        run(root, "-A", "create", "-U", f"{action}-me")
        deleted = run(root, "-A", action, "-U", f"{action}-me")
        assert deleted.returncode == 0 and deleted.stdout == f"User {action}-me successfully deleted\n"
    assert [u["id"] for u in asyncio.run(_list(root))] == ["erin"]


async def _list(root: Path) -> list[dict]:
    store = open_store("", root)
    async with store:
        return await Users(store).list()


@pytest.mark.parametrize("args, stdin, code, out, err", [
    (("-A", "create", "-U", "frank"), None, 0, "User successfully created", ""),  # then again: exists
    (("-A", "view", "-U", "nobody"), None, 1, "[view] User nobody does not exist", ""),
    (("-A", "renew", "-U", "nobody"), None, 1, "[renew] User nobody does not exist", ""),
    (("-A", "delete", "-U", "nobody"), None, 1, "[delete] User nobody does not exist", ""),
    (("-A", "fly", "-U", "frank"), None, 1, "Unsupported action 'fly'", ""),
    (("-A", "create", "-U", "bad name"), None, 2, "", "error: invalid user name"),
    (("-A", "create", "-U", "gina", "-E", "nope"), None, 2, "", "error: 'nope' is not an email address"),
    (("-A", "create", "-U", "gina", "--password-stdin"), "short\n", 2, "", "at least 8 characters"),
    (("-A", "create", "-U", "gina", "--password-stdin"), "", 1, "", "no password on standard input"),
    (("-A", "create", "-U", "gina", "-P", "long enough", "--password-stdin"), "x\n", 2, "", "give one of them"),
    (("-U", "gina"), None, 2, "", "the following arguments are required: -A/--action"),
])
def test_refusals_are_one_clear_line(root, args, stdin, code, out, err):
    result = run(root, *args, stdin=stdin)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert out in result.stdout and err in result.stderr and "Traceback" not in result.stderr
    if args == ("-A", "create", "-U", "frank"):
        again = run(root, *args)
        assert again.returncode == 1 and again.stdout == "User frank already exist\n"


def test_the_config_option_and_a_missing_config(root, tmp_path):
    elsewhere = run(tmp_path, "-A", "create", "-U", "henry", "-C", str(root / "config.yml"), "--password-stdin",
                    stdin="long enough\n")
    assert elsewhere.returncode == 0, elsewhere.stderr
    missing = run(tmp_path, "-A", "view", "-U", "henry")
    assert missing.returncode != 0 and "no such configuration file" in missing.stderr
    assert "Traceback" not in missing.stderr
