"""`biomaj users` as an admin runs it: the real command on a `biomaj init` root."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from biomaj.auth.users import Users
from biomaj.storage import open_store


def run(cmd: list[str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "BIOMAJ_CONFIG"}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, input=stdin, timeout=60)


@pytest.fixture
def users_cmd(tmp_path, biomaj_cmd) -> tuple[list[str], Path]:
    root = tmp_path / "root"
    assert run(biomaj_cmd, "init", str(root)).returncode == 0
    return [*biomaj_cmd, "-c", str(root / "config.yml"), "users"], root


def owner_of(root: Path, key: str) -> str | None:
    async def lookup() -> str | None:
        store = open_store("", root)
        async with store:
            identity = await Users(store).by_api_key(key)
            return identity.name if identity else None

    return asyncio.run(lookup())


def test_create_prints_a_working_key_once(users_cmd):
    cmd, root = users_cmd
    created = run(cmd, "create", "alice", "--email", "alice@example.org")
    assert created.returncode == 0, created.stderr
    key = created.stdout.split("keep it safe): ")[1].strip()
    assert owner_of(root, key) == "alice"
    listing = run(cmd, "--json", "list")
    assert listing.returncode == 0 and key not in listing.stdout and key not in listing.stderr
    [alice] = json.loads(listing.stdout)
    assert alice["email"] == "alice@example.org" and len(alice["api_keys"]) == 1 and not alice["is_admin"]
    assert key not in (root / "db" / "biomaj.sqlite").read_bytes().decode(errors="replace")


def test_keys_passwords_admin_and_delete(users_cmd):
    cmd, root = users_cmd
    assert run(cmd, "create", "bob", "--password-stdin", stdin="a long secret\n").returncode == 0
    fresh = run(cmd, "--json", "apikey", "bob", "--label", "laptop")
    assert fresh.returncode == 0, fresh.stderr
    new = json.loads(fresh.stdout)
    assert owner_of(root, new["api_key"]) == "bob"
    assert run(cmd, "revoke", "bob", new["id"]).returncode == 0
    assert owner_of(root, new["api_key"]) is None
    assert run(cmd, "passwd", "bob", "--password-stdin", stdin="another long secret\n").returncode == 0
    assert run(cmd, "admin", "bob", "on").returncode == 0
    [bob] = json.loads(run(cmd, "--json", "list").stdout)
    assert bob["is_admin"] and bob["has_password"]
    assert run(cmd, "delete", "bob").returncode == 0
    assert json.loads(run(cmd, "--json", "list").stdout) == []


def test_renew_and_email(users_cmd):
    cmd, root = users_cmd
    first = run(cmd, "--json", "create", "carol")
    first_key = json.loads(first.stdout)["api_key"]
    kept = json.loads(run(cmd, "--json", "apikey", "carol").stdout)["api_key"]
    renewed = run(cmd, "--json", "apikey", "carol", "--renew")
    assert renewed.returncode == 0, renewed.stderr
    new = json.loads(renewed.stdout)
    assert len(new["revoked"]) == 2 and owner_of(root, new["api_key"]) == "carol"
    assert owner_of(root, first_key) is None and owner_of(root, kept) is None
    assert run(cmd, "email", "carol", "carol@example.org").returncode == 0
    assert json.loads(run(cmd, "--json", "list").stdout)[0]["email"] == "carol@example.org"
    assert run(cmd, "email", "carol", "").stdout == "email of carol removed\n"
    assert json.loads(run(cmd, "--json", "list").stdout)[0]["email"] is None
    refused = run(cmd, "email", "carol", "not-an-address")
    assert refused.returncode == 2 and "not an email address" in refused.stderr


@pytest.mark.parametrize("args, message", [
    (("create", "bad name"), "invalid user name"),
    (("create", "x", "--email", "nope"), "not an email address"),
    (("delete", "nobody"), "no user nobody"),
    (("apikey", "nobody"), "no user nobody"),
    (("revoke", "nobody", "1234"), "has no API key"),
])
def test_bad_input_is_one_clear_line(users_cmd, args, message):
    cmd, _root = users_cmd
    result = run(cmd, *args)
    assert result.returncode == 2 and "error: " in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_short_password_is_refused(users_cmd):
    cmd, _root = users_cmd
    result = run(cmd, "create", "carol", "--password-stdin", stdin="short\n")
    assert result.returncode == 2 and "at least 8 characters" in result.stderr
