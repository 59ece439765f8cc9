"""One suite, every protocol, real servers on 127.0.0.1 (rclone's fstests).

Part 1 exercises the Protocol interface directly. The download engine's part (resume, retries,
verification, limits, traversal) is in test_download_conformance.py over the same fixtures.
"""

from __future__ import annotations

import pytest

from biomaj.protocols.base import RemoteNotFound
from tests.protocols.conftest import MTIME


async def _list(client, path=""):
    return {entry.path: entry async for entry in client.list(path)}


async def test_list_root(remote):
    async with remote.client() as client:
        entries = await _list(client)
    assert set(entries) == {"release.txt", "a.fasta", "big.bin", "empty.txt", "sub1", "sub2"}
    assert entries["sub1"].is_dir and entries["sub2"].is_dir
    assert not entries["a.fasta"].is_dir
    if entries["a.fasta"].size is not None:
        assert entries["a.fasta"].size == 10_000
    if entries["a.fasta"].mtime is not None and remote.has("mtime"):
        precision = type(client).features.mtime_precision
        assert abs(entries["a.fasta"].mtime - MTIME) <= precision


async def test_list_sub_directory_gives_paths_from_the_root(remote):
    async with remote.client() as client:
        entries = await _list(client, "sub1")
        deep = await _list(client, "sub1/deep")
    assert set(entries) == {"sub1/b.fasta.gz", "sub1/deep"}
    assert entries["sub1/deep"].is_dir
    assert set(deep) == {"sub1/deep/c.txt"}


async def test_list_missing_directory(remote):
    async with remote.client() as client:
        with pytest.raises(RemoteNotFound):
            await _list(client, "no-such-dir")


async def test_stat(remote):
    async with remote.client() as client:
        entry = await client.stat("sub1/deep/c.txt")
        with pytest.raises(RemoteNotFound):
            await client.stat("missing.txt")
    assert entry.path == "sub1/deep/c.txt"
    assert entry.size == 1234
    assert entry.mtime is not None
    if remote.has("mtime"):
        assert abs(entry.mtime - MTIME) <= 1


async def test_hash_changes_when_the_file_changes(remote):
    async with remote.client() as client:
        before = await client.stat("a.fasta")
        (remote.tree / "a.fasta").write_bytes(b"changed")
        after = await client.stat("a.fasta")
    assert before.hash and after.hash and before.hash != after.hash


@pytest.mark.needs("stream")
async def test_open_whole_file(remote):
    async with remote.client() as client:
        for path in ("a.fasta", "big.bin", "empty.txt", "sub1/b.fasta.gz"):
            async with client.open(path) as stream:
                data = b"".join([chunk async for chunk in stream])
            assert data == remote.contents[path], path
            assert stream.offset == 0


@pytest.mark.needs("stream")
async def test_open_at_offset_resumes(remote):
    async with remote.client() as client:
        async with client.open("big.bin", offset=1_000_000) as stream:
            data = b"".join([chunk async for chunk in stream])
    expected = remote.contents["big.bin"]
    assert stream.offset in (0, 1_000_000)
    assert data == expected[stream.offset :]
    if type(client).features.resume:
        assert stream.offset == 1_000_000


@pytest.mark.needs("stream")
async def test_open_missing_file(remote):
    async with remote.client() as client:
        with pytest.raises(RemoteNotFound):
            async with client.open("missing.bin") as stream:
                async for _ in stream:
                    pass


@pytest.mark.needs("stream")
async def test_leaving_a_stream_early_keeps_the_client_usable(remote):
    async with remote.client() as client:
        async with client.open("big.bin") as stream:
            async for _chunk in stream:
                break
        async with client.open("a.fasta") as stream:
            data = b"".join([chunk async for chunk in stream])
    assert data == remote.contents["a.fasta"]


async def test_close_twice(remote):
    client = remote.client()
    await _list(client)
    await client.close()
    await client.close()
