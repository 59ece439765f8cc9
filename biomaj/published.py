"""The published tree of the banks: what HTTP ``/db`` and the FTP view serve, independent of the transport.

A viewer sees one tree::

    <bank>/                       a bank the viewer may see that has a production release
    <bank>/current/...            the published release (the production of the session the store says is current)
    <bank>/<bank>_<release>/...   every production release the store records (its ``prod_dir``)

Rules (the same for every transport, :mod:`biomaj.web.db` and :mod:`biomaj.ftp`):

* Only production releases recorded in the store are reachable, at the directory the store records
  (``data_dir/dir_version/prod_dir``); ``current`` is the production of the published session, never
  whatever the ``current`` symlink points to. Pending and offline directories, ``RELEASE.txt`` and
  anything else under data.dir are not served.
* A path is a list of plain names (:func:`plain_name`): no ``.``/``..``, no hidden name, no NUL, slash or
  backslash; anything else is :class:`Refused` before any file system access.
* A resolved path must lie inside the resolved release directory (:func:`locate`): a symlink leading out
  of it is neither followed nor listed (:func:`directory_rows`). Only regular files and directories exist.
* Visibility is :class:`biomaj.reports.Viewer`'s: public banks for everyone, private ones for their owner
  and the admins.

Pure functions and blocking file system calls (run them in a thread); no store, no network here.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomaj.config.properties import GlobalProperties
from biomaj.reports import Viewer

log = logging.getLogger(__name__)

CURRENT = "current"


# --- names --------------------------------------------------------------------------------------------


class Refused(ValueError):
    """A path that designates nothing servable: not a list of plain names."""


def plain_name(name: str) -> bool:
    """A name that can be a segment of a published path: not empty, no slash, NUL nor backslash, not
    hidden (``.``, ``..``, ``.anything``)."""
    return bool(name) and not name.startswith(".") and not any(c in name for c in "/\\\x00")


def split_names(path: str) -> list[str]:
    """The names of a ``/``-separated path (consecutive slashes count as one); :class:`Refused` unless
    each is a plain name."""
    names = [n for n in path.split("/") if n]
    for name in names:
        if not plain_name(name):
            raise Refused(f"{name[:200]!r} is not a plain name (no '.' or '..', no hidden name, no NUL or backslash)")
    return names


# --- what the store says ------------------------------------------------------------------------------


def published_entry(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The production entry of the published session, or None."""
    current = doc.get("current")
    if current is None:
        return None
    return next((p for p in doc.get("production") or [] if p.get("session") == current), None)


def release_entry(doc: dict[str, Any], release: str) -> dict[str, Any] | None:
    """The production entry that ``<bank>/<release>`` designates: ``current`` or a ``prod_dir``."""
    if release == CURRENT:
        return published_entry(doc)
    return next((p for p in doc.get("production") or [] if p.get("prod_dir") == release and release != CURRENT), None)


def release_dir(entry: dict[str, Any]) -> Path | None:
    """``data_dir/dir_version/prod_dir`` of a production entry; None when the record is not sane
    (a relative data_dir, an absolute dir_version or one with '..', a prod_dir that is not a plain name)."""
    data_dir, dir_version, prod_dir = (str(entry.get(k) or "") for k in ("data_dir", "dir_version", "prod_dir"))
    if not (os.path.isabs(data_dir) and dir_version and not os.path.isabs(dir_version)
            and ".." not in dir_version.split("/") and plain_name(prod_dir)):
        return None
    return Path(data_dir, dir_version, prod_dir)


def exposed(config: Any) -> bool:
    """False when global.properties says ``expose=0`` (or false): BioMAJ 3's switch for /db."""
    props = GlobalProperties.load(config.global_properties)
    return (props.get("expose") or "").strip().lower() not in ("0", "false")


# --- listings -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One entry of a directory listing."""

    name: str
    is_dir: bool
    size: int | None
    mtime: float


def bank_rows(docs: Iterable[dict[str, Any]], viewer: Viewer) -> list[Row]:
    """The top of the tree: the banks ``viewer`` may see that have a production release, dated by their
    latest production session."""
    rows = []
    for doc in docs:
        name = str(doc.get("name") or "")
        if not (viewer.can_see(doc) and doc.get("production") and plain_name(name)):
            continue
        sessions = [p["session"] for p in doc["production"] if isinstance(p.get("session"), (int, float))]
        rows.append(Row(name, True, None, max(sessions, default=0)))
    return rows


def release_rows(doc: dict[str, Any]) -> list[Row]:
    """A bank's directory: ``current`` (if published) and every production directory that exists."""
    rows = []
    published = published_entry(doc)
    entries = [(CURRENT, published)] if published else []
    entries += [(p.get("prod_dir"), p) for p in doc.get("production") or []]
    for name, entry in entries:
        path = release_dir(entry)
        if path is None or not plain_name(str(name)) or (name == CURRENT and entry is not published):
            continue
        try:
            info = path.stat()
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode):
            rows.append(Row(str(name), True, None, info.st_mtime))
    return rows


# --- the file system side (blocking: run in a thread) ------------------------------------------------


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def locate(directory: Path, parts: Sequence[str]) -> tuple[Path, os.stat_result, Path]:
    """(real path, its stat, real release directory) of ``parts`` inside ``directory``, every symlink
    resolved; FileNotFoundError when missing, when the path leaves the directory, or when it is
    neither a regular file nor a directory."""
    try:
        root = directory.resolve(strict=True)
        target = root.joinpath(*parts).resolve(strict=True)
        info = target.stat()
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop (RuntimeError before 3.13)
        raise FileNotFoundError(str(directory)) from None
    if not _inside(target, root):
        log.warning("published: %r leads out of %s (to %s): refused", "/".join(parts), directory, target)
        raise FileNotFoundError(str(directory))
    if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)) or not stat.S_ISDIR(root.stat().st_mode):
        raise FileNotFoundError(str(directory))
    return target, info, root


def directory_rows(directory: Path, root: Path) -> list[Row]:
    """The entries of ``directory`` a listing shows: regular files and directories whose real path
    stays in ``root``, without hidden names nor names that are not UTF-8 (they cannot round-trip)."""
    rows = []
    with os.scandir(directory) as entries:
        for entry in entries:
            name = entry.name
            if not plain_name(name):
                continue
            try:
                name.encode("utf-8")
                if entry.is_symlink() and not _inside(Path(entry.path).resolve(strict=True), root):
                    continue
                info = entry.stat()
            except (OSError, RuntimeError, UnicodeEncodeError):
                continue
            if stat.S_ISDIR(info.st_mode):
                rows.append(Row(name, True, None, info.st_mtime))
            elif stat.S_ISREG(info.st_mode):
                rows.append(Row(name, False, info.st_size, info.st_mtime))
    return sorted(rows, key=lambda r: r.name)


__all__ = ["CURRENT", "Refused", "Row", "bank_rows", "directory_rows", "exposed", "locate", "plain_name",
           "published_entry", "release_dir", "release_entry", "release_rows", "split_names"]
