"""Reuse and resume on a server whose listing gives no size or no date (Python's own http.server,
an FTP server whose MLSD lines carry neither, an index page of names only).

The manager asks the server for each such file (HTTP HEAD, FTP MLST or SIZE+MDTM) before it
compares anything (workflow/remote_files.py ``stat_incomplete``): the first update downloads
everything, the second of an unchanged tree downloads nothing and hard-links every file from the
last release, and a file changed on the server (its size at the same date, or its date alone) is
the only one downloaded by the third. Every server is real, on 127.0.0.1.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.servers import ftp_server, http_server
from tests.servers.faults import Faults
from tests.workflow.harness import Site

BANK = "local"
FILES = {f"f{i:02d}.txt": (f"file {i}\n" * (i + 1)).encode() for i in range(12)}
MTIME = 1_700_000_000 - 7  # whole seconds, not a whole minute: an index's minutes would not do
NOTICE = "cannot be compared"


def write_tree(root: Path, release: int = 1) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in FILES.items():
        (root / name).write_bytes(data)
        os.utime(root / name, (MTIME, MTIME))
    set_release(root, release)


def set_release(root: Path, release: int) -> None:
    (root / "release.txt").write_text(f"Release {release}\n")


class _Recording(SimpleHTTPRequestHandler):
    """Python's http.server, quiet, with the requests it got in ``server.seen`` (method, path)."""

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass

    def send_head(self):
        self.server.seen.append((self.command, self.path))
        return super().send_head()


class PythonHttp:
    """``python -m http.server`` over ``root``: its index pages are names only."""

    def __init__(self, root: Path):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Recording, directory=str(root)))
        self.server.seen = []
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def fetched(self, pattern: str = r"/f\d+") -> list[str]:
        """The files matching ``pattern`` asked for with GET since the last call."""
        seen, self.server.seen = self.server.seen, []
        return sorted(p.lstrip("/") for method, p in seen if method == "GET" and re.match(pattern, p))

    def heads(self) -> int:
        return sum(1 for method, _ in self.server.seen if method == "HEAD")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def bank_over(site: Site, **values: str) -> None:
    site.add_bank(BANK, remote__dir="/", remote__files=r"^f\d+\.txt$", local__files=r"^f\d+\.txt$",
                  release__file=r"^release\.txt$", release__regexp=r"Release\s+(\d+)", **values)


def flat(outcome) -> Path:
    return outcome.release_dir / "flat"


def log_text(outcome) -> str:
    return Path(outcome.log_file).read_text()


def check_linked(before, after, names) -> None:
    """Each name of ``after``'s release is ``before``'s file itself (one inode, two links)."""
    for name in names:
        old, new = (flat(before) / name).stat(), (flat(after) / name).stat()
        assert (new.st_ino, new.st_dev) == (old.st_ino, old.st_dev), name
        assert new.st_nlink >= 2, name


def change(root: Path, name: str, how: str) -> None:
    path = root / name
    if how == "size":  # new content, same date to the second
        path.write_bytes(path.read_bytes() + b"more\n")
        os.utime(path, (MTIME, MTIME))
    else:  # same content, a newer date
        os.utime(path, (MTIME + 3600, MTIME + 3600))


@pytest.mark.parametrize("how", ["size", "mtime"])
async def test_python_http_server_second_update_links_everything(site: Site, tmp_path: Path, how: str):
    root = tmp_path / "www"
    write_tree(root)
    server = PythonHttp(root)
    try:
        bank_over(site, protocol="http", server=f"127.0.0.1:{server.port}")
        first = await site.update(BANK)
        assert first.ok and first.updated, first.error
        assert server.fetched() == sorted(FILES)
        for name, data in FILES.items():
            assert (flat(first) / name).read_bytes() == data
            assert (flat(first) / name).stat().st_mtime == MTIME  # the date HEAD gave
        text = log_text(first)
        assert "the listing gives no exact size or no date for 12 files: asked the server" in text
        assert NOTICE not in text

        set_release(root, 2)  # a new release of the same files
        second = await site.update(BANK)
        assert second.ok and second.updated, second.error
        assert second.release != first.release
        assert server.fetched() == []  # nothing downloaded again
        check_linked(first, second, FILES)
        text = log_text(second)
        assert "12 files: 0 to download, 0 already in the offline directory, 12 reused from the previous release" in text
        assert NOTICE not in text

        change(root, "f05.txt", how)
        set_release(root, 3)
        third = await site.update(BANK)
        assert third.ok and third.updated, third.error
        assert server.heads() == 12  # one HEAD per file, every update
        assert server.fetched() == ["f05.txt"]
        check_linked(second, third, [n for n in FILES if n != "f05.txt"])
        assert (flat(third) / "f05.txt").read_bytes() == (root / "f05.txt").read_bytes()
        assert (flat(third) / "f05.txt").stat().st_ino != (flat(second) / "f05.txt").stat().st_ino
        assert "12 files: 1 to download, 0 already in the offline directory, 11 reused" in log_text(third)
    finally:
        server.close()


async def test_ftp_listing_without_size_or_date(site: Site, tmp_path: Path):
    """An FTP server whose MLSD (and MLST) lines give neither size nor date: SIZE and MDTM do."""
    root = tmp_path / "ftp"
    write_tree(root)
    faults = Faults()
    server = await ftp_server.start(root, faults, protocol="ftp", bare_facts=True)
    try:
        config = server.config
        bank_over(site, protocol="ftp", server=f"127.0.0.1:{config.port}",
                  server__credentials=f"{config.user}:{config.password}",
                  release__credentials=f"{config.user}:{config.password}")
        first = await site.update(BANK)
        assert first.ok and first.updated, first.error
        assert {name for name in faults.transfers if name in FILES} == set(FILES)

        faults.transfers.clear()
        set_release(root, 2)
        second = await site.update(BANK)
        assert second.ok and second.updated, second.error
        assert not any(name in FILES for name in faults.transfers)
        check_linked(first, second, FILES)
        assert NOTICE not in log_text(second)

        change(root, "f03.txt", "size")
        set_release(root, 3)
        third = await site.update(BANK)
        assert third.ok and third.updated, third.error
        assert [name for name in faults.transfers if name in FILES] == ["f03.txt"]
        check_linked(second, third, [n for n in FILES if n != "f03.txt"])
    finally:
        await server.close()


async def test_names_only_index_resumes_with_range_and_revalidates_with_etag(site: Site, tmp_path: Path):
    """An index page of names only over a server that has Range and ETag: the size from HEAD lets
    a cut download resume where it stopped; the next update asks each file with If-None-Match and
    the 304s link them all from the last release."""
    root = tmp_path / "www"
    write_tree(root)
    big = os.urandom(700_000)
    (root / "f99.txt").write_bytes(big)
    faults = Faults(drop_after={"f99.txt": 300_000})
    server = await http_server.start(root, faults, protocol="http", style="plain")
    try:
        bank_over(site, protocol="http", server=f"127.0.0.1:{server.config.port}", wait_policy="wait_fixed(0.1)")
        first = await site.update(BANK)
        assert first.ok and first.updated, first.error
        ranges = [s["headers"].get("Range") for s in server.seen if s["method"] == "GET" and s["path"] == "/f99.txt"]
        assert ranges[0] is None and len(ranges) == 2
        assert re.fullmatch(r"bytes=\d+-", ranges[1]) and 0 < int(ranges[1][6:-1]) <= 300_000  # resumed
        assert (flat(first) / "f99.txt").read_bytes() == big

        server.seen.clear()
        set_release(root, 2)
        second = await site.update(BANK)
        assert second.ok and second.updated, second.error
        heads = [s for s in server.seen if s["method"] == "HEAD"]
        assert len(heads) == 13 and all(s["headers"].get("If-None-Match") for s in heads)
        assert not [s for s in server.seen if s["method"] == "GET" and s["path"].startswith("/f")]
        check_linked(first, second, [*FILES, "f99.txt"])
        assert "(13 unchanged since the last release by their ETag" in log_text(second)
    finally:
        await server.close()


async def test_names_only_index_splits_a_big_file_once_its_size_is_known(site: Site, tmp_path: Path):
    """A split transfer needs the size: the HEAD gives it, so a big file of an index of names only
    goes as ranges over several connections."""
    root = tmp_path / "www"
    write_tree(root)
    big = os.urandom(12 * 1024 * 1024 + 5)  # split.py cuts ranges of 2 MiB at least
    (root / "f99.txt").write_bytes(big)
    faults = Faults(rate=6 * 1024 * 1024)  # bytes/s per connection, as public servers cap them
    server = await http_server.start(root, faults, protocol="http", style="plain")
    try:
        bank_over(site, protocol="http", server=f"127.0.0.1:{server.config.port}", download__split__min_size="1M")
        outcome = await site.update(BANK)
        assert outcome.ok and outcome.updated, outcome.error
    finally:
        await server.close()
    ranges = [s["headers"].get("Range") for s in server.seen if s["method"] == "GET" and s["path"] == "/f99.txt"]
    assert len(ranges) >= 2 and all(ranges[1:]), ranges  # the first stream from 0, each added one its range
    assert faults.peak_active >= 2
    assert (flat(outcome) / "f99.txt").read_bytes() == big


async def test_the_option_turns_it_off_and_the_notice_comes_back(site: Site, tmp_path: Path):
    """``options.stat_incomplete=false``: no HEAD; as before, every file is downloaded again and
    the update says why, once."""
    root = tmp_path / "www"
    write_tree(root)
    server = PythonHttp(root)
    try:
        bank_over(site, protocol="http", server=f"127.0.0.1:{server.port}", options__names="stat_incomplete",
                  options__stat_incomplete="false")
        first = await site.update(BANK)
        assert first.ok, first.error
        set_release(root, 2)
        server.fetched()
        second = await site.update(BANK)
        assert second.ok, second.error
        assert server.heads() == 0 and server.fetched() == sorted(FILES)
        text = log_text(second)
        assert text.count("the server gives no size nor date for 12 files: they cannot be compared") == 1
    finally:
        server.close()


# The command line: `biomaj ctl update --follow` on the example bank of `biomaj init` ---------------


@pytest.fixture
def http_server_root(biomaj_root: Path):
    """The example bank of `biomaj init`, served by Python's http.server on 127.0.0.1."""
    remote = biomaj_root / "example-remote"
    server = PythonHttp(remote)
    conf = biomaj_root / "conf" / "example.properties"
    text = conf.read_text().replace("protocol=local", "protocol=http")
    text = re.sub(r"(?m)^server=.*$", f"server=127.0.0.1:{server.port}", text)
    conf.write_text(re.sub(r"(?m)^remote\.dir=.*$", "remote.dir=/", text))
    try:
        yield biomaj_root, server
    finally:
        server.close()


def _update(root: Path, biomaj_cmd: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("BIOMAJ_CONFIG", "BIOMAJ_DEBUG")}
    result = subprocess.run([*biomaj_cmd, "-c", str(root / "config.yml"), "ctl", "update", "example", "--follow"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_ctl_update_reuses_what_pythons_http_server_serves(http_server_root, biomaj_cmd):
    root, server = http_server_root
    _update(root, biomaj_cmd)
    assert server.fetched(r"/example") == ["example.fasta", "example2.fasta.gz"]

    release = root / "example-remote" / "release.txt"
    when = release.stat().st_mtime + 60  # the same size: a date in the same second would look unchanged
    release.write_text("Release 2\n")
    os.utime(release, (when, when))
    second = _update(root, biomaj_cmd)
    assert NOTICE not in second.stderr
    # the archive is not in the release (its extracted file is, local.files): nothing to link it from
    assert server.fetched(r"/example") == ["example2.fasta.gz"]
    logs = sorted((root / "log" / "example").glob("*/example.log"))
    assert len(logs) == 2
    text = logs[1].read_text()
    assert NOTICE not in text
    assert "3 files: 2 to download, 0 already in the offline directory, 1 reused from the previous release" in text


async def test_an_apache_index_first_update_asks_nothing_and_the_next_links_everything(site: Site, tmp_path: Path):
    """An Apache index gives dates and rounded sizes ("1.2K"): the first update has nothing to
    compare, so it asks the server nothing (the downloads tell the sizes); the next one asks each
    file its exact size and links every unchanged one from the last release."""
    root = tmp_path / "www"
    write_tree(root)
    for name in FILES:  # big enough for the index to round their sizes
        (root / name).write_bytes(name.encode() * 1000)
        os.utime(root / name, (MTIME, MTIME))
    server = await http_server.start(root, Faults(), protocol="http", style="apache24")
    try:
        bank_over(site, protocol="http", server=f"127.0.0.1:{server.config.port}")
        first = await site.update(BANK)
        assert first.ok and first.updated, first.error
        assert not [s for s in server.seen if s["method"] == "HEAD"]
        server.seen.clear()
        set_release(root, 2)
        second = await site.update(BANK)
        assert second.ok and second.updated, second.error
        assert len([s for s in server.seen if s["method"] == "HEAD"]) == len(FILES)
        assert not [s for s in server.seen if s["method"] == "GET" and s["path"].startswith("/f")]
        check_linked(first, second, list(FILES))
    finally:
        await server.close()
