"""Remote names become local paths only through here: nothing may escape the offline directory."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from biomaj.protocols.base import UnsafePath


def safe_relative(name: str) -> str:
    """`name` as a clean relative path (``a/b``), or UnsafePath when it is absolute in a way that
    cannot be rebased, climbs with ``..``, or holds characters no file name should hold.

    A leading ``/`` is dropped, as BioMAJ does with save_as names like ``/sub/file``, and ``//``
    is collapsed.
    """
    if not name or "\x00" in name or "\\" in name:
        raise UnsafePath(f"unsafe remote name {name!r}: empty, NUL or backslash")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts:
        raise UnsafePath(f"unsafe remote name {name!r}: no file name in it")
    if any(p == ".." for p in parts):
        raise UnsafePath(f"unsafe remote name {name!r}: '..' would leave the offline directory")
    if parts[0].startswith("-"):
        raise UnsafePath(f"unsafe remote name {name!r}: starts with '-'")
    return posixpath.join(*parts)


def safe_join(base: Path, name: str, cache: dict | None = None) -> Path:
    """`base / name` for a remote `name`, guaranteed to stay under `base` (symlinks included).

    `cache` (a dict the caller keeps for one pass over a file list) remembers the folders already
    checked, so that each folder is resolved once, not once per file; do not keep it across
    steps that may create links (archive extraction).
    """
    relative = safe_relative(name)
    folder = relative.rpartition("/")[0]
    key = (base, folder)
    if cache is None or key not in cache:
        _check_folder(base, folder, name)
        if cache is not None:
            cache[key] = True
    target = base / relative
    # A symlink planted inside base (by an archive or an earlier run) must not redirect the write.
    if os.path.islink(target):
        raise UnsafePath(f"unsafe remote name {name!r}: {target} is a symbolic link")
    return target


def _check_folder(base: Path, folder: str, name: str) -> None:
    """`base/folder` resolves inside `base` (no folder of the way is a link out of it)."""
    if not folder:
        return
    resolved_base = os.path.realpath(base)
    resolved = os.path.realpath(os.path.join(base, folder))
    if resolved != resolved_base and not resolved.startswith(resolved_base.rstrip("/") + "/"):
        raise UnsafePath(f"unsafe remote name {name!r}: resolves outside {base}")
