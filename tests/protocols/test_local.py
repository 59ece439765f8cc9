"""protocol=local beyond the conformance suite: symbolic links, BioMAJ's hash, unsafe paths,
reading, error mapping and a 100,000-entry directory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import tracemalloc

import pytest

from biomaj.protocols import open_protocol
from biomaj.protocols.base import FatalError, RemoteConfig, RemoteNotFound, RetryableError, UnsafePath
from biomaj.protocols.local import CHUNK, _translate_error


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha" * 1000)
    (root / "sub" / "b.txt").write_bytes(b"beta")
    (root / "big.bin").write_bytes(os.urandom(3 * CHUNK + 5))
    return root


def local(root):
    return open_protocol(RemoteConfig(protocol="local", root=str(root)))


async def names(client, path=""):
    return {entry.path: entry async for entry in client.list(path)}


async def test_symbolic_links_are_followed_and_flagged(tree):
    (tree / "link.txt").symlink_to("a.txt")
    (tree / "linkdir").symlink_to("sub")
    (tree / "dangling").symlink_to("nowhere")
    async with local(tree) as client:
        entries = await names(client)
        inside = await names(client, "linkdir")
        linked = await client.stat("link.txt")
        with pytest.raises(RemoteNotFound):
            await client.stat("dangling")
        async with client.open("link.txt") as stream:
            data = b"".join([chunk async for chunk in stream])
    assert entries["link.txt"].is_link and entries["link.txt"].size == 5000 and not entries["link.txt"].is_dir
    assert entries["linkdir"].is_link and entries["linkdir"].is_dir
    assert not entries["a.txt"].is_link and not entries["sub"].is_link
    assert "dangling" not in entries
    assert set(inside) == {"linkdir/b.txt"}
    assert linked.is_link and linked.size == 5000
    assert data == b"alpha" * 1000


async def test_hash_is_biomaj_s(tree):
    st = os.stat(tree / "a.txt")
    async with local(tree) as client:
        entry = await client.stat("a.txt")
        listed = (await names(client))["a.txt"]
    expected = hashlib.md5(f"a.txt{st.st_mtime}{st.st_size}".encode()).hexdigest()
    assert entry.hash == listed.hash == expected
    assert entry.mtime == st.st_mtime


async def test_unsafe_paths_are_refused(tree):
    async with local(tree) as client:
        for path in ("../tree/a.txt", "sub/../../x", "a\x00b"):
            with pytest.raises(UnsafePath):
                await client.stat(path)
            with pytest.raises(UnsafePath):
                async with client.open(path):
                    pass
        with pytest.raises(UnsafePath):
            await names(client, "..")


async def test_read_from_offsets(tree):
    data = (tree / "big.bin").read_bytes()
    async with local(tree) as client:
        for offset in (0, 1, CHUNK, len(data) - 1, len(data), len(data) + 10):
            async with client.open("big.bin", offset) as stream:
                got = [chunk async for chunk in stream]
            assert b"".join(got) == data[offset:], offset
            assert stream.offset == offset and stream.size == len(data)
            assert all(len(chunk) <= CHUNK for chunk in got)


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_leaving_early_or_being_cancelled_closes_the_file(tree):
    before = _open_descriptors()
    async with local(tree) as client:
        async with client.open("big.bin") as stream:
            async for _ in stream:
                break
        started = asyncio.Event()

        async def read_all():
            async with client.open("big.bin") as stream:
                async for _ in stream:
                    started.set()
                    await asyncio.sleep(10)

        task = asyncio.create_task(read_all())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert _open_descriptors() == before


async def test_directories_and_missing_files(tree):
    async with local(tree) as client:
        with pytest.raises(FatalError, match="is a directory"):
            async with client.open("sub"):
                pass
        with pytest.raises(RemoteNotFound):
            async with client.open("sub/none.txt"):
                pass
        with pytest.raises(RemoteNotFound):
            await names(client, "a.txt")  # not a directory
    async with local(tree / "missing-root") as client:
        with pytest.raises(RemoteNotFound):
            await names(client)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (FileNotFoundError(2, "No such file or directory"), RemoteNotFound),
        (NotADirectoryError(20, "Not a directory"), RemoteNotFound),
        (PermissionError(13, "Permission denied"), FatalError),
        (IsADirectoryError(21, "Is a directory"), FatalError),
        (OSError(5, "Input/output error"), RetryableError),
        (OSError(116, "Stale file handle"), RetryableError),
    ],
)
def test_translate_error(error, expected):
    assert type(_translate_error(error, "x")) is expected


async def test_listing_100000_entries_streams_in_little_memory(tmp_path, capsys):
    many = tmp_path / "many"
    many.mkdir()
    for i in range(100_000):
        os.close(os.open(many / f"file{i:06d}.dat", os.O_CREAT | os.O_WRONLY, 0o644))
    async with local(tmp_path) as client:
        started = time.monotonic()
        count = sum([1 async for _ in client.list("many")])
        elapsed = time.monotonic() - started
        tracemalloc.start()
        try:
            assert sum([1 async for _ in client.list("many")]) == 100_000
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    with capsys.disabled():
        print(f"\nlocal: 100,000 entries listed in {elapsed:.2f} s, tracemalloc peak {peak / 2**20:.1f} MiB")
    assert count == 100_000
    assert peak < 150 * 2**20
