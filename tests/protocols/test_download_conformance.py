"""The download engine over every protocol's real server: matching, mirroring, resume after a
cut connection, retries, verification, limits, traversal, timeouts (rclone's fstests, part 2)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import replace

import pytest

from biomaj.download.engine import PART_SUFFIX, ClientPool, FetchFailed, Fetcher, FetchSettings
from biomaj.download.limits import HostBudget
from biomaj.download.matching import NoFileMatched, match_files
from biomaj.download.paths import safe_join
from biomaj.download.retry import RetryPolicy
from biomaj.download.verify import VerificationFailed, check_sidecars
from biomaj.protocols.base import UnsafePath
from tests.protocols.conftest import MTIME

FAST_RETRY = RetryPolicy.parse("stop_after_attempt(5)", "wait_none")


async def mirror(remote, offline, patterns="**/*", *, per_host=4, retry=FAST_RETRY, **config_changes):
    """match + fetch everything, like the update workflow will; returns {save_as: FetchResult}."""
    config = replace(remote.config, **config_changes)
    pool = ClientPool(HostBudget(per_host))
    try:
        async with pool.client(config) as lister:
            matched = await match_files(lister, patterns)
        fetcher = Fetcher(pool, FetchSettings(retry=retry))
        results = await asyncio.gather(
            *(fetcher.fetch(config, m.entry, safe_join(offline, m.save_as)) for m in matched)
        )
        return {m.save_as: r for m, r in zip(matched, results)}
    finally:
        await pool.close()


def tree_files(root):
    return {
        str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()
    }


async def test_mirror_everything(remote, tmp_path):
    offline = tmp_path / "offline"
    results = await mirror(remote, offline)
    assert tree_files(offline) == remote.contents
    assert set(results) == set(remote.contents)
    async with remote.client() as client:
        listed = {m.save_as: m.entry.mtime for m in await match_files(client, "**/*")}
    for save_as, result in results.items():
        assert not result.skipped
        # the remote's date is kept: the tree's, or when a bucket's object was uploaded
        expected = MTIME if remote.has("mtime") else listed[save_as]
        assert abs(os.stat(offline / save_as).st_mtime - expected) <= 60, save_as


async def test_mirror_again_skips_complete_files(remote, tmp_path):
    offline = tmp_path / "offline"
    await mirror(remote, offline)
    transfers_before = sum(remote.faults.transfers.values())
    async with remote.client() as client:
        entries = {m.save_as: m.entry for m in await match_files(client, "**/*")}
    again = await mirror(remote, offline)
    assert tree_files(offline) == remote.contents
    # Same size and date: not fetched again (BioMAJ's offline resume). A file whose listing gives
    # no exact size (HTML indexes print "10K") is complete when it carries the listed date to the
    # second (only a finished download sets it); with neither size nor date it is fetched again.
    refetched = {name for name, result in again.items() if not result.skipped}
    assert refetched == {name for name, entry in entries.items() if entry.size is None and entry.mtime is None}
    if remote.has("faults"):
        assert sum(remote.faults.transfers.values()) - transfers_before == len(refetched)


async def test_patterns_select_files_as_biomaj_does(remote, tmp_path):
    async with remote.client() as client:
        top = await match_files(client, r"^a\.fasta$ ^release\.txt$")
        sub = await match_files(client, r"^sub1/.*\.gz$")
        deep = await match_files(client, r"^sub1/deep/c\.txt$")
        caret = await match_files(client, r"^/sub2/.*")
        groups = await match_files(client, r"^(sub1)/deep/(c\.txt)$")
        with pytest.raises(NoFileMatched, match="no file found matching expressions"):
            await match_files(client, r"^nothing.*")
    assert sorted(m.save_as for m in top) == ["a.fasta", "release.txt"]
    assert [m.save_as for m in sub] == ["sub1/b.fasta.gz"]
    assert [m.save_as for m in deep] == ["sub1/deep/c.txt"]
    assert [m.save_as for m in caret] == ["sub2/d.txt"]
    assert [(m.entry.path, m.save_as) for m in groups] == [("sub1/deep/c.txt", "sub1/c.txt")]


@pytest.mark.needs("faults")
async def test_resume_after_a_cut_connection(remote, tmp_path):
    remote.faults.drop_after["big.bin"] = 1_000_000
    offline = tmp_path / "offline"
    results = await mirror(remote, offline, r"^big\.bin$")
    result = results["big.bin"]
    assert (offline / "big.bin").read_bytes() == remote.contents["big.bin"]
    assert result.attempts == 2
    assert remote.faults.transfers["big.bin"] == 2
    # The second attempt continued where the cut left it, not from zero.
    assert result.transferred < 2 * len(remote.contents["big.bin"]) - 500_000


@pytest.mark.needs("faults")
async def test_retry_after_server_errors(remote, tmp_path):
    remote.faults.transient_errors["a.fasta"] = 2
    results = await mirror(remote, tmp_path / "offline", r"^a\.fasta$")
    assert results["a.fasta"].attempts == 3
    assert (tmp_path / "offline" / "a.fasta").read_bytes() == remote.contents["a.fasta"]


@pytest.mark.needs("faults")
async def test_gives_up_with_a_clear_error(remote, tmp_path):
    remote.faults.transient_errors["a.fasta"] = 50
    policy = RetryPolicy.parse("stop_after_attempt(3)", "wait_none")
    with pytest.raises(FetchFailed, match=r"a\.fasta: .*gave up after 3 attempt\(s\)") as failure:
        await mirror(remote, tmp_path / "offline", r"^a\.fasta$", retry=policy)
    assert failure.value.retryable
    assert not (tmp_path / "offline" / "a.fasta").exists()


@pytest.mark.needs("faults")
async def test_throttling_backs_off_and_succeeds(remote, tmp_path):
    remote.faults.throttle["a.fasta"] = 1
    results = await mirror(remote, tmp_path / "offline", r"^a\.fasta$")
    assert results["a.fasta"].attempts == 2


@pytest.mark.needs("faults")
async def test_read_timeout_then_retry(remote, tmp_path):
    remote.faults.stall["big.bin"] = 5.0
    results = await mirror(remote, tmp_path / "offline", r"^big\.bin$", read_timeout=0.5)
    assert results["big.bin"].attempts >= 2
    assert (tmp_path / "offline" / "big.bin").read_bytes() == remote.contents["big.bin"]


@pytest.mark.needs("faults")
async def test_at_most_n_connections_per_host(remote, tmp_path):
    for i in range(12):
        (remote.tree / "sub2" / f"many{i}.dat").write_bytes(os.urandom(300_000))
    await mirror(remote, tmp_path / "offline", r"^sub2/many.*", per_host=2)
    assert 1 <= remote.faults.peak_active <= 2
    assert sum(remote.faults.transfers.values()) == 12


async def test_size_mismatch_is_refused(remote, tmp_path):
    async with remote.client() as client:
        entry = await client.stat("a.fasta")
    pool = ClientPool()
    fetcher = Fetcher(pool, FetchSettings(retry=RetryPolicy.parse("stop_after_attempt(2)", "wait_none")))
    try:
        with pytest.raises(FetchFailed, match="size mismatch: listed 10005 bytes, received 10000"):
            await fetcher.fetch(remote.config, replace(entry, size=10_005), tmp_path / "a.fasta")
    finally:
        await pool.close()
    assert not (tmp_path / "a.fasta").exists()


async def test_broken_archive_is_refused(remote, tmp_path):
    good = remote.contents["sub1/b.fasta.gz"]
    (remote.tree / "sub1" / "broken.fasta.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(FetchFailed, match="broken gzip archive"):
        await mirror(remote, tmp_path / "offline", r"^sub1/broken.*", retry=RetryPolicy.parse("stop_after_attempt(2)", "wait_none"))
    assert not (tmp_path / "offline" / "sub1" / "broken.fasta.gz").exists()
    assert not (tmp_path / "offline" / "sub1" / "broken.fasta.gz.biomaj-part").exists()  # never resumed


async def test_a_corrupt_byte_in_an_archive_is_caught_and_fetched_again(remote, tmp_path):
    """The archive test runs on the stream (the file is not read again once written): a byte
    flipped in transit fails it, and the next attempt starts over, not from the bad part."""
    good = remote.contents["sub1/b.fasta.gz"]
    bad = good[:20] + bytes([good[20] ^ 0xFF]) + good[21:]
    (remote.tree / "sub1" / "flipped.fasta.gz").write_bytes(bad)
    with pytest.raises(FetchFailed, match="broken gzip archive"):
        await mirror(remote, tmp_path / "offline", r"^sub1/flipped.*", retry=RetryPolicy.parse("stop_after_attempt(1)", "wait_none"))
    (remote.tree / "sub1" / "flipped.fasta.gz").write_bytes(good)
    fetched = await mirror(remote, tmp_path / "offline", r"^sub1/flipped.*")
    assert (tmp_path / "offline" / "sub1" / "flipped.fasta.gz").read_bytes() == good
    assert fetched["sub1/flipped.fasta.gz"].resumed_from == 0


async def test_checksum_sidecars(remote, tmp_path):
    data = remote.contents["a.fasta"]
    (remote.tree / "a.fasta.md5").write_text(hashlib.md5(data).hexdigest() + "  a.fasta\n")
    (remote.tree / "release.txt.sha256").write_text("0" * 64 + "  release.txt\n")
    offline = tmp_path / "offline"
    results = await mirror(remote, offline, r"^a\.fasta.* ^release\.txt.*")
    assert check_sidecars(offline, ["a.fasta", "a.fasta.md5"]) == ["a.fasta"]
    with pytest.raises(VerificationFailed, match="release.txt: sha256 .* but release.txt.sha256 says 0000"):
        check_sidecars(offline, sorted(results))


@pytest.mark.needs("evil_names")
async def test_remote_names_never_escape_the_offline_directory(remote, tmp_path):
    remote.faults.evil_names.extend(["../escape.txt", "..", "/etc/passwd"])
    offline = tmp_path / "work" / "offline"
    offline.mkdir(parents=True)
    try:
        await mirror(remote, offline)
    except UnsafePath as refusal:
        assert "unsafe remote name" in str(refusal)
    assert not (tmp_path / "work" / "escape.txt").exists()
    outside = [
        p for p in tmp_path.rglob("*")
        if p.is_file() and offline not in p.parents and remote.tree not in p.parents
    ]
    assert outside == []


@pytest.mark.needs("faults", "midfile_cancel")
async def test_cancelled_fetch_keeps_its_part_and_resumes(remote, tmp_path):
    remote.faults.stall["big.bin"] = 30.0
    async with remote.client() as client:
        entry = await client.stat("big.bin")
    pool = ClientPool()
    fetcher = Fetcher(pool, FetchSettings(retry=FAST_RETRY))
    dest = tmp_path / "big.bin"
    received = asyncio.Event()
    task = asyncio.create_task(fetcher.fetch(remote.config, entry, dest, on_bytes=lambda n: received.set()))
    await asyncio.wait_for(received.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    part = dest.with_name(dest.name + PART_SUFFIX)
    assert not dest.exists()
    remote.faults.stall.clear()
    result = await fetcher.fetch(remote.config, entry, dest)
    await pool.close()
    assert dest.read_bytes() == remote.contents["big.bin"]
    assert not part.exists()
    if part_was_written := result.resumed_from:
        assert result.transferred == len(remote.contents["big.bin"]) - part_was_written


def test_safe_join_refuses_escapes(tmp_path):
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / "link").symlink_to(tmp_path)
    assert safe_join(offline, "/sub/file.gz") == offline / "sub" / "file.gz"
    for name in ("../x", "a/../../x", "", "/", "link/x", "a\\..\\x", "-rf"):
        with pytest.raises(UnsafePath):
            safe_join(offline, name)
