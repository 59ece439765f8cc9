"""Remote names become local paths only through here: nothing may escape the offline directory."""

from __future__ import annotations

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


def safe_join(base: Path, name: str) -> Path:
    """`base / name` for a remote `name`, guaranteed to stay under `base` (symlinks included)."""
    relative = safe_relative(name)
    target = base / relative
    resolved_base = base.resolve()
    # A symlink planted inside base (by an archive or an earlier run) must not redirect the write.
    resolved_parent = target.parent.resolve()
    if resolved_parent != resolved_base and resolved_base not in resolved_parent.parents:
        raise UnsafePath(f"unsafe remote name {name!r}: resolves outside {base}")
    if target.is_symlink():
        raise UnsafePath(f"unsafe remote name {name!r}: {target} is a symbolic link")
    return target
