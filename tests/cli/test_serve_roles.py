"""`auth` is no longer a role nor an actor: authentication is a library of the web and ftp actors.
`--role auth` stays accepted, runs nothing and says so once; no node logs an idle `actor auth`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import yaml

from biomaj.config.roles import ROLES, parse_roles


def test_all_roles_and_their_actors_name_no_auth():
    from biomaj.config.roles import ROLE_ACTORS

    assert "auth" not in parse_roles(True, None)
    assert all("auth" not in actors for actors in ROLE_ACTORS.values())
    assert "auth" not in ROLES


def test_role_auth_is_dropped_with_one_warning():
    said: list[str] = []
    assert parse_roles(False, "auth,web,AUTH", warn=said.append) == ["web"]
    assert said == ["serve: role auth is deprecated and ignored (authentication is part of the web and ftp roles)"]


def _status(port: int, proc: subprocess.Popen, deadline: float = 20.0) -> dict:
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status", timeout=5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < end, "the server did not answer"
            time.sleep(0.1)  # the child is starting; nothing to join on across processes


def test_serve_role_auth_web_runs_the_web_actor_alone_and_warns_once(biomaj_root, biomaj_cmd):
    config = biomaj_root / "config.yml"
    port = yaml.safe_load(config.read_text())["web"]["port"]
    env = {k: v for k, v in os.environ.items() if k != "BIOMAJ_CONFIG"}
    proc = subprocess.Popen([*biomaj_cmd, "-c", str(config), "serve", "--role", "auth,web"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        node = _status(port, proc)["nodes"][0]
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert (node["roles"], node["actors"]) == (["web"], ["web"])
    warnings = [line for line in err.splitlines() if "auth" in line]
    assert warnings == ["warning: serve: role auth is deprecated and ignored "
                        "(authentication is part of the web and ftp roles)"], err


def test_serve_role_auth_alone_runs_nothing_and_says_what_to_give(biomaj_root, biomaj_cmd):
    result = subprocess.run([*biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "serve", "--role", "auth"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1, result.stderr  # as an unknown role
    assert result.stderr.splitlines() == [
        "warning: serve: role auth is deprecated and ignored (authentication is part of the web and ftp roles)",
        f"error: serve: --role auth runs nothing: give the roles to run ({', '.join(ROLES)})",
    ]
