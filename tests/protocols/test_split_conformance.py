"""Split transfers over every protocol that reads ranges, against its real test server: several
connections at once under a per-connection rate cap (as public mirrors have), a cut connection
mid-range, a resume from the journal, a checksum/archive failure, and servers that ignore ranges."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import logging
import os

import pytest

from biomaj.download import split
from biomaj.download.engine import PART_SUFFIX, ClientPool, FetchFailed, Fetcher, FetchItem, FetchSettings
from biomaj.download.limits import HostBudget
from biomaj.download.retry import RetryPolicy
from biomaj.protocols.base import RemoteEntry
from tests.protocols.conftest import MTIME, _bytes
from tests.servers import ftp_server, http_server
from tests.servers.faults import Faults

pytestmark = pytest.mark.needs("split")

FAST_RETRY = RetryPolicy.parse("stop_after_attempt(4)", "wait_none")
SIZE = 3 * 1024 * 1024 + 4321
RATE = 1024 * 1024  # bytes/s per connection: one stream would take 3 s


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch):
    """Ranges of 64 KiB and decisions every 0.15 s, so a 3 MiB file shows what a 3 GB one does."""
    monkeypatch.setattr(split, "MIN_PIECE", 64 * 1024)
    monkeypatch.setattr(split, "WINDOW", 0.15)
    monkeypatch.setattr(split, "STEAL_SECONDS", 0.15)
    monkeypatch.setattr(split, "JOURNAL_EVERY", 0.1)


def big_file(remote, name="big/split.bin", data=None):
    data = _bytes(name, SIZE) if data is None else data
    path = remote.tree / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (MTIME, MTIME))
    return RemoteEntry(name, len(data), MTIME), data


class CountingPool(ClientPool):
    """The engine's pool, counting the clients held at once (each is one connection)."""

    def __init__(self, per_host):
        super().__init__(HostBudget(per_host))
        self.held = self.peak = 0

    @contextlib.contextmanager
    def _counted(self):
        self.held += 1
        self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            self.held -= 1

    @contextlib.asynccontextmanager
    async def client(self, config):
        async with super().client(config) as client:
            with self._counted():
                yield client

    @contextlib.asynccontextmanager
    async def try_client(self, config):
        async with super().try_client(config) as client:
            if client is None:
                yield None
                return
            with self._counted():
                yield client


def fetcher(pool, **settings):
    return Fetcher(pool, FetchSettings(retry=FAST_RETRY, split_min_size=1024 * 1024, **settings))


async def test_a_big_file_comes_over_several_connections_whole_and_exact(remote, tmp_path):
    entry, data = big_file(remote)
    remote.faults.rate = RATE
    pool = CountingPool(per_host=4)
    dest = tmp_path / "offline" / "split.bin"
    try:
        result = await fetcher(pool).fetch(remote.config, entry, dest, digest="sha256")
    finally:
        await pool.close()
    assert dest.read_bytes() == data
    assert result.digest == hashlib.sha256(data).hexdigest()
    assert result.transferred == SIZE and result.size == SIZE
    assert int(dest.stat().st_mtime) == MTIME
    assert remote.faults.peak_active >= 2, "the rate cap per connection should have brought more streams"
    assert 2 <= pool.peak <= 4, "never past the host budget"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["split.bin"]  # no part file, no journal


async def test_never_more_streams_than_split_max_or_the_free_host_slots(remote, tmp_path):
    entry, data = big_file(remote)
    remote.faults.rate = RATE
    pool = CountingPool(per_host=8)
    try:
        await fetcher(pool, split_max=2).fetch(remote.config, entry, tmp_path / "a.bin")
    finally:
        await pool.close()
    assert (tmp_path / "a.bin").read_bytes() == data
    assert pool.peak == 2


@pytest.mark.needs("faults")
async def test_a_connection_cut_mid_range_loses_nothing(remote, tmp_path):
    entry, data = big_file(remote)
    remote.faults.rate = RATE
    remote.faults.drop_after[entry.path] = SIZE // 3  # the first transfer is cut a third in
    pool = ClientPool(HostBudget(4))
    dest = tmp_path / "split.bin"
    try:
        result = await fetcher(pool).fetch(remote.config, entry, dest, digest="md5")
    finally:
        await pool.close()
    assert dest.read_bytes() == data
    assert result.digest == hashlib.md5(data).hexdigest()


async def test_a_stopped_split_resumes_every_range_from_its_journal(remote, tmp_path):
    entry, data = big_file(remote)
    remote.faults.rate = RATE // 8
    dest = tmp_path / "split.bin"
    part = dest.with_name(dest.name + PART_SUFFIX)
    journal = part.with_name(part.name + split.JOURNAL_SUFFIX)
    pool = ClientPool(HostBudget(4))
    task = asyncio.create_task(fetcher(pool).fetch(remote.config, entry, dest))
    try:
        while sum(w - a for a, _, w in _ranges(journal)) < SIZE // 6:
            assert not task.done(), "the transfer should still be running"
            await asyncio.sleep(0.02)
        task.cancel()  # a node stopped mid-split (SIGKILL is tests/distributed's)
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await pool.close()
    ranges = _ranges(journal)
    on_disk = sum(written - start for start, _, written in ranges)
    assert len(ranges) >= 2 and on_disk >= SIZE // 6 and part.stat().st_size == SIZE
    for start, _, written in ranges:  # what the journal counts is really there
        assert part.read_bytes()[start:written] == data[start:written]

    remote.faults.rate = 0
    pool = ClientPool(HostBudget(4))  # another node, same offline directory
    try:
        result = await fetcher(pool).fetch(remote.config, entry, dest)
    finally:
        await pool.close()
    assert dest.read_bytes() == data
    assert result.resumed_from == on_disk and result.transferred == SIZE - on_disk
    assert not journal.exists() and not part.exists()


async def test_a_one_stream_fetch_resumes_a_split_part_from_its_first_unfinished_range(remote, tmp_path):
    entry, data = big_file(remote)
    dest = tmp_path / "split.bin"
    part = dest.with_name(dest.name + PART_SUFFIX)
    part.write_bytes(data[:1000] + b"\0" * (SIZE - 1000))  # a preallocated part file
    journal = part.with_name(part.name + split.JOURNAL_SUFFIX)
    journal.write_text(f'{{"size": {SIZE}, "mtime": {MTIME}, "token": null, '
                       f'"segments": [[0, 2000, 1000], [2000, {SIZE}, 2000]]}}')
    pool = ClientPool(HostBudget(4))
    try:  # splitting disabled: one stream, from the end of what is surely there
        result = await fetcher(pool, split_max=1).fetch(remote.config, entry, dest)
    finally:
        await pool.close()
    assert dest.read_bytes() == data
    assert result.resumed_from == 1000
    assert not journal.exists()


async def test_a_broken_archive_is_fetched_again_from_scratch(remote, tmp_path):
    good = gzip.compress(os.urandom(SIZE), compresslevel=0)
    bad = good[: len(good) // 2] + b"\xff" * 64 + good[len(good) // 2 + 64:]
    entry, _ = big_file(remote, "big/data.gz", bad)
    pool = ClientPool(HostBudget(4))
    dest = tmp_path / "offline" / "data.gz"
    try:
        with pytest.raises(FetchFailed, match="gave up after 4 attempt"):
            await fetcher(pool).fetch(remote.config, entry, dest)
    finally:
        await pool.close()
    assert list(dest.parent.iterdir()) == []  # neither the file, nor its part, nor a journal


@pytest.mark.parametrize("kind", ["http", "ftp"])
async def test_a_server_that_ignores_ranges_gets_one_stream_said_once(kind, tmp_path, caplog):
    tree = tmp_path / "tree"
    data = _bytes("x", SIZE)
    (tree / "big").mkdir(parents=True)
    (tree / "big" / "x.bin").write_bytes(data)
    os.utime(tree / "big" / "x.bin", (MTIME, MTIME))
    faults = Faults(rate=RATE * 2)
    if kind == "http":
        server = await http_server.start(tree, faults, protocol="http", ignore_range=True)
    else:
        server = await ftp_server.start(tree, faults, protocol="ftp", refuse={"rest"})
    pool = ClientPool(HostBudget(4))
    dest = tmp_path / "x.bin"
    try:
        with caplog.at_level(logging.WARNING, logger="biomaj.download.split"):
            await fetcher(pool).fetch(server.config, RemoteEntry("big/x.bin", SIZE, MTIME), dest)
    finally:
        await pool.close()
        await server.close()
    assert dest.read_bytes() == data
    warnings = [r for r in caplog.records if "does not honour byte ranges" in r.getMessage()]
    assert len(warnings) == 1


def _ranges(journal):
    import json

    try:
        return json.loads(journal.read_text())["segments"]
    except (FileNotFoundError, ValueError):
        return []


@pytest.mark.parametrize("streams", [1, 8])
async def test_a_bandwidth_limit_holds_for_split_and_plain_transfers_alike(tmp_path, streams):
    """A lower bound, not a speed test: 3 MiB under a 1 MiB/s limit cannot take less than ~2.7 s
    (the limiter sits above the protocols: one server shows it)."""
    from biomaj.config.rates import Schedule
    from biomaj.download.bandwidth import Limiter

    tree = tmp_path / "tree"
    tree.mkdir()
    data = _bytes("x", SIZE)
    (tree / "x.bin").write_bytes(data)
    server = await http_server.start(tree, Faults(), protocol="http")
    pool = ClientPool(HostBudget(4))
    limit = Limiter(Schedule.parse("1M"))
    started = asyncio.get_running_loop().time()
    try:
        await fetcher(pool, split_max=streams, pace=limit.take).fetch(
            server.config, RemoteEntry("x.bin", SIZE, MTIME), tmp_path / "x")
    finally:
        await pool.close()
        await server.close()
    assert (tmp_path / "x").read_bytes() == data
    assert asyncio.get_running_loop().time() - started >= 2.5


async def test_a_split_takes_a_connection_another_file_frees_later(tmp_path):
    """The host's connections are all busy when the split starts: it goes on with one stream and
    adds one when a connection frees, never waiting for it nor taking it from the other file."""
    tree = tmp_path / "tree"
    tree.mkdir()
    data = _bytes("x", SIZE)
    (tree / "x.bin").write_bytes(data)
    server = await http_server.start(tree, Faults(rate=RATE), protocol="http")
    pool = CountingPool(per_host=2)
    try:
        async with pool.client(server.config):  # another file holds the second connection
            task = asyncio.create_task(fetcher(pool).fetch(server.config, RemoteEntry("x.bin", SIZE, MTIME),
                                                          tmp_path / "x"))
            await asyncio.sleep(1.0)
            assert pool.peak == 2 and not task.done()  # the split's own stream and the other file
        await task
    finally:
        await pool.close()
        await server.close()
    assert (tmp_path / "x").read_bytes() == data
    assert server.faults.peak_active >= 2  # a second range came once the other file let go


@pytest.mark.parametrize("streams", [1, 8])
async def test_a_checksum_mismatch_is_fetched_again_then_fails_naming_both(remote, tmp_path, streams):
    """The whole file is checked against a known checksum before it takes its name, split or not;
    a file that never matches fails with both checksums, and nothing of it is left."""
    entry, data = big_file(remote)
    right = "sha256:" + hashlib.sha256(data).hexdigest()
    wrong = "sha256:" + hashlib.sha256(b"another file").hexdigest()
    pool = ClientPool(HostBudget(4))
    offline = tmp_path / "offline"
    try:
        result = await fetcher(pool, split_max=streams).fetch(remote.config, entry, offline / "good.bin",
                                                              checksum=right)
        assert result.digest == right.split(":")[1]
        with pytest.raises(FetchFailed, match=f"checksum mismatch: sha256 {right[7:]}, expected {wrong[7:]} "
                                              r"\(fetched 2 times"):
            await fetcher(pool, split_max=streams).fetch(remote.config, entry, offline / "bad.bin", checksum=wrong)
    finally:
        await pool.close()
    assert (offline / "good.bin").read_bytes() == data
    assert sorted(p.name for p in offline.iterdir()) == ["good.bin"]


async def test_a_file_listed_with_a_rounded_size_splits_over_the_connection_of_its_size_request(tmp_path):
    """An index's rounded size ("3M") is made exact with a HEAD on the fetch worker's connection,
    which that worker keeps between its calls: the split's ranges take it rather than leave it
    unused beside them (with a budget of 2, both connections carry ranges)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    data = _bytes("x", SIZE)
    (tree / "x.bin").write_bytes(data)
    server = await http_server.start(tree, Faults(rate=RATE), protocol="http")
    pool = ClientPool(HostBudget(2))
    results = []
    try:
        item = FetchItem(RemoteEntry("x.bin", None, MTIME, size_hint=3 * 1024 * 1024), tmp_path / "x")

        async def done(index, result):
            results.append(result)

        await fetcher(pool, split_max=2).fetch_many(server.config, [item], done)
    finally:
        await pool.close()
        await server.close()
    assert (tmp_path / "x").read_bytes() == data and results[0].size == SIZE
    assert server.faults.peak_active == 2  # the two connections of the budget both carried ranges


async def test_the_digests_are_computed_as_the_ranges_come_in_not_by_a_second_read(remote, tmp_path, monkeypatch):
    """The sha256 to record and the provider's md5 of a split file: fed by a follower of the ranges
    written, never by reading the whole file again once it is complete."""
    from biomaj.download import verify

    def no_read_back(path, *args):
        raise AssertionError(f"{path} read again")

    monkeypatch.setattr(verify, "file_digest", no_read_back)
    monkeypatch.setattr(verify, "file_digests", no_read_back)
    entry, data = big_file(remote)
    remote.faults.rate = RATE
    pool = CountingPool(per_host=4)
    dest = tmp_path / "offline" / "split.bin"
    try:
        result = await fetcher(pool).fetch(remote.config, entry, dest, digest="sha256",
                                           checksum="md5:" + hashlib.md5(data).hexdigest())
    finally:
        await pool.close()
    assert dest.read_bytes() == data and pool.peak >= 2
    assert result.digest == hashlib.sha256(data).hexdigest()
