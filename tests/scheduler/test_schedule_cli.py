"""`biomaj ctl schedule list|add|delete`: in-process on a `biomaj init` root (admins only), and
through a real `biomaj serve --all` with `--proxy`, with the same output and exit codes."""

from __future__ import annotations

import getpass
import json
import re
import subprocess

import pytest

from tests.servers.biomaj_service import Server, biomaj_server, clean_env

pytestmark = pytest.mark.timeout(300)

ADDED = re.compile(r"^schedule nightly added: 0 3 \* \* \*, update of example as alice; next run "
                   r"\d{4}-\d\d-\d\d 03:00\n$")


def run(cmd: list[str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, env=clean_env())
    assert "Traceback" not in done.stderr, done.stderr
    return done


def config_with_admins(root, admins: list[str]) -> None:
    config = root / "config.yml"
    config.write_text(re.sub(r"admins: \[.*\]", "admins: " + json.dumps(admins), config.read_text(), count=1))


@pytest.fixture
def local(biomaj_root, biomaj_cmd) -> list[str]:
    """``biomaj -c ROOT/config.yml ctl schedule``, the unix user being an admin."""
    config_with_admins(biomaj_root, [getpass.getuser()])
    return [*biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "schedule"]


def test_add_list_delete_in_process(local):
    done = run(local, "list")
    assert (done.returncode, done.stdout) == (0, "no schedule: add one with `biomaj ctl schedule add NAME --cron "
                                                 "'0 3 * * *' --bank BANK`\n")
    done = run(local, "add", "nightly", "--cron", "0 3 * * *", "--bank", "example", "--user", "alice")
    assert done.returncode == 0 and ADDED.match(done.stdout), (done.stdout, done.stderr)
    done = run(local, "list")
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["Name", "|", "Cron", "|", "Banks", "|", "User", "|", "Next", "run", "|", "Last", "run",
                                "|", "Last", "result"]
    assert re.match(r" nightly \| 0 3 \* \* \* \| example \| alice \| \d{4}-\d\d-\d\d 03:00 \| never +\| *$", lines[2])
    [record] = json.loads(run(local, "list", "--json").stdout)
    assert (record["name"], record["cron"], record["banks"], record["user"], record["last_run"]) == \
        ("nightly", "0 3 * * *", ["example"], "alice", None)
    mine = run(local, "add", "mine", "--cron", "*/10 * * * *", "--bank", "example,example")
    assert f"update of example as {getpass.getuser()}" in mine.stdout, mine.stderr  # default user: you
    done = run(local, "delete", "nightly")
    assert (done.returncode, done.stdout) == (0, "schedule nightly deleted\n")
    assert [r["name"] for r in json.loads(run(local, "--json", "list").stdout)] == ["mine"]


@pytest.mark.parametrize("args, code, says", [
    (("add", "x", "--cron", "0 3 * *", "--bank", "example"), 2, "expected 5 fields"),
    (("add", "x", "--cron", "0 3 * * *", "--bank", "nope"), 2, "bank 'nope': no file"),
    (("add", "a:b", "--cron", "0 3 * * *", "--bank", "example"), 2, "invalid schedule name"),
    (("delete", "nope"), 1, "no schedule 'nope'"),
])
def test_mistakes_are_one_line_errors(local, args, code, says):
    done = run(local, *args)
    assert done.returncode == code and done.stderr.startswith("error: ") and says in done.stderr, done.stderr
    assert json.loads(run(local, "list", "--json").stdout) == []


def test_a_local_user_who_is_no_admin_is_refused(biomaj_root, biomaj_cmd):
    config_with_admins(biomaj_root, ["somebody-else"])
    done = run(biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "schedule", "list")
    assert done.returncode == 1 and "schedules are managed by admins" in done.stderr, done.stderr


# --- remote --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory, biomaj_cmd):
    root = tmp_path_factory.mktemp("schedule-ctl") / "root"
    with biomaj_server(root, biomaj_cmd, {"alice": True, "bob": False}, admins=[getpass.getuser()]) as srv:
        yield srv


def remote(biomaj_cmd, server: Server, *args: str, who: str = "alice") -> subprocess.CompletedProcess:
    return run(biomaj_cmd, "ctl", "--proxy", server.url, "--api-key", server.keys[who], "schedule", *args)


def here(biomaj_cmd, server: Server, *args: str) -> subprocess.CompletedProcess:
    return run(biomaj_cmd, "-c", str(server.config), "ctl", "schedule", *args)


def test_remote_commands_act_on_the_server_and_print_what_local_ones_print(server, biomaj_cmd):
    done = remote(biomaj_cmd, server, "add", "nightly", "--cron", "0 3 * * *", "--bank", "example", "--user", "alice")
    assert done.returncode == 0 and ADDED.match(done.stdout), (done.stdout, done.stderr)
    done = here(biomaj_cmd, server, "add", "weekly", "--cron", "30 2 * * sat", "--bank", "example")
    assert done.returncode == 0, done.stderr
    for args in (("list",), ("list", "--json")):
        there, local = remote(biomaj_cmd, server, *args), here(biomaj_cmd, server, *args)
        assert (there.returncode, there.stdout) == (local.returncode, local.stdout) == (0, local.stdout)
        assert "nightly" in local.stdout and "weekly" in local.stdout
    for args in (("add", "x", "--cron", "0 3 * *", "--bank", "example"), ("delete", "nope")):
        there, local = remote(biomaj_cmd, server, *args), here(biomaj_cmd, server, *args)
        assert there.returncode == local.returncode != 0 and there.stderr.startswith("error: "), there.stderr
    done = remote(biomaj_cmd, server, "list", who="bob")
    assert done.returncode == 1 and "admin" in done.stderr, done.stderr
    assert remote(biomaj_cmd, server, "delete", "weekly").stdout == "schedule weekly deleted\n"
    assert [r["name"] for r in json.loads(here(biomaj_cmd, server, "list", "--json").stdout)] == ["nightly"]
