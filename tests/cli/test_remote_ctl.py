"""`biomaj ctl --proxy URL --api-key KEY`: every command through a real `biomaj serve --all`, with
the same output as the same command run in-process on the server's own root."""

from __future__ import annotations

import getpass
import json
import re
import subprocess

import pytest

from tests.servers.biomaj_service import Server, biomaj_server, clean_env

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tmp_path_factory, biomaj_cmd):
    """alice is an admin, as the local user is (so that both see the same banks); bob is not."""
    root = tmp_path_factory.mktemp("remote-ctl") / "root"
    with biomaj_server(root, biomaj_cmd, {"alice": True, "bob": False}, admins=[getpass.getuser()]) as srv:
        yield srv


def ctl(biomaj_cmd, server: Server, *args: str, who: str | None = "alice",
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``biomaj ctl --proxy`` as ``who`` (None: anonymous)."""
    key = ["--api-key", server.keys[who]] if who else []
    done = subprocess.run([*biomaj_cmd, "ctl", "--proxy", server.url, *key, *args], capture_output=True, text=True,
                          timeout=120, env={**clean_env(), **(env or {})})
    assert "Traceback" not in done.stderr, done.stderr
    return done


def local(biomaj_cmd, server: Server, *args: str) -> subprocess.CompletedProcess:
    """The same command in-process, on the server's config.yml."""
    done = subprocess.run([*biomaj_cmd, "-c", str(server.config), "ctl", *args], capture_output=True, text=True,
                          timeout=120, env=clean_env())
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture(scope="module")
def updated(server, biomaj_cmd) -> Server:
    """The example bank updated through the server by alice, with progress followed."""
    done = ctl(biomaj_cmd, server, "update", "example", "--follow")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("example: release 1 updated in "), done.stdout
    for step in ("[example] init", "[example] download", "[example] publish", "[example] done: release 1 updated"):
        assert step in done.stderr, done.stderr
    return server


READS = [
    ("status",), ("status", "example"), ("status-ko",), ("show", "example"), ("show", "example", "--release", "1"),
    ("search", "--formats", "fasta", "--types", "nucleic"), ("search",), ("history",), ("history", "--bank", "example",
                                                                                      "--limit", "1"),
    ("stats",), ("whatsup",), ("banks",), ("check", "example"), ("maintenance", "status"),
]


@pytest.mark.parametrize("args", READS, ids=" ".join)
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_read_commands_print_what_the_in_process_command_prints(updated, biomaj_cmd, args, as_json):
    args = (*args, "--json") if as_json else args
    here, there = local(biomaj_cmd, updated, *args), ctl(biomaj_cmd, updated, *args)
    assert (there.returncode, there.stdout) == (here.returncode, here.stdout)
    assert there.returncode == 0 and there.stdout.strip(), there.stderr
    if as_json:
        json.loads(there.stdout)


def test_errors_are_the_server_s_with_the_in_process_exit_code(updated, biomaj_cmd):
    for args in (("status", "nosuchbank"), ("show", "example", "--release", "9"), ("cancel", "example"),
                 ("remove", "example", "--release", "1"), ("freeze", "example", "9")):
        here, there = local(biomaj_cmd, updated, *args), ctl(biomaj_cmd, updated, *args)
        assert there.returncode == here.returncode != 0, (args, here.stderr, there.stderr)
        assert there.stderr.startswith("error: "), there.stderr


def test_quick_operations_act_on_the_server(updated, biomaj_cmd):
    steps = [
        (("freeze", "example", "1"), "example: release 1 frozen"),
        (("unfreeze", "example", "1"), "example: release 1 unfrozen"),
        (("unpublish", "example"), "example: unpublished"),
        (("publish", "example"), "example: release 1 published"),
        (("visibility", "example", "private"), "example: private"),
        (("owner", "example", "bob"), "example: owned by bob"),
        (("owner", "example", "alice"), "example: owned by alice"),
        (("visibility", "example", "public"), "example: public"),
        (("unlock", "example"), "example: not locked"),
    ]
    for args, said in steps:
        done = ctl(biomaj_cmd, updated, *args)
        assert (done.returncode, done.stdout.strip()) == (0, said), (args, done.stderr)
    assert (updated.root / "data" / "example" / "current").is_symlink()


def test_who_may_do_what_is_the_server_s_rule(updated, biomaj_cmd):
    done = ctl(biomaj_cmd, updated, "update", "example", who="bob")
    assert done.returncode == 1 and "not authorized" in done.stderr and "owned by alice" in done.stderr, done.stderr
    done = ctl(biomaj_cmd, updated, "update", "example", who=None)
    assert done.returncode == 1 and "--api-key" in done.stderr, done.stderr
    done = ctl(biomaj_cmd, updated, "maintenance", "on", who="bob")
    assert done.returncode == 1 and "admin" in done.stderr, done.stderr
    done = ctl(biomaj_cmd, updated, "status", who=None)  # anonymous: public banks only
    assert done.returncode == 0 and "example" in done.stdout
    done = ctl(biomaj_cmd, updated, "nodes", who=None)
    assert done.returncode == 1 and "--api-key" in done.stderr, done.stderr


def test_nodes_lists_the_server(updated, biomaj_cmd):
    done = ctl(biomaj_cmd, updated, "nodes", "--json")
    assert done.returncode == 0, done.stderr
    nodes = json.loads(done.stdout)
    assert len(nodes) == 1 and nodes[0]["pid"] == updated.proc.pid and "manager" in nodes[0]["roles"]


def test_jobs_run_on_the_server_and_report_as_in_process(updated, biomaj_cmd):
    (updated.root / "example-remote" / "release.txt").write_text("Release 2\n")
    done = ctl(biomaj_cmd, updated, "update", "example", "--dry-run")  # run by the server, nothing made
    assert done.returncode == 0 and done.stdout.splitlines()[0] == "example: dry run: an update would make release 2"
    assert "  changed: release.txt" in done.stdout.splitlines()
    assert not (updated.root / "data" / "example" / "example_2").exists()
    done = ctl(biomaj_cmd, updated, "update", "example", "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert (job["state"], job["user"], job["result"]["release"]) == ("done", "alice", "2")
    done = ctl(biomaj_cmd, updated, "release-check", "example")
    assert (done.returncode, done.stdout.strip()) == (0, "example: remote release 2 (already in production)")
    done = ctl(biomaj_cmd, updated, "remove", "example", "--release", "2")
    assert done.returncode == 1 and "published" in done.stderr, done.stderr  # the published one stays
    assert ctl(biomaj_cmd, updated, "publish", "example", "--release", "1").returncode == 0
    done = ctl(biomaj_cmd, updated, "remove", "example", "--release", "2")
    assert (done.returncode, done.stdout.strip()) == (0, "example: release 2 removed"), done.stderr
    assert not (updated.root / "data" / "example" / "example_2").exists()


def test_verify_runs_on_the_server_and_prints_as_in_process(updated, biomaj_cmd):
    here, there = local(biomaj_cmd, updated, "verify", "example", "1"), ctl(biomaj_cmd, updated, "verify", "example", "1")
    assert (there.returncode, there.stdout) == (here.returncode, here.stdout) == (0, there.stdout)
    assert there.stdout.startswith("example: release 1: 3 files (") and "[example] verify 1" in there.stderr
    denied = ctl(biomaj_cmd, updated, "verify", "example", who="bob")  # not the owner, not an admin
    assert denied.returncode != 0 and denied.stderr.startswith("error: "), denied.stderr


def test_the_environment_gives_the_server_and_the_key(updated, biomaj_cmd):
    done = subprocess.run([*biomaj_cmd, "ctl", "status"], capture_output=True, text=True, timeout=60,
                          env={**clean_env(), "BIOMAJ_PROXY": updated.url, "BIOMAJ_APIKEY": updated.keys["alice"]},
                          cwd=updated.root.parent)  # no config.yml there: none is needed
    assert done.returncode == 0 and "example" in done.stdout, done.stderr
    assert updated.keys["alice"] not in done.stdout + done.stderr


@pytest.mark.parametrize("proxy, said", [
    ("ftp://127.0.0.1:21", "expected http://HOST:PORT"),
    ("http://alice:pw@127.0.0.1:1", "the API key goes in --api-key"),
])
def test_a_bad_proxy_url_is_refused(biomaj_cmd, proxy, said):
    done = subprocess.run([*biomaj_cmd, "ctl", "--proxy", proxy, "status"], capture_output=True, text=True,
                          timeout=60, env=clean_env())
    assert done.returncode == 2 and said in done.stderr, done.stderr


def test_no_server_at_the_address_says_so(biomaj_cmd):
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run([*biomaj_cmd, "ctl", "--proxy", url, "status"], capture_output=True, text=True, timeout=60,
                          env=clean_env())
    assert done.returncode == 1 and f"no biomaj server answers at {url}" in done.stderr, done.stderr


def test_verbose_follow_streams_the_session_log(updated, biomaj_cmd):
    done = ctl(biomaj_cmd, updated, "-v", "update", "example", "--follow", "--fromscratch")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "[example] download" in lines
    started = [line for line in lines if "Workflow:Start:" in line]
    assert [line.rsplit("Workflow:Start:", 1)[1] for line in started][:2] == ["init", "check"], done.stderr
    assert re.search(r"Workflow:release \S+ updated$", done.stderr, re.M), done.stderr  # the log's last line
    done = ctl(biomaj_cmd, updated, "update", "example", "--follow", "--fromscratch")  # without -v: no log lines
    assert done.returncode == 0 and "Workflow:Start:" not in done.stderr, done.stderr


async def test_ctrl_c_and_cancel_stop_a_job_on_the_server(updated, biomaj_cmd):
    """A bank whose big file stalls: Ctrl-C on the remote command cancels the job on the server;
    `ctl --proxy cancel` from another shell does the same."""
    import asyncio
    import shutil
    import signal

    from tests.cli.test_bank_commands import BIG
    from tests.servers import http_server
    from tests.servers.faults import Faults

    remote = updated.root / "slow-remote"
    shutil.copytree(updated.root / "example-remote", remote)
    (remote / BIG).write_bytes(b">big\n" + b"ACGT" * (1 << 18))
    faults = Faults(stall={BIG: 60})
    server = await http_server.start(remote, faults, protocol="http")
    conf = updated.root / "conf"
    text = (conf / "example.properties").read_text().replace("protocol=local", "protocol=http")
    text = re.sub(r"(?m)^server=.*$", f"server=127.0.0.1:{server.config.port}", text)
    text = re.sub(r"(?m)^remote\.dir=.*$", "remote.dir=/", text)
    text = re.sub(r"(?m)^db\.name=.*$", "db.name=slow", text)
    (conf / "slow.properties").write_text(text)
    key = updated.keys["alice"]

    async def start_update() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *biomaj_cmd, "ctl", "--proxy", updated.url, "--api-key", key, "update", "slow",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
        started = asyncio.ensure_future(faults.started(BIG).wait())
        await asyncio.wait({started, asyncio.ensure_future(proc.wait())}, timeout=60,
                           return_when=asyncio.FIRST_COMPLETED)
        assert started.done(), (await proc.stderr.read()).decode() if proc.returncode is not None else "no transfer"
        await asyncio.sleep(0.5)  # the command is following the job's events
        return proc

    async def cancelled(proc: asyncio.subprocess.Process) -> str:
        _out, err = await asyncio.wait_for(proc.communicate(), 30)  # well before the 60 s stall ends
        assert proc.returncode == 1 and "error: update of slow cancelled" in err.decode(), err.decode()
        return err.decode()

    try:
        update = await start_update()
        update.send_signal(signal.SIGINT)
        assert "cancelling update of slow (Ctrl-C again to quit at once)" in await cancelled(update)

        faults.started(BIG).clear()
        faults.stall[BIG] = 60
        update = await start_update()
        cancel = await asyncio.create_subprocess_exec(
            *biomaj_cmd, "ctl", "--proxy", updated.url, "--api-key", key, "cancel", "slow",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
        out, err = await asyncio.wait_for(cancel.communicate(), 30)
        assert cancel.returncode == 0 and re.fullmatch(r"slow: update job \w+ asked to stop\n", out.decode()), err
        await cancelled(update)
    finally:
        await server.close()
    assert updated.get("/api/v1/banks/slow/status", "alice")["jobs"] == []
