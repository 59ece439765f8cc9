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


def _real(folder: Path, cache: dict[Path, Path] | None) -> Path:
    if cache is None:
        return folder.resolve()
    real = cache.get(folder)
    if real is None:
        real = cache[folder] = folder.resolve()
    return real


def safe_join(base: Path, name: str, cache: dict[Path, Path] | None = None) -> Path:
    """`base / name` for a remote `name`, guaranteed to stay under `base` (symlinks included).

    `cache` (a dict the caller keeps for one pass over a file list) saves resolving the same
    folders again; do not keep it across steps that may create links (archive extraction).
    """
    relative = safe_relative(name)
    target = base / relative
    resolved_base = _real(base, cache)
    # A symlink planted inside base (by an archive or an earlier run) must not redirect the write.
    resolved_parent = resolved_base if target.parent == base else _real(target.parent, cache)
    if resolved_parent != resolved_base and resolved_base not in resolved_parent.parents:
        raise UnsafePath(f"unsafe remote name {name!r}: resolves outside {base}")
    if target.is_symlink():
        raise UnsafePath(f"unsafe remote name {name!r}: {target} is a symbolic link")
    return target
