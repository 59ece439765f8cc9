"""Extract a downloaded archive in place, in Python: BioMAJ 3's ``uncompress`` step.

The archive is extracted into a hidden staging directory beside it; its entries are then moved
into place, replacing files of the same name (like ``tar --overwrite``, ``gunzip -f``,
``unzip -o``), and the archive is deleted. When anything goes wrong the staging directory is
removed and the archive is left as it was: nothing half-extracted shows in the directory.

Members named with an absolute path or ``..`` are refused before they are written, and tar
members go through tarfile's ``data`` filter (no links leaving the directory, no device files).
Data is streamed, never held in memory. Everything blocks: run it in a worker thread.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import posixpath
import re
import shutil
import stat
import tarfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from biomaj.errors import BiomajError
from biomaj.workflow.files import STAGING_PREFIX, remove_tree

#: Archive name endings, longest first so that ``.tar.gz`` wins over ``.gz``.
ARCHIVE_SUFFIXES: tuple[str, ...] = (
    ".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".txz", ".tar", ".gz", ".bz2", ".xz", ".zip",
)
_KINDS = {".gz": "gz", ".bz2": "bz2", ".xz": "xz", ".zip": "zip"}  # any other suffix is a tar
_OPENERS = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}
_LABELS = {"gz": "gzip", "bz2": "bzip2", "xz": "xz", "tar": "tar", "zip": "zip"}
CHUNK = 1024 * 1024
_DRIVE = re.compile(r"[A-Za-z]:")

if not hasattr(tarfile, "data_filter"):  # extraction filters came with Python 3.11.4
    raise ImportError("biomaj needs Python >= 3.11.4: tarfile has no extraction filters to extract tars safely")


class ExtractionError(BiomajError):
    """An archive could not be extracted; the message names the archive and the reason."""


def _suffix(name: str) -> str | None:
    lower = name.lower()
    return next((suffix for suffix in ARCHIVE_SUFFIXES if lower.endswith(suffix)), None)


def archive_kind(name: str) -> str | None:
    """``"tar"`` (compressed or not), ``"gz"``, ``"bz2"``, ``"xz"``, ``"zip"`` or None, from the name."""
    suffix = _suffix(name)
    return None if suffix is None else _KINDS.get(suffix, "tar")


def extract_archive(path: Path) -> list[str]:
    """Extract `path` into its own directory and delete it.

    Returns the extracted regular files, relative to that directory, ``/``-separated and sorted.
    A ``.gz``, ``.bz2`` or ``.xz`` holding a tarball is extracted as a tar (BioMAJ 3 takes every
    ``.bz2`` for one). Raises ExtractionError, leaving the archive and the directory untouched,
    when the archive is corrupt, holds an unsafe member or cannot be written out.
    """
    kind = archive_kind(path.name)
    if kind is None:
        raise ExtractionError(f"{path.name}: not an archive (known endings: {' '.join(ARCHIVE_SUFFIXES)})")
    staging = path.parent / f"{STAGING_PREFIX}{path.name}"
    try:
        original = path.stat()
        remove_tree(staging)  # left by a crash
        staging.mkdir()
        if kind in _OPENERS and _holds_tar(path):
            kind = "tar"
        if kind == "tar":
            _extract_tar(path, staging)
        elif kind == "zip":
            _extract_zip(path, staging)
        else:
            _decompress(path, staging, kind, original)
        files = _regular_files(staging)
        _move_into_place(path.name, staging, path.parent)
    except (OSError, EOFError, zlib.error, lzma.LZMAError, tarfile.TarError, zipfile.BadZipFile,
            RuntimeError, NotImplementedError) as exc:  # RuntimeError: an encrypted zip
        raise ExtractionError(f"{path.name}: {_reason(kind, exc)}") from exc
    finally:
        remove_tree(staging)
    try:
        # Unless the archive held a file of its own name, which has just replaced it.
        if os.path.samestat(original, path.lstat()):
            path.unlink()
    except OSError as exc:
        raise ExtractionError(f"{path.name}: extracted, but the archive cannot be deleted ({exc})") from exc
    return files


def _holds_tar(path: Path) -> bool:
    # Not tarfile.is_tarfile: any file starting with a block of zeros reads as an empty tar.
    try:
        with tarfile.open(path, "r:*") as archive:
            return archive.next() is not None
    except tarfile.TarError:
        return False


def _reason(kind: str, exc: BaseException) -> str:
    if isinstance(exc, tarfile.FilterError):
        return f"unsafe member {exc.tarinfo.name!r} ({exc})"
    # Decompressors report bad data as OSError without errno (gzip.BadGzipFile, bz2's "Invalid data stream").
    corrupt = (EOFError, zlib.error, lzma.LZMAError, tarfile.TarError, zipfile.BadZipFile)
    if isinstance(exc, corrupt) or (isinstance(exc, OSError) and exc.errno is None):
        return f"corrupt {_LABELS[kind]} data ({exc})"
    return str(exc)


def _check_member(archive: str, name: str) -> None:
    """Refuse a member whose path is absolute, has a drive letter, climbs out with ``..`` (backslashes
    read as separators) or lands in the staging directory."""
    normal = posixpath.normpath(name.replace("\\", "/"))
    parts = normal.split("/")
    if normal.startswith("/") or _DRIVE.match(normal) or ".." in parts or parts[0].startswith(STAGING_PREFIX):
        raise ExtractionError(f"{archive}: unsafe member {name!r} (absolute path, drive, '..' or reserved name)")


def _extract_tar(path: Path, staging: Path) -> None:
    with tarfile.open(path, "r:*", copybufsize=CHUNK) as archive:
        archive.extractall(staging, members=_checked(path.name, archive), filter="data")


def _checked(archive_name: str, archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    # Checked one by one as the tar is read: listing it first would decompress it twice.
    for member in archive:
        _check_member(archive_name, member.name)
        yield member


def _extract_zip(path: Path, staging: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        for member in members:
            _check_member(path.name, member.filename)
        for member in members:
            target = archive.extract(member, staging)
            if not member.is_dir():
                mtime = time.mktime(member.date_time + (0, 0, -1))  # zip times are local times
                os.utime(target, (mtime, mtime))


def _decompress(path: Path, staging: Path, kind: str, original: os.stat_result) -> None:
    name = path.name[: -len(_suffix(path.name))]
    if not name:
        raise ExtractionError(f"{path.name}: no file name is left once the suffix is removed")
    target = staging / name
    with _OPENERS[kind](path, "rb") as source, target.open("wb") as out:
        shutil.copyfileobj(source, out, CHUNK)
    os.utime(target, ns=(original.st_atime_ns, original.st_mtime_ns))


def _regular_files(root: Path) -> list[str]:
    return sorted(
        (Path(directory, name).relative_to(root)).as_posix()
        for directory, _, names in os.walk(root)
        for name in names
        if stat.S_ISREG(os.lstat(os.path.join(directory, name)).st_mode)
    )


def _move_into_place(archive_name: str, staging: Path, destination: Path) -> None:
    """Move what `staging` holds into `destination`, merging directories and replacing files.

    Conflicts that cannot be resolved (a file where a directory is) are found before anything
    moves; on a later failure the entries already moved in that were new are removed again.
    """
    moves = []
    pending = [Path()]
    while pending:
        relative = pending.pop()
        with os.scandir(staging / relative) as entries:
            for entry in entries:
                target = destination / relative / entry.name
                if target.is_dir() and not target.is_symlink():
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(relative / entry.name)
                        continue
                    where = (relative / entry.name).as_posix()
                    raise ExtractionError(f"{archive_name}: {where!r} is a directory, it cannot be replaced by a file")
                moves.append((Path(entry.path), target))
    created = []
    try:
        for source, target in moves:
            existed = os.path.lexists(target)
            if existed and source.is_dir() and not source.is_symlink():
                target.unlink()  # a file or symlink where the archive has a directory
            os.replace(source, target)
            if not existed:
                created.append(target)
    except OSError:
        for target in reversed(created):
            remove_tree(target)
        raise
