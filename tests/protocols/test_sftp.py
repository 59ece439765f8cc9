"""SFTP beyond the conformance suite: host keys, logins, reconnection, timeouts, symlinks, big
directories, error mapping. Every test runs against the real asyncssh server of
tests/servers/sftp_server.py."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import tracemalloc
from dataclasses import replace

import asyncssh
import pytest

from biomaj.protocols import open_protocol
from biomaj.protocols.base import FatalError, RemoteNotFound, RetryableError, UnsafePath
from biomaj.protocols.sftp import SftpProtocol, _translate_error
from tests.servers import sftp_server
from tests.servers.faults import Faults


@pytest.fixture
async def server(tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"alpha" * 1000)
    (tree / "sub" / "b.txt").write_bytes(b"beta")
    (tree / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    running = await sftp_server.start(tree, Faults())
    running.tree = tree
    try:
        yield running
    finally:
        await running.close()


def client(server, **options) -> SftpProtocol:
    config = server.config
    return open_protocol(replace(config, options={**config.options, **options}))


async def names(client, path=""):
    return {entry.path: entry async for entry in client.list(path)}


# Host keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("hosts_file", ["missing", "empty"])
async def test_unknown_host_is_rejected_by_default(server, tmp_path, hosts_file):
    known = tmp_path / "known_hosts"
    if hosts_file == "empty":
        known.write_text("")
    async with client(server, ssh_hosts_file=str(known)) as sftp:
        with pytest.raises(FatalError) as refusal:
            await names(sftp)
    message = str(refusal.value)
    assert f"127.0.0.1:{server.config.port}" in message
    assert "ssh_new_host=add" in message and str(known) in message
    assert server.faults.logins == 0


async def test_accept_trusts_an_unknown_host_without_saving_it(server, tmp_path):
    known = tmp_path / "known_hosts"
    async with client(server, ssh_hosts_file=str(known), ssh_new_host="accept") as sftp:
        assert "a.txt" in await names(sftp)
    assert not known.exists()


async def test_add_saves_the_host_key(server, tmp_path):
    known = tmp_path / "ssh" / "known_hosts"
    async with client(server, ssh_hosts_file=str(known), ssh_new_host="add") as sftp:
        assert "a.txt" in await names(sftp)
    line = known.read_text()
    algorithm, key = server.host_key.export_public_key().decode().split()[:2]
    assert line == f"[127.0.0.1]:{server.config.port} {algorithm} {key}\n"
    async with client(server, ssh_hosts_file=str(known)) as sftp:  # now known: reject passes
        assert "a.txt" in await names(sftp)
    assert known.read_text() == line


@pytest.mark.parametrize("policy", ["reject", "accept", "add"])
async def test_a_changed_host_key_is_always_fatal(server, tmp_path, policy):
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.config.port} {other}")
    before = known.read_text()
    async with client(server, ssh_hosts_file=str(known), ssh_new_host=policy) as sftp:
        with pytest.raises(FatalError, match="CHANGED"):
            await names(sftp)
    assert known.read_text() == before
    assert server.faults.logins == 0


def test_a_bad_policy_is_refused(server):
    with pytest.raises(FatalError, match="ssh_new_host='maybe'"):
        client(server, ssh_new_host="maybe")


# Logins ------------------------------------------------------------------------------------------


async def test_wrong_password_is_fatal_and_never_shown(server, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "not-the-password-4242"
    async with open_protocol(replace(server.config, password=secret)) as sftp:
        with pytest.raises(FatalError, match="authentication failed") as failure:
            await names(sftp)
    assert secret not in str(failure.value) and secret not in repr(failure.value)
    assert secret not in caplog.text
    assert secret not in repr(sftp.config)


async def test_login_with_an_ssh_key(server, tmp_path):
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_file = tmp_path / "id_test"
    key.write_private_key(str(key_file))
    server.client_keys.append(key.convert_to_public())
    config = replace(server.config, password=None, options={**server.config.options, "ssh_key": str(key_file)})
    async with open_protocol(config) as sftp:
        assert "a.txt" in await names(sftp)
    assert server.faults.logins == 1


async def test_an_unreadable_ssh_key_is_fatal(server, tmp_path):
    async with client(server, ssh_key=str(tmp_path / "no-such-key")) as sftp:
        with pytest.raises(FatalError, match="ssh_key=.*no-such-key"):
            await names(sftp)


# Connections -------------------------------------------------------------------------------------


async def test_one_login_serves_every_call(server):
    async with client(server) as sftp:
        await names(sftp)
        await sftp.stat("a.txt")
        for _ in range(3):
            async with sftp.open("a.txt") as stream:
                assert b"".join([c async for c in stream]) == b"alpha" * 1000
    assert server.faults.logins == 1


async def test_reconnects_after_the_server_closed_the_connection(server):
    async with client(server) as sftp:
        await names(sftp)
        server.drop_connections()
        failures = 0
        for _ in range(2):  # the loss may be noticed by the next call (retryable) or before it
            try:
                assert "a.txt" in await names(sftp)
                break
            except RetryableError:
                failures += 1
        else:
            pytest.fail("no reconnection")
    assert failures <= 1
    assert server.faults.logins == 2


async def test_a_cut_transfer_is_retryable_and_the_next_call_reconnects(server):
    server.faults.drop_after["big.bin"] = 1_000_000
    received = []
    async with client(server) as sftp:
        with pytest.raises(RetryableError):
            async with sftp.open("big.bin") as stream:
                async for chunk in stream:
                    received.append(chunk)
        async with sftp.open("big.bin", offset=len(b"".join(received))) as stream:
            rest = b"".join([c async for c in stream])
    assert len(b"".join(received)) <= 1_000_000
    assert b"".join(received) + rest == (server.tree / "big.bin").read_bytes()
    assert server.faults.logins == 2


async def test_offsets_at_and_past_the_end(server):
    async with client(server) as sftp:
        for offset, expected in ((4999, b"a"), (5000, b""), (6000, b"")):
            async with sftp.open("a.txt", offset) as stream:
                assert b"".join([c async for c in stream]) == expected
                assert stream.offset == offset and stream.size == 5000


async def test_silence_longer_than_read_timeout_is_retryable(server):
    server.faults.stall["big.bin"] = 5.0
    sftp = open_protocol(replace(server.config, read_timeout=0.3))
    started = time.monotonic()
    try:
        with pytest.raises(RetryableError, match="no data for 0.3 s"):
            async with sftp.open("big.bin") as stream:
                async for _ in stream:
                    pass
        assert time.monotonic() - started < 3
        async with sftp.open("a.txt") as stream:  # a new connection serves the next call
            assert b"".join([c async for c in stream]) == b"alpha" * 1000
    finally:
        await sftp.close()


async def test_a_server_failure_is_retryable_without_a_new_login(server):
    server.faults.transient_errors["a.txt"] = 1
    async with client(server) as sftp:
        with pytest.raises(RetryableError, match="temporary failure"):
            async with sftp.open("a.txt"):
                pass
        async with sftp.open("a.txt") as stream:
            assert b"".join([c async for c in stream]) == b"alpha" * 1000
    assert server.faults.logins == 1


async def test_connection_refused_is_retryable(server):
    sftp = open_protocol(replace(server.config, port=1, connect_timeout=2))
    with pytest.raises(RetryableError):
        await names(sftp)
    await sftp.close()


# Paths -------------------------------------------------------------------------------------------


async def test_symbolic_links(server):
    (server.tree / "link.txt").symlink_to("a.txt")
    (server.tree / "linkdir").symlink_to("sub")
    (server.tree / "dangling").symlink_to("nowhere")
    async with client(server) as sftp:
        entries = await names(sftp)
        linked = await sftp.stat("link.txt")
        async with sftp.open("link.txt") as stream:
            data = b"".join([c async for c in stream])
        inside = await names(sftp, "linkdir")
    assert entries["link.txt"].is_link and entries["link.txt"].size == 5000 and not entries["link.txt"].is_dir
    assert entries["linkdir"].is_link and entries["linkdir"].is_dir
    assert "dangling" not in entries
    assert not entries["a.txt"].is_link
    assert linked.is_link and linked.size == 5000
    assert data == b"alpha" * 1000
    assert set(inside) == {"linkdir/b.txt"}


async def test_unsafe_names_are_refused(server):
    server.faults.evil_names.append("../escape.txt")
    async with client(server) as sftp:
        with pytest.raises(UnsafePath, match="unsafe remote name '../escape.txt'"):
            await names(sftp)
        assert "sub/b.txt" in await names(sftp, "sub")  # only the root listing holds it
        for path in ("../a.txt", "sub/../../x", "a\x00b"):
            with pytest.raises(UnsafePath):
                await sftp.stat(path)


async def test_open_a_directory_or_a_missing_file(server):
    async with client(server) as sftp:
        with pytest.raises(FatalError, match="is a directory"):
            async with sftp.open("sub"):
                pass
        with pytest.raises(RemoteNotFound):
            async with sftp.open("sub/nothing.txt"):
                pass
        with pytest.raises(RemoteNotFound):
            await names(sftp, "a.txt/x")


async def test_root_is_honoured(server):
    async with open_protocol(replace(server.config, root="/sub/")) as sftp:
        assert set(await names(sftp)) == {"b.txt"}
        assert (await sftp.stat("b.txt")).size == 4


# Big directory -----------------------------------------------------------------------------------


async def test_listing_100000_entries_streams_in_little_memory(server, capsys):
    many = server.tree / "many"
    many.mkdir()
    for i in range(100_000):
        os.close(os.open(many / f"file{i:06d}.dat", os.O_CREAT | os.O_WRONLY, 0o644))
    async with client(server) as sftp:
        await sftp.stat("many")  # logged in before the clock starts
        started = time.monotonic()
        count = sum([1 async for _ in sftp.list("many")])
        elapsed = time.monotonic() - started
        tracemalloc.start()
        try:
            assert sum([1 async for _ in sftp.list("many")]) == 100_000
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    with capsys.disabled():
        print(f"\nsftp: 100,000 entries listed in {elapsed:.2f} s (server in the same process), "
              f"tracemalloc peak {peak / 2**20:.1f} MiB")
    assert count == 100_000
    assert peak < 150 * 2**20


# Error mapping -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (asyncssh.SFTPNoSuchFile("gone"), RemoteNotFound),
        (asyncssh.SFTPNoSuchPath("gone"), RemoteNotFound),
        (asyncssh.SFTPPermissionDenied("no"), FatalError),
        (asyncssh.SFTPOpUnsupported("no"), FatalError),
        (asyncssh.SFTPFailure("busy"), RetryableError),
        (asyncssh.SFTPConnectionLost("lost"), RetryableError),
        (asyncssh.SFTPNoConnection("lost"), RetryableError),
        (asyncssh.PermissionDenied("auth"), FatalError),
        (asyncssh.HostKeyNotVerifiable("key"), FatalError),
        (asyncssh.ConnectionLost("lost"), RetryableError),
        (ConnectionRefusedError(111, "Connection refused"), RetryableError),
        (TimeoutError(), RetryableError),
    ],
)
def test_translate_error(error, expected):
    translated = _translate_error(error, "host:22: open x")
    assert type(translated) is expected
    assert "host:22: " in str(translated) or "sftp" in str(translated)


async def test_leaving_a_stream_early_cancels_its_reads(server):
    async with client(server) as sftp:
        async with sftp.open("big.bin") as stream:
            async for _ in stream:
                break
        reads = [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "SFTPClientFile.read"]
        assert [t for t in reads if not t.done()] == []
        assert (await sftp.stat("a.txt")).size == 5000
    assert server.faults.logins == 1
