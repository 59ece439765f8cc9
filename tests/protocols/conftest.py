"""The protocol conformance fixtures: one standard tree served by every protocol's real server.

`remote` is parametrised over PROTOCOLS; each entry names the module under tests/servers/ that
starts a real server for it. Known gaps of a protocol are declared in GAPS (data, not forked tests): ``faults``, ``evil_names``,
``split``, ``stream``, ``midfile_cancel``, ``mtime`` (the tree's dates are the remote's).
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from biomaj.protocols import open_protocol
from biomaj.protocols.base import Protocol, RemoteConfig
from tests.servers.faults import Faults, RunningServer

#: bank protocol -> test server module (tests/servers/<module>.py)
PROTOCOLS: dict[str, str] = {
    "local": "tests.servers.local_server",
    "http": "tests.servers.http_server",
    "https": "tests.servers.http_server",
    "ftp": "tests.servers.ftp_server",
    "ftps": "tests.servers.ftp_server",
    "sftp": "tests.servers.sftp_server",
    "rsync": "tests.servers.rsync_server",
    "s3": "tests.servers.s3_server",
}

#: What a protocol cannot do, by design; tests consult this instead of forking.
GAPS: dict[str, set[str]] = {
    # no server between us and the files: nothing to break or inject, nothing to split
    "local": {"faults", "evil_names", "split"},
    # rsync writes files itself and never lists '..' or '/'; what it received reaches the disk
    # (where its progress is seen) at rsync's own pace, so a cancel cannot be staged mid-file.
    "rsync": {"stream", "evil_names", "midfile_cancel", "split"},
    "http": set(),
    "https": set(),
    "ftp": set(),
    "ftps": set(),
    "sftp": set(),
    # an object's date is when it was uploaded (S3 has no way to set it): not the tree's dates
    "s3": {"mtime"},
}

SEED = b"biomaj-conformance"


def _bytes(name: str, size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(SEED + name.encode() + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


#: the standard tree: relative path -> size (content is deterministic, see _bytes)
TREE: dict[str, int] = {
    "release.txt": 0,  # content set below
    "a.fasta": 10_000,
    "big.bin": 3 * 1024 * 1024 + 17,
    "sub1/b.fasta.gz": 0,  # a real gzip, set below
    "sub1/deep/c.txt": 1234,
    "sub2/d.txt": 1,
    "empty.txt": 0,
}
MTIME = 1_600_000_000  # 2020-09-13, whole seconds: every protocol can carry it


def build_tree(root: Path) -> dict[str, bytes]:
    """Write the standard tree under `root`; return path -> content."""
    import gzip

    contents = {path: _bytes(path, size) for path, size in TREE.items()}
    contents["release.txt"] = b"Release 42\n"
    contents["sub1/b.fasta.gz"] = gzip.compress(b">s1\nACGT\n" * 500, mtime=0)
    for path, data in contents.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        os.utime(target, (MTIME, MTIME))
    return contents


@dataclass
class Remote:
    """A running server over the standard tree, and a client for it."""

    protocol: str
    server: RunningServer
    contents: dict[str, bytes]
    tree: Path

    @property
    def config(self) -> RemoteConfig:
        return self.server.config

    @property
    def faults(self) -> Faults:
        return self.server.faults

    def client(self, **changes) -> Protocol:
        return open_protocol(replace(self.config, **changes))

    def has(self, capability: str) -> bool:
        return capability not in GAPS[self.protocol]


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(*capabilities): run only on protocols without these GAPS")


def pytest_generate_tests(metafunc):
    """Parametrise `remote` over the protocols that have what the test needs (no skips)."""
    if "remote" not in metafunc.fixturenames:
        return
    needed = {cap for marker in metafunc.definition.iter_markers("needs") for cap in marker.args}
    protocols = [p for p in PROTOCOLS if not needed & GAPS[p]]
    metafunc.parametrize("remote", protocols, indirect=True)


@pytest.fixture
async def remote(request, tmp_path) -> Remote:
    protocol = request.param
    tree = tmp_path / "remote"
    tree.mkdir()
    contents = build_tree(tree)
    module = importlib.import_module(PROTOCOLS[protocol])
    faults = Faults()
    server = await module.start(tree, faults, protocol=protocol)
    try:
        yield Remote(protocol, server, contents, tree)
    finally:
        await server.close()
