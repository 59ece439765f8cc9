"""The provenance file of a release (``ro-crate-metadata.json``, :mod:`.crate`): what goes in it,
and how it is written at the end of an update, before the release is published.

Every regular file of the release directory is listed (``flat/`` and whatever the processes
made; symbolic links are not followed nor listed), with its size, sha256 and date; a downloaded
file also with its remote URL and the provider's checksum. A sha256 is read from what is known
already when it still stands for the file (:func:`.hashing.still_valid`): the digest the
downloader computed while the file streamed in, or the provenance file of the release it was
hard-linked from (the previous release, a dependency's). The other files are read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from biomaj import __version__
from biomaj.download.verify import file_digest

from . import crate
from . import files as fs
from .bank import Bank
from .crate import CrateError, FileEntry, ProcessEntry
from .hashing import HashProgress, Known, sha256_files, still_valid
from .session import Session

log = logging.getLogger(__name__)

#: Told of the hashing's progress: (what is being done, where it stands).
Progress = Callable[[str, HashProgress], Awaitable[None]]


def scan(release_dir: Path) -> dict[str, os.stat_result]:
    """Every regular file under ``release_dir`` (relative path -> stat), symbolic links neither
    followed nor listed, the provenance file itself and its temporary files left out (blocking)."""
    found: dict[str, os.stat_result] = {}
    for relative, entry in fs.non_directories(release_dir, skip_staging=False):
        if relative == crate.FILE_NAME or relative.startswith(f".{crate.FILE_NAME}."):
            continue
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(info.st_mode):
            found[relative] = info
    return found


@dataclass
class KnownDigests:
    """Digests computed earlier, by release-relative path."""

    by_path: dict[str, Known] = field(default_factory=dict)

    def add_records(self, records: list[dict]) -> None:
        """The digests the downloaders computed (the session's file list, ``flat/<save_as>``)."""
        for record in records:
            digest = record.get("digest") or {}
            if digest.get("sha256") and digest.get("size") is not None:
                path = "flat/" + (record.get("save_as") or record["name"])
                self.by_path[path] = Known(digest["sha256"], digest["size"], digest.get("mtime"))

    def add_release(self, release_dir: Path, prefix: str = "") -> None:
        """The digests of another release's provenance file, for its files found here as
        ``prefix + path`` (a dependency's files under ``<dep>/``); an unreadable file adds none."""
        try:
            recorded = crate.read(release_dir)
        except CrateError as exc:
            log.warning("%s: %s: its digests are not reused", release_dir, exc)
            return
        if recorded is None:
            return
        for path, entry in recorded.files.items():
            self.by_path.setdefault(prefix + path, Known(entry.sha256, entry.size, entry.mtime, release_dir / path))

    def lookup(self, path: str, st: os.stat_result) -> str | None:
        """The known sha256 of ``path`` (whose stat is ``st``) if it still stands, else None."""
        known = self.by_path.get(path)
        return known.sha256 if known is not None and still_valid(known, st) else None


async def sha256_of_tree(release_dir: Path, files: dict[str, os.stat_result], known: KnownDigests, *,
                         progress: Progress | None = None, cancelled: asyncio.Event | None = None,
                         what: str = "hashing") -> dict[str, str | OSError]:
    """The sha256 of every file of ``files``: a known digest that still stands, else read."""
    digests: dict[str, str | OSError] = {}
    to_read = []
    for path, st in files.items():
        digest = known.lookup(path, st)
        if digest is None:
            to_read.append((path, st.st_size))
        else:
            digests[path] = digest

    async def tell(where: HashProgress) -> None:
        if progress is not None:
            await progress(what, where)

    digests.update(await sha256_files(release_dir, to_read, progress=tell, cancelled=cancelled))
    return digests


def processes_of(session: Session) -> list[ProcessEntry]:
    """The pre- and post-processes that ran for the session (process/runner.py record_run)."""
    found = []
    for phase in ("preprocess", "postprocess"):
        for name, run in sorted(((session.get("process_runs") or {}).get(phase) or {}).items()):
            found.append(ProcessEntry(phase, name, run.get("exe") or "", tuple(run.get("args") or ()),
                                      run.get("exit_code"), bool(run.get("ok")), run.get("started"),
                                      float(run.get("elapsed") or 0.0), run.get("docker")))
    return found


async def record_release(bank: Bank, session: Session, release_dir: Path, known: KnownDigests | None, *,
                         progress: Progress | None = None, cancelled: asyncio.Event | None = None) -> crate.Release:
    """Write the provenance file of ``release_dir`` (the release of ``session``) and return what
    it says. ``known``: digests that may stand for files, to which those the downloaders computed
    are added; None: every file is read. OSError when a file cannot be read (the release changed
    while it was hashed)."""
    records = await asyncio.to_thread(bank.read_file_list, session["id"])
    records = records if records is not None else list(session.get("download_files") or [])
    if known is None:
        known = KnownDigests()
    else:
        known.add_records(records)
    files = await asyncio.to_thread(scan, release_dir)
    digests = await sha256_of_tree(release_dir, files, known, progress=progress, cancelled=cancelled,
                                   what="provenance")
    failed = {path: error for path, error in digests.items() if isinstance(error, OSError)}
    if failed:
        path, error = next(iter(failed.items()))
        raise OSError(f"{path}: cannot be read ({error.strerror or error})"
                      + (f" (and {len(failed) - 1} more files)" if len(failed) > 1 else ""))
    downloads = {"flat/" + (r.get("save_as") or r["name"]): r for r in records}
    props = bank.props
    release = crate.Release(
        bank=bank.name, release=session["release"], session=str(session["id"]),
        remote_release=session.get("remoterelease"),
        description=(props.get("db.fullname") or "").strip('"'), license=props.get("db.license"),
        source=_source(records), bank_file=props.path.name,
        bank_file_sha256=await asyncio.to_thread(file_digest, props.path, "sha256"),
        version=__version__, started=session.get("id"), published=time.time(),
        processes=processes_of(session),
    )
    for path in sorted(files):
        record = downloads.get(path) or {}
        release.files[path] = FileEntry(path, files[path].st_size, digests[path], files[path].st_mtime,
                                        record.get("url"), record.get("checksum"))
    await asyncio.to_thread(crate.write, release_dir, release)
    return release


def _source(records: list[dict]) -> str | None:
    """The remote folder the downloaded files share (on one server), if any."""
    urls = [url for record in records if (url := record.get("url"))]
    if not urls:
        return None
    folder = os.path.commonprefix(urls).rpartition("/")[0] + "/"
    scheme = folder.find("://")
    return folder if scheme > 0 and "/" in folder[scheme + 3:] else None


def known_for_update(bank: Bank, release_dir: Path, production: list[dict],
                     dependencies: dict[str, Path]) -> KnownDigests:
    """The digests an update may take instead of reading files (blocking): this release's own
    provenance file (a resumed run), the last production release's (files hard-linked from
    it), each dependency's (its files copied under ``<dep>/``)."""
    known = KnownDigests()
    known.add_release(release_dir)
    if production:
        previous = Bank.production_dir(production[-1])
        if previous != release_dir:
            known.add_release(previous)
    for name, directory in dependencies.items():
        known.add_release(directory, prefix=f"{name}/")
    return known
