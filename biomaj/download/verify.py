"""Checks on downloaded files: archive integrity (in Python, no shell), checksum sidecars."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import tarfile
import zipfile
import zlib
from pathlib import Path

from biomaj.protocols.base import RemoteError

CHUNK = 1024 * 1024
SIDECARS = {".md5": "md5", ".sha256": "sha256"}


class VerificationFailed(RemoteError):
    """A downloaded file is not what it should be (size, checksum, broken archive)."""


def _drain(stream) -> None:
    while stream.read(CHUNK):
        pass


def archive_kind(name: str) -> str | None:
    """The archive test a file name calls for, as BioMAJ picks it by extension."""
    lower = name.lower()
    for suffix, kind in (
        (".tar.gz", "tar"), (".tgz", "tar"), (".tar.bz2", "tar"), (".tar.xz", "tar"), (".tar", "tar"),
        (".gz", "gzip"), (".bz2", "bz2"), (".xz", "xz"), (".zip", "zip"),
    ):
        if lower.endswith(suffix):
            return kind
    return None


def check_archive(path: Path, name: str | None = None) -> None:
    """Read the whole archive `path` (named `name`, default its own) and raise VerificationFailed
    if it is truncated or corrupt. Files that are not archives pass. Runs in a worker thread."""
    kind = archive_kind(name or path.name)
    if kind is None:
        return
    try:
        if kind == "tar":
            with tarfile.open(path, "r:*") as archive:
                for member in archive:
                    if member.isfile():
                        extracted = archive.extractfile(member)
                        if extracted is not None:
                            _drain(extracted)
        elif kind == "zip":
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
                if bad is not None:
                    raise VerificationFailed(f"{path.name}: zip member {bad!r} is corrupt")
        else:
            opener = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}[kind]
            with opener(path, "rb") as stream:
                _drain(stream)
    except VerificationFailed:
        raise
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, ValueError) as exc:
        raise VerificationFailed(f"{path.name}: broken {kind} archive ({exc})") from None


def file_digest(path: Path, algorithm: str) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, algorithm).hexdigest()


def check_sidecars(directory: Path, relative_paths: list[str]) -> list[str]:
    """BioMAJ's checksum step: for every file F of `relative_paths` whose ``F.md5`` or
    ``F.sha256`` is also there, compare the first token of the sidecar with F's digest.

    Returns the files checked; raises VerificationFailed naming every mismatch.
    """
    present = set(relative_paths)
    checked, mismatches = [], []
    for relative in relative_paths:
        for suffix, algorithm in SIDECARS.items():
            sidecar = relative + suffix
            if sidecar not in present:
                continue
            tokens = (directory / sidecar).read_text(errors="replace").split()
            expected = tokens[0].lower() if tokens else ""
            actual = file_digest(directory / relative, algorithm)
            checked.append(relative)
            if expected != actual:
                mismatches.append(f"{relative}: {algorithm} {actual} but {sidecar} says {expected or '(empty)'}")
    if mismatches:
        raise VerificationFailed("checksum mismatch: " + "; ".join(mismatches))
    return checked
