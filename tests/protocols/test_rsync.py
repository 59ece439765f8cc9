"""rsync beyond the conformance suite: list parsing on lines captured from the real program,
local and ssh sources, wildcard-proof names, resume, cancellation, daemon login, errors."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import time
from dataclasses import replace

import asyncssh
import pytest

from biomaj.protocols import open_protocol
from biomaj.protocols.base import (
    FatalError,
    RemoteConfig,
    RemoteNotFound,
    RetryableError,
    Throttled,
    UnsafePath,
)
from biomaj.protocols.rsync import RsyncProtocol, _translate_error, parse_list_line
from tests.conftest import IN_CI
from tests.servers import rsync_server
from tests.servers.faults import Faults

# `LC_ALL=C rsync --list-only --no-motd --protect-args --copy-links -- DIR/` (rsync 3.5.0) of a
# directory holding the names below; `link` is a symbolic link to big.bin, `dlink` to sub.
GOLDEN = b"""\
drwxr-xr-x          4,096 2026/11/29 13:40:51 .
-rw-r--r--              1 2026/11/29 13:40:51 -rf
-rw-r--r--              5 2026/11/29 13:40:51 a[1].txt
-rw-r--r--              1 2026/11/29 13:40:51 b c.txt
-rw-r--r--              1 2026/11/29 13:40:51 back\\#slash
-rw-r--r--              1 2026/11/29 13:40:51 bad\\#377
-rw-r--r--      1,234,567 1999/12/31 23:59:59 big.bin
-rw-r--r--      1,234,567 1999/12/31 23:59:59 link
-rw-r--r--              1 2026/11/29 13:40:51 nl\\#012x
-rw-r--r--              2 2026/11/29 13:40:51 \\#303\\#251t\\#303\\#251.txt
-rw-r--r--              1 2026/11/29 13:40:55 x\\#134#101
drwxr-xr-x          4,096 2026/11/29 13:40:51 dlink
drwxr-xr-x          4,096 2026/11/29 13:40:51 sub
"""


def _local_time(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y/%m/%d %H:%M:%S"))


def test_list_lines_captured_from_rsync():
    entries = [parse_list_line(line, "dir") for line in GOLDEN.splitlines(keepends=True)]
    assert entries[0] is None  # "." is the directory itself
    parsed = {e.path: e for e in entries[1:]}
    assert list(parsed) == [
        "dir/-rf", "dir/a[1].txt", "dir/b c.txt", "dir/back\\#slash", "dir/bad\udcff", "dir/big.bin",
        "dir/link", "dir/nl\nx", "dir/été.txt", "dir/x\\#101", "dir/dlink", "dir/sub",
    ]
    big = parsed["dir/big.bin"]
    assert (big.size, big.mtime, big.is_dir, big.is_link) == (1_234_567, _local_time("1999/12/31 23:59:59"), False, False)
    assert parsed["dir/sub"].is_dir and parsed["dir/sub"].size is None
    assert parsed["dir/été.txt"].size == 2
    assert parsed["dir/b c.txt"].mtime == _local_time("2026/11/29 13:40:51")
    assert len({e.hash for e in parsed.values()}) == len(parsed)
    assert parse_list_line(b"rsync: some warning\n") is None
    assert parse_list_line(b"data           \tthe module comment\n") is None
    assert parse_list_line(b"-rw-r--r--              7 2020/09/13 12:26:40 top.txt\n").path == "top.txt"


# Sources -----------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "a[1].txt").write_bytes(b"bracket")
    (root / "a1.txt").write_bytes(b"plain")
    (root / "b c.txt").write_bytes(b"space")
    (root / "sub" / "d.txt").write_bytes(b"deep")
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (root / "-rf").write_bytes(b"dash")
    return root


@pytest.fixture
async def daemon(tree):
    server = await rsync_server.start(tree, Faults())
    try:
        yield server
    finally:
        await server.close()


async def names(client, path=""):
    return {entry.path: entry async for entry in client.list(path)}


async def fetched(client, path, dest):
    entry = await client.fetch(path, str(dest))
    return entry, dest.read_bytes()


@pytest.mark.parametrize("mode", ["daemon", "local", "local-server"])
async def test_sources_and_wildcard_proof_names(tree, daemon, tmp_path, mode):
    config = {
        "daemon": daemon.config,
        "local": RemoteConfig(protocol="rsync", root=str(tree)),
        "local-server": RemoteConfig(protocol="rsync", host=str(tree), root="/"),  # BioMAJ 3's spelling
    }[mode]
    async with open_protocol(config) as client:
        listed = await names(client)
        assert set(listed) == {"a[1].txt", "a1.txt", "b c.txt", "sub", "big.bin", "-rf"}
        assert set(await names(client, "sub")) == {"sub/d.txt"}
        entry, data = await fetched(client, "a[1].txt", tmp_path / "x")
        assert data == b"bracket"  # never a1.txt, as a remote glob would give
        assert entry.size == 7 and entry.mtime == os.stat(tree / "a[1].txt").st_mtime
        assert (await fetched(client, "b c.txt", tmp_path / "y"))[1] == b"space"
        assert (await client.stat("a[1].txt")).size == 7
        with pytest.raises(RemoteNotFound):
            await client.stat("a[2].txt")


@pytest.mark.parametrize("mode", ["daemon", "local"])
async def test_symbolic_links_are_followed(tree, daemon, tmp_path, mode):
    (tree / "link.bin").symlink_to("big.bin")
    (tree / "linkdir").symlink_to("sub")
    (tree / "dangling").symlink_to("nowhere")
    config = daemon.config if mode == "daemon" else RemoteConfig(protocol="rsync", root=str(tree))
    async with open_protocol(config) as client:
        listed = await names(client)
        assert "dangling" not in listed and "a1.txt" in listed
        assert listed["link.bin"].size == (tree / "big.bin").stat().st_size and not listed["link.bin"].is_dir
        assert listed["linkdir"].is_dir
        assert set(await names(client, "linkdir")) == {"linkdir/d.txt"}
        with pytest.raises(RemoteNotFound):
            await client.stat("dangling")
        _, data = await fetched(client, "link.bin", tmp_path / "copy")
    assert data == (tree / "big.bin").read_bytes()


async def test_names_starting_with_a_dash_are_refused(daemon, tmp_path, monkeypatch):
    async with open_protocol(daemon.config) as client:
        for path in ("-rf", "sub/-x", "../a1.txt"):
            with pytest.raises(UnsafePath):
                await client.fetch(path, str(tmp_path / "out"))
            with pytest.raises(UnsafePath):
                await client.stat(path)
        # A destination that looks like an option still lands in a file of that name.
        monkeypatch.chdir(tmp_path)
        await client.fetch("a1.txt", "-out")
    assert (tmp_path / "-out").read_bytes() == b"plain"


async def test_open_is_not_supported(daemon):
    client = open_protocol(daemon.config)
    assert type(client).features.native_fetch
    with pytest.raises(NotImplementedError, match="fetch"):
        client.open("a1.txt")


# Transfers ---------------------------------------------------------------------------------------


def _last_sent(server) -> int:
    """Bytes the daemon says it sent in its last transfer (its own log)."""
    log = (server.state / "rsyncd.log").read_text()
    return int(re.findall(r"sent ([\d,]+) bytes", log)[-1].replace(",", ""))


async def test_resume_of_a_partial_file(daemon, tree, tmp_path):
    data = (tree / "big.bin").read_bytes()
    part = tmp_path / "big.bin.part"
    part.write_bytes(data[:2_000_000])
    async with open_protocol(daemon.config) as client:
        entry = await client.fetch("big.bin", str(part))
    assert part.read_bytes() == data
    assert entry.size == len(data) and entry.mtime == os.stat(tree / "big.bin").st_mtime
    assert _last_sent(daemon) < len(data) - 1_500_000  # the first 2 MB were not sent again


async def test_a_cut_transfer_keeps_its_part_and_resumes(daemon, tree, tmp_path):
    daemon.faults.drop_after["big.bin"] = 1_000_000
    part = tmp_path / "big.bin.part"
    async with open_protocol(daemon.config) as client:
        with pytest.raises(RetryableError, match="code 12"):
            await client.fetch("big.bin", str(part))
        kept = part.stat().st_size
        await client.fetch("big.bin", str(part))
    assert 500_000 < kept <= 1_000_000
    assert part.read_bytes() == (tree / "big.bin").read_bytes()
    assert daemon.faults.transfers["big.bin"] == 2


async def test_progress_is_reported(daemon, tree, tmp_path):
    daemon.faults.stall["big.bin"] = 1.5  # progress is polled 4 times a second: several polls fall in the stall
    reported = []
    async with open_protocol(daemon.config) as client:
        await client.fetch("big.bin", str(tmp_path / "big.bin"), on_bytes=reported.append)
    # Reported as the file grows on disk, which happens at rsync's own pace: at least once.
    assert reported and sum(reported) == (tree / "big.bin").stat().st_size


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


async def test_cancellation_kills_the_child(daemon, tmp_path):
    daemon.faults.stall["big.bin"] = 30
    part = tmp_path / "big.bin"
    client = open_protocol(daemon.config)
    task = asyncio.create_task(client.fetch("big.bin", str(part)))
    async with asyncio.timeout(10):
        while not (client._children and daemon.faults.active):
            await asyncio.sleep(0.05)  # the transfer is under way in another process
    (child,) = client._children
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert child.returncode is not None and not _running(child.pid)
    assert client._children == set()
    await client.close()


async def test_close_kills_a_running_listing(daemon):
    client = open_protocol(daemon.config)
    listing = client.list()
    await anext(listing)
    (child,) = client._children
    await client.close()
    assert child.returncode is not None
    await listing.aclose()


# Daemon logins and errors ------------------------------------------------------------------------


async def test_daemon_password(tree, tmp_path):
    server = await rsync_server.start(tree, Faults(), user="biomaj", password="rsync-secret-77")
    try:
        async with open_protocol(server.config) as client:
            assert "a1.txt" in await names(client)
            assert (await fetched(client, "a1.txt", tmp_path / "a"))[1] == b"plain"
        wrong = replace(server.config, password="wrong-password-99")
        async with open_protocol(wrong) as client:
            with pytest.raises(FatalError, match="authentication failed") as failure:
                await names(client)
        assert "wrong-password-99" not in str(failure.value)
        async with open_protocol(replace(server.config, password=None)) as client:
            with pytest.raises(FatalError, match="authentication failed"):
                await names(client)  # no terminal prompt: fails at once
    finally:
        await server.close()
    assert "RSYNC_PASSWORD" not in os.environ


async def test_unknown_module_and_missing_paths(daemon, tmp_path):
    async with open_protocol(replace(daemon.config, root="/nomodule/")) as client:
        with pytest.raises(RemoteNotFound, match="no such rsync module"):
            await names(client)
    async with open_protocol(daemon.config) as client:
        with pytest.raises(RemoteNotFound):
            await client.fetch("none.txt", str(tmp_path / "n"))
        with pytest.raises(RemoteNotFound):
            await names(client, "nodir")


async def test_injected_server_errors(daemon, tmp_path):
    daemon.faults.transient_errors["a1.txt"] = 1
    daemon.faults.throttle["a1.txt"] = 1
    async with open_protocol(daemon.config) as client:
        with pytest.raises(RetryableError) as first:
            await client.fetch("a1.txt", str(tmp_path / "a"))
        assert not isinstance(first.value, Throttled)
        with pytest.raises(Throttled):
            await client.fetch("a1.txt", str(tmp_path / "a"))
        await client.fetch("a1.txt", str(tmp_path / "a"))
    assert daemon.faults.transfers["a1.txt"] == 3


async def test_connection_refused_is_retryable(tmp_path):
    from tests.servers.rsync_server import _free_port

    port = _free_port()
    config = RemoteConfig(protocol="rsync", host="127.0.0.1", port=port, root="/data/", connect_timeout=2)
    async with open_protocol(config) as client:
        with pytest.raises(RetryableError, match=f"^cannot reach rsync://127.0.0.1:{port}: connection refused$"):
            await names(client)


def test_bad_configuration():
    with pytest.raises(FatalError, match="rsync_transport"):
        RsyncProtocol(RemoteConfig(protocol="rsync", host="h", options={"rsync_transport": "telnet"}))
    with pytest.raises(FatalError, match="server"):
        RsyncProtocol(RemoteConfig(protocol="rsync", host="-oProxyCommand=x"))
    with pytest.raises(FatalError, match="user"):
        RsyncProtocol(RemoteConfig(protocol="rsync", host="h", user="a b"))


@pytest.mark.parametrize(
    ("code", "stderr", "expected"),
    [
        (23, 'rsync: [sender] link_stat "x" (in data) failed: No such file or directory (2)', RemoteNotFound),
        (23, 'rsync: [sender] send_files failed to open "x" (in data): Permission denied (13)', FatalError),
        (23, "some files/attrs were not transferred", RetryableError),
        (24, "file has vanished: x", RemoteNotFound),
        (5, "@ERROR: auth failed on module data", FatalError),
        (5, "@ERROR: max connections (2) reached -- try again later", Throttled),
        (5, "@ERROR: Unknown module 'x'", RemoteNotFound),
        (5, "@ERROR: chdir failed", RetryableError),
        (10, "failed to connect to h: Connection refused (111)", RetryableError),
        (12, "connection unexpectedly closed", RetryableError),
        (30, "io timeout after 30 seconds -- exiting", RetryableError),
        (35, "timeout waiting for daemon connection", RetryableError),
        (1, "syntax or usage error", FatalError),
        (2, "protocol incompatibility", FatalError),
        (4, "requested action not supported", FatalError),
        (11, "error in file IO", FatalError),
        (255, "Host key verification failed.", FatalError),
        (255, "ssh: connect to host h port 22: Connection refused", RetryableError),
        (-9, "", RetryableError),
    ],
)
def test_translate_error(code, stderr, expected):
    assert type(_translate_error(code, stderr.encode(), "h: fetch x")) is expected


# rsync over ssh ----------------------------------------------------------------------------------


async def _run_rsync_server(process: asyncssh.SSHServerProcess) -> None:
    argv = shlex.split(process.command or "")
    if argv[:2] != ["rsync", "--server"]:
        process.exit(127)
        return
    child = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    await process.redirect(stdin=child.stdin, stdout=child.stdout, stderr=child.stderr)
    process.exit(await child.wait())
    await process.wait_closed()


class _KeyOnly(asyncssh.SSHServer):
    def __init__(self, key):
        self.key = key

    def begin_auth(self, username):
        return True

    def public_key_auth_supported(self):
        return True

    def validate_public_key(self, username, key):
        return username == "biomaj" and key == self.key


async def test_rsync_over_ssh(tree, tmp_path):
    if shutil.which("ssh") is None:
        reason = "needs the OpenSSH client (Debian: apt-get install openssh-client)"
        if IN_CI:
            pytest.fail(f"{reason}; required when CI=true")
        pytest.skip(reason)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    user_key = asyncssh.generate_private_key("ssh-ed25519")
    key_file = tmp_path / "id_ed25519"
    user_key.write_private_key(str(key_file))
    key_file.chmod(0o600)
    public = user_key.convert_to_public()
    server = await asyncssh.create_server(
        lambda: _KeyOnly(public), "127.0.0.1", 0, server_host_keys=[host_key], process_factory=_run_rsync_server,
        encoding=None,
    )
    port = server.get_port()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
    options = {"rsync_transport": "ssh", "ssh_key": str(key_file), "ssh_hosts_file": str(known)}
    config = RemoteConfig(protocol="rsync", host="127.0.0.1", port=port, user="biomaj", root=str(tree), options=options)
    try:
        async with open_protocol(config) as client:
            assert set(await names(client, "sub")) == {"sub/d.txt"}
            assert (await fetched(client, "a[1].txt", tmp_path / "x"))[1] == b"bracket"
        stranger = replace(config, options={**options, "ssh_hosts_file": str(tmp_path / "empty")})
        async with open_protocol(stranger) as client:
            with pytest.raises(FatalError, match="host key"):
                await names(client)
    finally:
        server.close()
        await server.wait_closed()
