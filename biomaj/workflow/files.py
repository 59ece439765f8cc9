"""Moving, linking and sizing files in offline and release trees (BioMAJ 3's copy steps).

Selection follows BioMAJ 3's ``local.files`` and ``<dep>.files.move``: each whitespace-separated
pattern is ``re.match``-ed (anchored at the start, not a full match) against the path relative to
the root, ``/``-separated and without a leading slash; ``**/*`` matches everything. Trees are
walked without following symlinks. Everything here blocks: run it in a worker thread.
"""

from __future__ import annotations

import errno
import logging
import mimetypes
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from biomaj.download.engine import PART_SUFFIX
from biomaj.download.matching import ALL_FILES
from biomaj.errors import ConfigError

log = logging.getLogger(__name__)

#: Hidden directory where an archive is extracted before its files are moved into place.
STAGING_PREFIX = ".biomaj-extract-"
# errno values meaning "this file system will not hard-link these files": fall back to a copy.
LINK_REFUSED = frozenset(
    {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK, errno.EACCES}
)
_MATCH_ALL = re.compile(".*", re.DOTALL)
# onerror is deprecated from Python 3.12 in favour of onexc; both call the handler with (function, path, _).
_RMTREE_HANDLER = "onexc" if sys.version_info >= (3, 12) else "onerror"


def link_or_copy(src: Path, dst: Path, *, hardlink: bool = True) -> bool:
    """Make `dst` (parents created, an existing file replaced) a hard link to `src` when
    `hardlink`, or a copy keeping its mtime when not or when the file system refuses the link.

    Returns True when a hard link was made.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    if hardlink and _already_linked(src, dst):
        return True
    # Built beside dst and renamed over it, so dst is never a half-written copy, even when it is src.
    temporary = dst.with_name(dst.name + PART_SUFFIX)
    temporary.unlink(missing_ok=True)
    try:
        if hardlink:
            try:
                os.link(src, temporary)
            except OSError as exc:
                if exc.errno not in LINK_REFUSED:
                    raise
                log.debug("cannot hard-link %s to %s (%s): copying", src, dst, exc.strerror)
            else:
                os.replace(temporary, dst)
                return True
        shutil.copy2(src, temporary)
        os.replace(temporary, dst)
        return False
    finally:
        temporary.unlink(missing_ok=True)


def _already_linked(src: Path, dst: Path) -> bool:
    try:
        return os.path.samestat(os.stat(src), os.lstat(dst))  # a symlink to src is not a link
    except FileNotFoundError:
        return False


def match_any(patterns: Sequence[re.Pattern] | Sequence[str], relative: str) -> bool:
    """Whether one of `patterns` (compiled, or strings) ``re.match``-es `relative`; ``**/*`` matches all."""
    for pattern in patterns:
        if isinstance(pattern, str):
            if pattern == ALL_FILES or re.match(pattern, relative):
                return True
        elif pattern.match(relative):
            return True
    return False


def compile_patterns(patterns: Iterable[str], key: str) -> list[re.Pattern]:
    """Compile `patterns` read from property `key`; ``**/*`` becomes a pattern matching everything."""
    compiled = []
    for pattern in patterns:
        if pattern == ALL_FILES:
            compiled.append(_MATCH_ALL)
            continue
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise ConfigError(f"{key}: {pattern!r} is not a valid regular expression ({exc})") from None
    return compiled


@dataclass(frozen=True)
class FileRecord:
    """One entry of a BioMAJ 3 session's ``files`` list."""

    name: str  # relative to the release directory it was moved or copied to
    size: int
    year: int  # date of the mtime, local time
    month: int
    day: int
    format: str | None  # mimetypes' guess from the name

    @classmethod
    def of(cls, root: Path, name: str) -> FileRecord:
        """The record of file `name` under `root` (a symlink describes its target when it has one)."""
        path = os.path.join(root, name)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            info = os.lstat(path)
        day = time.localtime(info.st_mtime)
        return cls(name, info.st_size, day.tm_year, day.tm_mon, day.tm_mday, mimetypes.guess_type(name)[0])

    def to_dict(self) -> dict:
        """The record as stored in a session."""
        # not dataclasses.asdict: its deep copy was most of the cost for 20,000 files
        return {"name": self.name, "size": self.size, "year": self.year, "month": self.month,
                "day": self.day, "format": self.format}


def non_directories(root: Path, *, skip_staging: bool) -> Iterator[tuple[str, os.DirEntry]]:
    """(relative path, entry) of everything under `root` but directories, symlinks not followed."""
    pending = [("", os.fspath(root))]
    while pending:
        prefix, directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                relative = prefix + entry.name
                if not entry.is_dir(follow_symlinks=False):
                    yield relative, entry
                elif not (skip_staging and entry.name.startswith(STAGING_PREFIX)):
                    pending.append((relative + "/", entry.path))


def _selected(src_root: Path, patterns: Sequence[str], key: str) -> list[str]:
    """Relative paths of the files under `src_root` matching `patterns`, sorted."""
    compiled = compile_patterns(patterns, key)
    if not src_root.is_dir():
        return []
    real_root = src_root.resolve()
    selected = []
    for relative, entry in non_directories(src_root, skip_staging=True):
        if relative.endswith(PART_SUFFIX) or not match_any(compiled, relative):
            continue
        if entry.is_symlink():
            target = Path(entry.path).resolve()
            # A symlink to a directory is left alone, as BioMAJ 3's os.walk never lists it as a file.
            if target.is_dir():
                continue
            if not (target.is_file() and target.is_relative_to(real_root)):
                log.warning("%s: skipping symlink %s, its target %s is not a file under it", key, relative, target)
                continue
        elif not entry.is_file(follow_symlinks=False):
            continue
        selected.append(relative)
    return sorted(selected)


def move_matching(
    src_root: Path, dst_root: Path, patterns: Sequence[str], *, key: str = "local.files"
) -> list[FileRecord]:
    """BioMAJ 3's copy step: move the files under `src_root` matching `patterns` to the same
    relative path under `dst_root`; the others stay.

    Symlinks are moved as symlinks when their target is a file under `src_root`. Partial
    downloads and extraction staging directories are ignored. Returns the moved files' records,
    sorted by name; moving nothing is not an error here. A sub-directory whose every file moves
    (and that holds nothing else) goes in one rename when its place under `dst_root` is free:
    the files of a 20,000-file tree took a second of renames one by one.
    """
    moved = _selected(src_root, patterns, key)
    src, dst = os.fspath(src_root), os.fspath(dst_root)
    whole = _whole_directories(src, moved)
    made: set[str] = set()  # folders already made: one mkdir per folder, not per file
    done: set[str] = set()  # directories moved whole
    for relative in moved:
        folder = relative.rpartition("/")[0]
        top = _movable_top(folder, whole, done, dst)
        if top is None:
            _move(os.path.join(src, relative), os.path.join(dst, relative), made)
        elif top not in done:
            _move(os.path.join(src, top), os.path.join(dst, top), made)
            done.add(top)
    return [FileRecord.of(dst_root, relative) for relative in moved]


def _whole_directories(src: str, moved: list[str]) -> set[str]:
    """The sub-directories of `src` (relative) that hold only files of `moved` and sub-directories
    like them, at least one file each."""
    selected = set(moved)
    whole: set[str] = set()

    def visit(relative: str, path: str) -> bool:
        ok, files = True, False
        with os.scandir(path) as entries:
            for entry in entries:
                child = f"{relative}/{entry.name}" if relative else entry.name
                if entry.is_dir(follow_symlinks=False):
                    ok = visit(child, entry.path) and ok
                    files = True
                elif child in selected:
                    files = True
                else:
                    ok = False
        if ok and files and relative:
            whole.add(relative)
        return ok and files

    if moved and any("/" in name for name in moved):
        visit("", src)
    return whole


def _movable_top(folder: str, whole: set[str], done: set[str], dst: str) -> str | None:
    """The highest directory holding `folder` that can move in one rename, if any."""
    if not folder or folder not in whole:
        return None
    parts = folder.split("/")
    for n in range(1, len(parts) + 1):
        top = "/".join(parts[:n])
        if top in done:
            return top
        if top in whole and not os.path.lexists(os.path.join(dst, top)):
            return top
    return None


def _move(source: str, target: str, made: set[str]) -> None:
    parent = os.path.dirname(target)
    if parent not in made:
        os.makedirs(parent, exist_ok=True)
        made.add(parent)
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(source, target)


def copy_matching(
    src_root: Path, dst_root: Path, patterns: Sequence[str], *, hardlink: bool, key: str
) -> list[FileRecord]:
    """Like :func:`move_matching`, but hard-link or copy the files (BioMAJ 3's ``<dep>.files.move``)."""
    copied = _selected(src_root, patterns, key)
    for relative in copied:
        link_or_copy(src_root / relative, dst_root / relative, hardlink=hardlink)
    return [FileRecord.of(dst_root, relative) for relative in copied]


def tree_size(root: Path) -> int:
    """Total size in bytes of the regular files under `root` (0 when it is missing)."""
    if not root.is_dir():
        return 0
    return sum(
        entry.stat(follow_symlinks=False).st_size
        for _, entry in non_directories(root, skip_staging=False)
        if entry.is_file(follow_symlinks=False)
    )


def remove_tree(path: Path) -> None:
    """Delete `path` and everything under it, even read-only parts; a missing path is fine and a
    symlink is removed itself, never what it points to."""
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    shutil.rmtree(path, **{_RMTREE_HANDLER: partial(_retry_writable, os.fspath(path))})


def _retry_writable(top: str, function, failed: str, _error) -> None:
    """rmtree error handler: give the user access to the directory holding `failed` (never to the
    one holding `top`, which is not ours) and try again; a directory that could not be opened or
    listed is made accessible and removed afresh."""
    if failed != top:
        try:
            _allow_user(os.path.dirname(failed))
        except FileNotFoundError:
            return
    if not os.path.lexists(failed):  # removed meanwhile
        return
    if os.path.isdir(failed) and not os.path.islink(failed):
        _allow_user(failed)
        if function is not os.rmdir:
            shutil.rmtree(failed, **{_RMTREE_HANDLER: partial(_retry_writable, top)})
            return
    function(failed)


def _allow_user(directory: str) -> None:
    mode = os.lstat(directory).st_mode
    if stat.S_ISDIR(mode):
        os.chmod(directory, stat.S_IMODE(mode) | stat.S_IRWXU)
