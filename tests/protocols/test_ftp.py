"""FTP specifics: listings captured from real servers (golden files), MLSD/LIST/MLST fallbacks,
one login for many files, REST refused, reconnection, credentials, FTPS, direct FTP, error mapping
and a 100,000-entry listing.

Golden files (tests/protocols/listings/) were captured with a raw client from Debian 12's
vsftpd 3.0.3 and ProFTPD 1.3.8 serving the same tree on 2026-11-29 13:25 UTC (CAPTURED);
``iis-dos-*.txt`` reproduce IIS's MS-DOS style column for column.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import tracemalloc
from calendar import timegm
from dataclasses import replace
from pathlib import Path

import pytest

from biomaj.protocols import open_protocol, protocol_class
from biomaj.protocols.base import FatalError, RemoteConfig, RemoteNotFound, RetryableError, Throttled, UnsafePath
from biomaj.protocols.ftp import DirectFtpProtocol, FtpProtocol, _FtpError, _translate_error
from biomaj.protocols.ftp_listing import (
    line_hash,
    parse_list_line,
    parse_mlsd_line,
    parse_mlsx_time,
    split_lines,
)
from tests.protocols.conftest import MTIME, build_tree
from tests.servers import ftp_server
from tests.servers.faults import Faults

LISTINGS = Path(__file__).parent / "listings"


def _ts(text: str) -> float:
    fields = [int(x) for x in text.replace("-", " ").replace(":", " ").split()]
    return float(timegm((*fields, *([0] * (6 - len(fields))), 0, 0, 0)))


CAPTURED = _ts("2026-11-29 13:25:51")


def _lines(name: str) -> list[bytes]:
    lines, rest = split_lines(b"", (LISTINGS / name).read_bytes())
    assert rest == b""
    return lines


def _parsed(name: str, prefix: str = "", now: float = CAPTURED):
    parse = parse_mlsd_line if "mlsd" in name else (lambda raw, prefix: parse_list_line(raw, prefix, now))
    entries = [parse(raw, prefix) for raw in _lines(name)]
    return [(e.path, e.size, e.mtime, "l" if e.is_link else "d" if e.is_dir else "f") for e in entries if e]


# The captured tree; a link's size is its own, not its target's, so it is not given.
LIST_TREE = [
    ("2010-01 report.txt", 77, _ts("2010-01-31"), "f"),
    ("a.fasta", 10000, _ts("2020-09-13"), "f"),
    ("current", None, _ts("2021-03-01"), "l"),
    ("empty.txt", 0, _ts("2020-09-13"), "f"),
    ("latest.fasta", None, _ts("2021-03-01"), "l"),
    ("name with spaces.txt", 1, _ts("2026-11-09 10:42"), "f"),
    ("release.txt", 11, _ts("2020-09-13"), "f"),
    ("résumé.txt", 3, _ts("2021-07-04"), "f"),
    ("sub", None, _ts("2019-01-02"), "d"),
    ("uniprot_sprot.dat.gz", 5000000, _ts("2026-11-09 10:42"), "f"),
]
MLSD_TREE = {
    "2010-01 report.txt": (77, _ts("2010-01-31 23:59:59"), "f"),
    "a.fasta": (10000, _ts("2020-09-13 12:26:40"), "f"),
    "current": (None, _ts("2021-03-01 08:00:00"), "l"),
    "empty.txt": (0, _ts("2020-09-13 12:26:40"), "f"),
    "latest.fasta": (None, _ts("2021-03-01 08:00:00"), "l"),
    "name with spaces.txt": (1, _ts("2026-11-09 10:42:17"), "f"),
    "release.txt": (11, _ts("2020-09-13 12:26:40"), "f"),
    "résumé.txt": (3, _ts("2021-07-04 05:06:07"), "f"),
    "sub": (None, _ts("2019-01-02 03:04:05"), "d"),
    "uniprot_sprot.dat.gz": (5000000, _ts("2026-11-09 10:42:17"), "f"),
}


# Golden files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("listing", ["vsftpd-list.txt", "proftpd-list.txt"])
def test_unix_list_of_real_servers(listing):
    assert _parsed(listing) == LIST_TREE
    assert _parsed(listing.replace(".txt", "-sub.txt"), "sub/") == [("sub/deep", None, _ts("2026-01-02"), "d")]


def test_proftpd_mlsd_skips_cdir_and_pdir_and_keeps_seconds():
    entries = _parsed("proftpd-mlsd.txt")
    assert {path: rest for path, *rest in entries} == {k: list(v) for k, v in MLSD_TREE.items()}
    assert len(entries) == len(MLSD_TREE)
    assert _parsed("proftpd-mlsd-sub.txt", "sub/") == [("sub/deep", None, _ts("2026-01-02 03:04:05"), "d")]


def test_iis_dos_listings():
    assert _parsed("iis-dos-list.txt") == [
        ("aspnet_client", None, _ts("2024-01-16 14:15"), "d"),
        ("a.fasta", 10000, _ts("2020-09-13 12:26"), "f"),
        ("empty.txt", 0, _ts("2020-09-13 12:26"), "f"),
        ("name with spaces.txt", 1, _ts("2026-11-09 10:42"), "f"),
        ("Program Files (x86)", None, _ts("2021-07-04 05:06"), "d"),
        ("release.txt", 11, _ts("2020-09-13 12:26"), "f"),
        ("sub", None, _ts("2019-01-02 03:04"), "d"),
        ("uniprot_sprot.dat.gz", 5000000, _ts("2026-11-09 00:05"), "f"),
    ]
    assert _parsed("iis-dos-list-4digit.txt") == [
        ("a.fasta", 10000, _ts("2020-09-13 12:26"), "f"),
        ("sub", None, _ts("2019-01-02 03:04"), "d"),
        ("y2k.txt", 42, _ts("1999-12-31 23:59"), "f"),
    ]


def test_hash_is_biomaj3s_md5_of_the_listing_line():
    for listing in ("vsftpd-list.txt", "proftpd-mlsd.txt", "iis-dos-list.txt"):
        for raw in _lines(listing):
            entry = (parse_mlsd_line if "mlsd" in listing else parse_list_line)(raw)
            if entry is not None:
                # BioMAJ 3 decoded curl's output as ISO-8859-1 and hashed it as UTF-8
                assert entry.hash == hashlib.md5(raw.decode("latin-1").encode()).hexdigest()
    line = b"-rw-r--r-- 1 0 0 1 Jan 01  2020 x"
    assert line_hash(line) == hashlib.md5(line).hexdigest()


def test_recent_dates_take_the_year_ls_meant():
    line = b"-rw-r--r--    1 0        0               1 Nov 09 10:42 f"
    assert parse_list_line(line, now=_ts("2027-01-05")).mtime == _ts("2026-11-09 10:42")  # last year
    assert parse_list_line(line, now=_ts("2026-11-09 09:00")).mtime == _ts("2026-11-09 10:42")  # server ahead
    assert parse_list_line(line, now=_ts("2026-11-01")).mtime == _ts("2025-11-09 10:42")  # a week ahead: last year


def test_odd_lines():
    assert parse_list_line(b"total 42") is None
    assert parse_list_line(b"") is None
    assert parse_list_line(b"drwxr-xr-x   2 0 0 4096 Jan 02  2019 .") is None
    assert parse_list_line(b"-rw-r--r--+  1 ftp 77 Jan 31  2010 no group, ACL mark").path == "no group, ACL mark"
    link = parse_list_line(b"lrwxrwxrwx 1 0 0 9 Mar 01  2021 odd -> name -> x")
    assert link.path == "odd" and link.is_link
    assert parse_mlsd_line(b"Type=file;Size=12;Modify=20200913122640.5; Mixed Case.txt").size == 12
    assert parse_mlsd_line(b"type=file;size=12;modify=20200913122640.5; x").mtime == MTIME + 0.5
    assert parse_mlsd_line(b"type=OS.unix=slink:/a;size=3; l").is_link
    assert parse_mlsd_line(b"no-space-no-name") is None
    assert parse_mlsd_line(b"type=file;size=1; \xe9t\xe9.txt").path == "\udce9t\udce9.txt"  # not UTF-8: kept


def test_mdtm_times():
    assert parse_mlsx_time("20200913122640") == MTIME
    assert parse_mlsx_time(b"20200913122640.250") == MTIME + 0.25
    for bad in ("", None, "2020091312", "20201313122640", "garbage!!!!!!!!"):
        assert parse_mlsx_time(bad) is None


def test_split_lines_across_chunks():
    data = b"a\r\nbb\ncc\r\n"
    for cut in range(len(data) + 1):
        first, rest = split_lines(b"", data[:cut])
        second, rest = split_lines(rest, data[cut:])
        assert first + second == [b"a", b"bb", b"cc"] and rest == b""


def test_mlst_reply_hashes_like_mlsd():
    from biomaj.protocols.ftp import _mlst_entry

    reply = (LISTINGS / "proftpd-mlst.txt").read_text().replace("\r", "").splitlines()
    entry = _mlst_entry("\n".join(line[4:] if line[:3].isdigit() else line for line in reply), "a.fasta")
    listed = {e.path: e for raw in _lines("proftpd-mlsd.txt") if (e := parse_mlsd_line(raw))}
    assert entry == listed["a.fasta"]


# Error mapping -----------------------------------------------------------------------------------


@pytest.mark.parametrize("code, text, error", [
    (550, "Failed to open file.", RemoteNotFound),
    (553, "Could not create file.", RemoteNotFound),
    (550, "Permission denied.", FatalError),
    (530, "Login incorrect.", FatalError),
    (532, "Need account for storing files.", FatalError),
    (530, "Sorry, the maximum number of clients (5) for this user are already connected.", Throttled),
    (421, "There are too many connected users, please try later.", Throttled),
    (451, "Requested action aborted: local error.", RetryableError),
    (425, "Can't open data connection.", RetryableError),
    (450, "missing: No such file or directory", RemoteNotFound),
    (502, "Command not implemented.", FatalError),
])
def test_replies_map_onto_shared_errors(code, text, error):
    assert type(_translate_error(_FtpError("RETR", code, text), "ftp h RETR x")) is error


def test_network_failures_are_retryable():
    for exc in (ConnectionResetError(), TimeoutError(), EOFError(), OSError(113, "No route to host")):
        assert type(_translate_error(exc, "ftp h")) is RetryableError
    assert _translate_error(ValueError("a bug"), "ftp h") is None


# Against the test server -------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "remote"
    root.mkdir()
    return root, build_tree(root)


async def _start(tree, protocol="ftp", faults=None, **options):
    return await ftp_server.start(tree[0], faults or Faults(), protocol=protocol, **options)


async def _read(client, path, offset=0):
    async with client.open(path, offset) as stream:
        data = b"".join([chunk async for chunk in stream])
    return stream, data


def test_registry():
    assert protocol_class("ftp") is FtpProtocol and protocol_class("ftps") is FtpProtocol
    assert protocol_class("directftp") is DirectFtpProtocol and protocol_class("directftps") is DirectFtpProtocol
    assert not DirectFtpProtocol.features.can_list and FtpProtocol.features.mtime_precision == 60


async def test_one_login_for_listing_and_many_files(tree):
    server = await _start(tree)
    try:
        async with open_protocol(server.config) as client:
            names = [e.path async for e in client.list() if not e.is_dir]
            for _ in range(10):
                for name in ("a.fasta", "release.txt"):
                    _, data = await _read(client, name)
                    assert data == tree[1][name]
            await client.stat("sub1/deep/c.txt")
            async with client.open("big.bin") as stream:  # left early: the session survives
                async for _ in stream:
                    break
            _, data = await _read(client, "sub2/d.txt")
        assert data == tree[1]["sub2/d.txt"] and "a.fasta" in names
        assert server.faults.logins == 1
    finally:
        await server.close()


async def test_mlsd_and_mlst_refused_fall_back_to_list_size_and_mdtm(tree):
    server = await _start(tree, refuse={"mlsd", "mlst"})
    try:
        async with open_protocol(server.config) as client:
            root = {e.path: e async for e in client.list()}
            deep = [e.path async for e in client.list("sub1/deep")]
            entry = await client.stat("a.fasta")
    finally:
        await server.close()
    assert set(root) == {"release.txt", "a.fasta", "big.bin", "empty.txt", "sub1", "sub2"}
    assert root["sub1"].is_dir and root["a.fasta"].size == 10_000
    assert root["a.fasta"].mtime == _ts("2020-09-13")  # an old date: LIST gives the day only
    assert root["a.fasta"].hash == line_hash(b"-rw-r--r--    1 ftp      ftp           10000 Sep 13  2020 a.fasta")
    assert deep == ["sub1/deep/c.txt"]
    assert (entry.size, entry.mtime) == (10_000, MTIME)


async def test_a_listing_without_size_or_date_is_completed_by_stat(tree):
    """A server whose MLSD and MLST lines carry neither size nor modify: stat() asks SIZE and MDTM
    (the manager completes such a listing with it, workflow/remote_files.py stat_incomplete)."""
    server = await _start(tree, bare_facts=True)
    try:
        async with open_protocol(server.config) as client:
            listed = {e.path: e async for e in client.list()}
            entry = await client.stat("a.fasta")
            empty = await client.stat("empty.txt")
    finally:
        await server.close()
    server = await _start(tree, refuse={"mlst"}, bare_facts=True)  # no MLST at all: SIZE and MDTM alone
    try:
        async with open_protocol(server.config) as client:
            plain = await client.stat("sub1/deep/c.txt")
    finally:
        await server.close()
    assert (listed["a.fasta"].size, listed["a.fasta"].mtime) == (None, None)
    assert (entry.size, entry.mtime) == (10_000, MTIME) and entry.hash
    assert (empty.size, empty.mtime) == (0, MTIME)
    assert (plain.size, plain.mtime) == (1234, MTIME) and plain.hash


async def test_list_only_option_never_sends_mlsd(tree):
    server = await _start(tree)
    try:
        config = replace(server.config, options={"ftp_listing": "list"})
        async with open_protocol(config) as client:
            entries = {e.path: e async for e in client.list()}
    finally:
        await server.close()
    assert entries["a.fasta"].mtime == _ts("2020-09-13")


@pytest.mark.parametrize("method", ["multicwd", "nocwd"])
async def test_ftp_methods(tree, method):
    server = await _start(tree)
    try:
        async with open_protocol(replace(server.config, options={"ftp_method": method})) as client:
            deep = [e.path async for e in client.list("sub1/deep")]
            entry = await client.stat("sub1/deep/c.txt")
            _, data = await _read(client, "sub1/deep/c.txt", 1000)
            with pytest.raises(RemoteNotFound):
                await client.stat("sub1/missing")
    finally:
        await server.close()
    assert deep == ["sub1/deep/c.txt"] and entry.size == 1234 and data == tree[1]["sub1/deep/c.txt"][1000:]


async def test_rest_refused_restarts_at_zero(tree):
    server = await _start(tree, refuse={"rest"})
    try:
        async with open_protocol(server.config) as client:
            stream, data = await _read(client, "big.bin", 1_000_000)
    finally:
        await server.close()
    assert stream.offset == 0 and data == tree[1]["big.bin"]


async def test_reconnects_after_the_server_dropped_the_session(tree):
    server = await _start(tree)
    try:
        async with open_protocol(server.config) as client:
            assert len([e async for e in client.list()]) == 6
            server.drop_sessions()
            await asyncio.sleep(0.05)
            entry = await client.stat("a.fasta")  # no error: the idle session is replaced
            server.drop_sessions()
            _, data = await _read(client, "a.fasta")
            server.drop_sessions(b"421 Timeout.\r\n")  # an idle timeout, as vsftpd says it
            await asyncio.sleep(0.05)
            deep = [e.path async for e in client.list("sub1/deep")]
        assert entry.size == 10_000 and data == tree[1]["a.fasta"] and deep == ["sub1/deep/c.txt"]
        assert server.faults.logins == 4
    finally:
        await server.close()


async def test_cancelling_a_transfer_is_prompt(tree):
    server = await _start(tree, faults=Faults(stall={"big.bin": 30.0}))
    try:
        async with open_protocol(server.config) as client:
            first = asyncio.Event()

            async def fetch():
                async with client.open("big.bin") as stream:
                    async for _ in stream:
                        first.set()

            task = asyncio.create_task(fetch())
            await asyncio.wait_for(first.wait(), 5)
            started = time.perf_counter()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.perf_counter() - started < 1.0
            assert (await _read(client, "a.fasta"))[1] == tree[1]["a.fasta"]
        assert server.faults.logins == 2  # the interrupted session was not reused
    finally:
        await server.close()


def test_bad_options_are_fatal():
    from biomaj.protocols.base import RemoteConfig

    for options in ({"ssl_verifypeer": "maybe"}, {"ftp_method": "sideways"}, {"ftps_mode": "both"},
                    {"ftp_listing": "nlst"}, {"tcp_keepalive": "soon"}):
        with pytest.raises(FatalError, match="options"):
            open_protocol(RemoteConfig(protocol="ftps", host="h", options=options))


async def test_wrong_credentials_are_fatal_and_secret(tree):
    server = await _start(tree)
    try:
        for changes in ({"password": "wrong-secret-42"}, {"user": "nobody", "password": "wrong-secret-42"}):
            async with open_protocol(replace(server.config, **changes)) as client:
                with pytest.raises(FatalError) as failure:
                    await client.stat("a.fasta")
            assert "wrong-secret-42" not in str(failure.value) and "530" in str(failure.value)
        assert server.faults.logins == 0
    finally:
        await server.close()


async def test_faults_map_onto_shared_errors(tree):
    faults = Faults(throttle={"a.fasta": 1}, transient_errors={"release.txt": 1}, drop_after={"big.bin": 100_000},
                    stall={"sub2/d.txt": 5.0})
    server = await _start(tree, faults=faults)
    try:
        async with open_protocol(replace(server.config, read_timeout=0.5)) as client:
            with pytest.raises(Throttled):
                await _read(client, "a.fasta")
            with pytest.raises(RetryableError, match="451"):
                await _read(client, "release.txt")
            received = []
            with pytest.raises(RetryableError, match="426"):
                async with client.open("big.bin") as stream:
                    async for chunk in stream:
                        received.append(chunk)
            assert b"".join(received) == tree[1]["big.bin"][:100_000]
            with pytest.raises(RetryableError, match="timed out"):
                await _read(client, "sub2/d.txt")
            for name in ("a.fasta", "release.txt", "big.bin", "sub2/d.txt"):  # then all is well
                assert (await _read(client, name))[1] == tree[1][name]
    finally:
        await server.close()
    assert faults.transfers == {"a.fasta": 2, "release.txt": 2, "big.bin": 2, "sub2/d.txt": 2}
    assert faults.active == 0


async def test_the_transfer_command_goes_before_the_data_connection(tree):
    """RETR is sent as soon as EPSV is answered, before the data connection is made. When that
    connection is refused, RETR's reply says why: a missing file is RemoteNotFound (not a
    network error to retry), a server that gave up waiting for the data connection answers 425;
    either way the session stays in sync."""
    server = await _start(tree, dead_passive=True, data_wait=0.3)
    try:
        async with open_protocol(server.config) as client:
            with pytest.raises(RemoteNotFound, match="550"):
                await _read(client, "missing.txt")
            with pytest.raises(RetryableError, match="425"):
                await _read(client, "a.fasta")
            with pytest.raises(RemoteNotFound, match="550"):
                await _read(client, "sub1/missing.txt")
        assert server.faults.logins == 1
    finally:
        await server.close()


async def test_a_server_still_waiting_for_the_refused_data_connection_loses_the_session(tree):
    """No reply soon after a refused data connection (vsftpd waits a minute for it): the session
    is out of step, it is closed and the connection error is retryable; the next call logs in."""
    server = await _start(tree, dead_passive=True, data_wait=30)
    try:
        async with open_protocol(replace(server.config, read_timeout=0.3)) as client:
            started = time.perf_counter()
            with pytest.raises(RetryableError, match="ConnectionRefused"):
                await _read(client, "a.fasta")
            assert time.perf_counter() - started < 5
            with pytest.raises(RemoteNotFound):
                await _read(client, "missing.txt")
        assert server.faults.logins == 2
    finally:
        await server.close()


@pytest.mark.parametrize("answers_user", [False, True])
async def test_a_server_that_stops_answering_times_out_at_read_timeout(answers_user):
    """A reply waited for longer than read_timeout fails the call (retryable), whether it is the
    first wait of the connection or one in a series (one watchdog per connection, re-armed for
    each wait): the server greets, answers USER or not, then says nothing more."""

    async def session(reader, writer):
        writer.write(b"220 hello\r\n")
        while line := await reader.readline():
            if answers_user and line.startswith(b"USER"):
                writer.write(b"331 password please\r\n")
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        config = RemoteConfig(protocol="ftp", host="127.0.0.1", port=port, read_timeout=0.3, connect_timeout=2)
        async with open_protocol(config) as client:
            started = time.perf_counter()
            with pytest.raises(RetryableError, match="timed out"):
                await client.stat("a.fasta")
            assert 0.3 <= time.perf_counter() - started < 2
    finally:
        server.close()
        await server.wait_closed()


async def test_unsafe_paths_are_refused(tree):
    server = await _start(tree)
    try:
        async with open_protocol(server.config) as client:
            for path in ("../etc/passwd", "sub1/../../x", "a\r\nDELE a.fasta"):
                with pytest.raises(UnsafePath):
                    await client.stat(path)
    finally:
        await server.close()


@pytest.mark.parametrize("tls_mode", ["implicit", "explicit"])
async def test_ftps_verifies_the_certificate(tree, tmp_path, tls_mode):
    server = await _start(tree, protocol="ftps", tls_mode=tls_mode)
    other_ca = ftp_server.make_other_ca(tmp_path)
    try:
        async with open_protocol(server.config) as client:
            assert len([e async for e in client.list("sub1")]) == 2
            _, data = await _read(client, "big.bin", 3)
            assert data == tree[1]["big.bin"][3:]
        wrong_ca = {**server.config.options, "ssl_server_cert": str(other_ca)}
        async with open_protocol(replace(server.config, options=wrong_ca)) as client:
            with pytest.raises(FatalError, match="certificate"):
                await client.stat("a.fasta")
        missing_ca = {**wrong_ca, "ssl_server_cert": str(tmp_path / "missing.pem")}
        async with open_protocol(replace(server.config, options=missing_ca)) as client:
            with pytest.raises(FatalError, match="ssl_server_cert"):
                await client.stat("a.fasta")
        unverified = {**wrong_ca, "ssl_verifypeer": "false"}
        async with open_protocol(replace(server.config, options=unverified)) as client:
            assert (await client.stat("a.fasta")).size == 10_000
        assert server.faults.logins == 2
    finally:
        await server.close()


async def test_plain_ftp_client_against_an_ftps_server_fails_cleanly(tree):
    server = await _start(tree, protocol="ftps")
    try:
        async with open_protocol(replace(server.config, protocol="ftp", read_timeout=1)) as client:
            with pytest.raises(RetryableError):
                await client.stat("a.fasta")
    finally:
        await server.close()


@pytest.mark.parametrize("protocol", ["directftp", "directftps"])
async def test_direct_ftp_lists_its_file_with_size_and_mdtm(tree, protocol):
    server = await _start(tree, protocol=protocol)
    try:
        config = replace(server.config, root="/sub1/deep", direct_file="c.txt")
        async with open_protocol(config) as client:
            assert isinstance(client, DirectFtpProtocol)
            entries = [e async for e in client.list()]
            with pytest.raises(FatalError):
                [e async for e in client.list("sub")]
            _, data = await _read(client, "c.txt")
        async with open_protocol(replace(config, direct_file="missing.txt")) as client:
            with pytest.raises(RemoteNotFound):
                [e async for e in client.list()]
    finally:
        await server.close()
    server = await _start(tree, protocol=protocol, refuse={"size", "mdtm"})
    try:
        async with open_protocol(replace(server.config, root="/sub1/deep", direct_file="c.txt")) as client:
            bare = [e async for e in client.list()]  # nothing known but the name: still listed
    finally:
        await server.close()
    assert [(e.path, e.size, e.mtime) for e in entries] == [("c.txt", 1234, MTIME)]
    assert [(e.path, e.size, e.mtime) for e in bare] == [("c.txt", None, None)]
    assert entries[0].hash == hashlib.md5(b"20200913122640").hexdigest()  # BioMAJ 3: md5 of the MDTM time
    assert data == tree[1]["sub1/deep/c.txt"]


async def test_a_suspended_listing_does_not_block_other_calls(tree):
    server = await _start(tree)
    try:
        async with open_protocol(server.config) as client:
            sizes = {}
            async for entry in client.list():
                if not entry.is_dir:  # a call while the listing is still open: a second session
                    sizes[entry.path] = (await client.stat(entry.path)).size
            _, data = await _read(client, "a.fasta")
        assert sizes["a.fasta"] == 10_000 and data == tree[1]["a.fasta"]
        assert server.faults.logins == 2
    finally:
        await server.close()


ENTRIES = 100_000


@pytest.mark.parametrize("refuse", [frozenset(), {"mlsd"}], ids=["mlsd", "list"])
async def test_a_100000_entry_directory_lists_in_little_memory(tree, refuse):
    (tree[0] / "many").mkdir()
    server = await _start(tree, refuse=refuse, synthetic={"many": ENTRIES})
    try:
        async with open_protocol(server.config) as client:
            started = time.perf_counter()
            count = 0
            async for entry in client.list("many"):
                count += 1
            elapsed = time.perf_counter() - started
            assert count == ENTRIES and entry.path == f"many/f{ENTRIES - 1:07d}.dat" and entry.size == ENTRIES - 1

            tracemalloc.start()
            try:
                kept = {entry.path: entry async for entry in client.list("many")}  # what matching keeps
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    finally:
        await server.close()
    assert len(kept) == ENTRIES
    assert peak < 150 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    print(f"\n{ENTRIES:,} entries ({'LIST' if refuse else 'MLSD'}): {elapsed:.2f}s, "
          f"tracemalloc peak {peak / 1e6:.1f} MB with every entry kept")
