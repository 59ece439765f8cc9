"""A file that does not match its checksum (a provider's manifest) is fetched again exactly once,
whatever the retry policy, over one stream (FTP) or pipelined with others (HTTP/1.1; a split
transfer: tests/protocols/test_split_conformance.py); the servers are real and count the
transfers they serve."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from biomaj.download import verify
from biomaj.download.engine import ClientPool, FetchFailed, Fetcher, FetchItem, FetchResult, FetchSettings
from biomaj.download.limits import HostBudget
from biomaj.download.manifests import bsd_sum
from biomaj.download.retry import RetryPolicy
from biomaj.protocols.base import RemoteEntry
from tests.servers import ftp_server, http_server
from tests.servers.faults import Faults

FILES = {f"f{i}.dat": hashlib.sha256(str(i).encode()).digest() * 40 for i in range(8)}
BAD = "f3.dat"


def tree(root: Path) -> Path:
    root.mkdir()
    for name, data in FILES.items():
        (root / name).write_bytes(data)
    return root


def checksums(bad_algorithm: str = "md5") -> dict[str, str]:
    """Each file's right md5, but BAD's, which is of another content (the server's copy is corrupt)."""
    sums = {name: "md5:" + hashlib.md5(data).hexdigest() for name, data in FILES.items()}
    other = b"what the provider meant to publish"
    sums[BAD] = ("md5:" + hashlib.md5(other).hexdigest() if bad_algorithm == "md5"
                 else f"bsd-sum:{bsd_sum(other)[0]:04x}")
    return sums


async def fetch_many(config, offline: Path, sums: dict[str, str], retry: str) -> dict[str, FetchResult | BaseException]:
    pool = ClientPool(HostBudget(2))
    fetcher = Fetcher(pool, FetchSettings(retry=RetryPolicy.parse(retry, "wait_none")))
    items = [FetchItem(RemoteEntry(name, len(data), None), offline / name, checksum=sums[name])
             for name, data in FILES.items()]
    results: dict[str, FetchResult | BaseException] = {}

    async def done(index, result):
        results[items[index].entry.path] = result

    try:
        await fetcher.fetch_many(config, items, done)
    finally:
        await pool.close()
    return results


@pytest.mark.parametrize("protocol", ["http", "ftp"])
@pytest.mark.parametrize("retry", ["stop_after_attempt(1)", "stop_after_attempt(6)"])
async def test_a_mismatch_is_fetched_again_once_whatever_the_policy(tmp_path, protocol, retry):
    """HTTP pipelines these small files (the first try of the bad one is in the pipeline, the
    second on its own); FTP fetches each over one stream."""
    faults = Faults()
    module = http_server if protocol == "http" else ftp_server
    server = await module.start(tree(tmp_path / "tree"), faults, protocol=protocol)
    try:
        results = await fetch_many(server.config, tmp_path / "off", checksums("bsd-sum"), retry)
    finally:
        await server.close()
    failed = results.pop(BAD)
    assert isinstance(failed, FetchFailed) and not failed.retryable
    got = f"bsd-sum:{bsd_sum(FILES[BAD])[0]:04x}"
    assert failed.got_checksum == got
    assert f"checksum mismatch: bsd-sum {got[8:]}, expected" in str(failed) and "fetched 2 times" in str(failed)
    assert faults.transfers[BAD] == 2
    assert all(isinstance(r, FetchResult) and r.attempts == 1 for r in results.values())
    assert {name: faults.transfers[name] for name in results} == dict.fromkeys(results, 1)
    assert sorted(p.name for p in (tmp_path / "off").iterdir()) == sorted(results)  # nothing left of the bad one


async def test_a_mismatch_that_a_second_fetch_cures_is_not_an_error(tmp_path):
    """A transfer corrupted on the way (a proxy, a flaky mirror): the second fetch matches."""
    root = tree(tmp_path / "tree")
    right = FILES[BAD]
    (root / BAD).write_bytes(b"\0" * len(right))  # the first answer is corrupt ...
    faults = Faults()
    server = await ftp_server.start(root, faults, protocol="ftp")
    pool = ClientPool(HostBudget(1))
    sums = {name: "md5:" + hashlib.md5(data).hexdigest() for name, data in FILES.items()}
    fetcher = Fetcher(pool, FetchSettings(retry=RetryPolicy.parse("stop_after_attempt(1)", "wait_fixed(0.2)")))
    try:
        started = faults.started(BAD)

        async def repair_after_first_try():
            await started.wait()
            (root / BAD).write_bytes(right)  # ... the server's file is right by the next one

        repair = asyncio.create_task(repair_after_first_try())
        result = await fetcher.fetch(server.config, RemoteEntry(BAD, len(right), None), tmp_path / "off" / BAD,
                                     checksum=sums[BAD])
        await repair
    finally:
        await pool.close()
        await server.close()
    assert result.attempts == 2 and faults.transfers[BAD] == 2
    assert result.digest == hashlib.md5(right).hexdigest()
    assert (tmp_path / "off" / BAD).read_bytes() == right


@pytest.mark.parametrize("protocol", ["http", "ftp"])
async def test_the_sha256_to_record_and_the_providers_md5_come_from_one_pass(protocol, tmp_path, monkeypatch):
    """A file with a provider's md5 whose sha256 is also asked for (its provenance) gets both
    from the bytes as they stream in: the md5 checked, the sha256 returned, the file never read
    back (the readers of verify.py refuse here)."""
    def no_read_back(path, *args):
        raise AssertionError(f"{path} read again")

    monkeypatch.setattr(verify, "file_digest", no_read_back)
    monkeypatch.setattr(verify, "file_digests", no_read_back)
    server = await (http_server if protocol == "http" else ftp_server).start(tree(tmp_path / "remote"), Faults(),
                                                                             protocol=protocol)
    sums = {name: "md5:" + hashlib.md5(data).hexdigest() for name, data in FILES.items()}
    pool = ClientPool(HostBudget(2))
    # through part files (small files written whole on the loop leave the sha256 to their caller)
    fetcher = Fetcher(pool, FetchSettings(retry=RetryPolicy.parse("stop_after_attempt(1)", "wait_none"), inline_max=0))
    items = [FetchItem(RemoteEntry(name, len(data), None), tmp_path / "offline" / name, "sha256", sums[name])
             for name, data in FILES.items()]
    results: dict[str, FetchResult | BaseException] = {}

    async def done(index, result):
        results[items[index].entry.path] = result

    try:
        await fetcher.fetch_many(server.config, items, done)
    finally:
        await pool.close()
        await server.close()
    assert {name: r.digest for name, r in results.items()} == {
        name: hashlib.sha256(data).hexdigest() for name, data in FILES.items()}
    assert all(server.faults.transfers[name] == 1 for name in FILES)
