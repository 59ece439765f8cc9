"""A release checked against its provenance file (``biomaj ctl verify``), and made whole again
from the remote (``biomaj ctl repair``).

Verify reads every file the provenance file lists and reports the missing ones, the changed ones
(another size, or another sha256: bit rot, a hand edit) and the extra ones. Repair fetches the
missing and changed files again from their recorded URL into a folder beside the release, checks
each against its recorded sha256, and renames it over the release's file: a new file, so that a
hard link the file shared with another release keeps the old one there, untouched.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from biomaj.download.paths import safe_join
from biomaj.download.verify import file_digest
from biomaj.errors import BiomajError, ConfigError

from . import crate
from . import files as fs
from .bank import Bank, RunContext
from .crate import CrateError
from .fetching import DIGEST, download_requests
from .provenance import KnownDigests, Progress, record_release, scan, sha256_of_tree
from .remote_files import Wanted, wanted_from_url
from .session import Session

#: How many names of each kind a summary line shows.
SHOWN = 3
#: How many names of each kind a job's result keeps (its counts are whole): the job record of a
#: release whose 200,000 files went missing stays small.
LISTED = 1000


def _capped(doc: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    doc["counts"] = {key: len(doc[key]) for key in keys}
    for key in keys:
        doc[key] = doc[key][:LISTED]
    return doc


def no_provenance(bank: str, release: str) -> str:
    """What to say of a release without a provenance file, and how to give it one."""
    return (f"release {release} of {bank} has no provenance file ({crate.FILE_NAME}): it was made before "
            f"biomaj wrote one. `biomaj ctl verify {bank} {release} --record` writes one from the files it "
            "holds now (check them first: the record is only as good as they are)")


@dataclass
class Report:
    """What verifying one release found."""

    release: str
    provenance: bool = True  # the release has a provenance file
    files: int = 0  # files it lists
    bytes: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)  # path, and sizes or sha256s
    extra: list[str] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)  # path, error
    recorded: bool = False  # --record wrote the provenance file from the files there now
    error: str | None = None  # why the release could not be checked

    @property
    def ok(self) -> bool:
        return self.provenance and self.error is None and not (
            self.missing or self.changed or self.extra or self.unreadable)

    def to_dict(self) -> dict[str, Any]:
        return _capped({**asdict(self), "ok": self.ok}, ("missing", "changed", "extra", "unreadable"))

    def summary(self) -> str:
        """One line: ``release 3: 1 changed (flat/a.fa), 1 missing (flat/b.fa)``."""
        if self.error:
            return f"release {self.release}: {self.error}"
        if self.recorded:
            return f"release {self.release}: provenance file written, {self.files} files recorded"
        if self.ok:
            return f"release {self.release}: {self.files} files as recorded"
        parts = [_names(what, names) for what, names in (
            ("changed", [c["path"] for c in self.changed]), ("missing", self.missing),
            ("unreadable", [u["path"] for u in self.unreadable]), ("extra", self.extra)) if names]
        return f"release {self.release}: " + ", ".join(parts)


def _names(what: str, names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")
    return f"{len(names)} {what} ({shown})"


async def check(release: str, release_dir: Path, recorded: crate.Release, *, progress: Progress | None = None,
                cancelled: asyncio.Event | None = None) -> Report:
    """Compare the files of ``release_dir`` with what its provenance file ``recorded`` lists."""
    report = Report(release, files=len(recorded.files), bytes=sum(f.size for f in recorded.files.values()))
    present = await asyncio.to_thread(scan, release_dir)
    report.missing = sorted(set(recorded.files) - set(present))
    report.extra = sorted(set(present) - set(recorded.files))
    to_read = {}
    for path in sorted(set(present) & set(recorded.files)):
        expected, size = recorded.files[path].size, present[path].st_size
        if size != expected:
            report.changed.append({"path": path, "size": size, "expected_size": expected})
        else:
            to_read[path] = present[path]
    digests = await sha256_of_tree(release_dir, to_read, KnownDigests(), progress=progress, cancelled=cancelled,
                                   what=f"verify {release}")
    for path, digest in sorted(digests.items()):
        if isinstance(digest, FileNotFoundError):
            report.missing.append(path)
        elif isinstance(digest, OSError):
            report.unreadable.append({"path": path, "error": digest.strerror or str(digest)})
        elif digest != recorded.files[path].sha256:
            report.changed.append({"path": path, "sha256": digest, "expected_sha256": recorded.files[path].sha256})
    report.missing.sort()
    report.changed.sort(key=lambda c: c["path"])
    return report


async def verify_release(bank: Bank, entry: dict, session: Session | None, *, record: bool = False,
                         progress: Progress | None = None, cancelled: asyncio.Event | None = None) -> Report:
    """Verify the production release ``entry`` (with ``record``: write its provenance file from
    the files it holds now instead, every file read)."""
    release, release_dir = entry["release"], Bank.production_dir(entry)
    if not release_dir.is_dir():
        return Report(release, error=f"its directory {release_dir.name} is gone")
    try:
        recorded = await asyncio.to_thread(crate.read, release_dir)
    except CrateError as exc:
        if not record:
            return Report(release, error=f"{exc}; `biomaj ctl verify {bank.name} {release} --record` writes it "
                                         "again from the files the release holds now")
        recorded = None
    if record:
        session = session or {"id": entry["session"], "release": release, "remoterelease": entry.get("remoterelease")}
        try:
            written = await record_release(bank, session, release_dir, None, progress=progress,
                                           cancelled=cancelled)
        except OSError as exc:
            return Report(release, error=f"provenance file not written: {exc}")
        return Report(release, files=len(written.files), bytes=sum(f.size for f in written.files.values()),
                      recorded=True)
    if recorded is None:
        return Report(release, provenance=False, error=no_provenance(bank.name, release))
    return await check(release, release_dir, recorded, progress=progress, cancelled=cancelled)


@dataclass
class Repair:
    """What repairing one release did."""

    release: str
    checked: int = 0  # files the provenance file lists
    fetched: list[str] = field(default_factory=list)  # fetched again and put back
    failed: list[dict[str, str]] = field(default_factory=list)  # path, error
    cannot: list[dict[str, str]] = field(default_factory=list)  # path, why it cannot be fetched again
    extra: list[str] = field(default_factory=list)  # left as they are

    @property
    def repaired(self) -> bool:
        return not (self.failed or self.cannot)

    def to_dict(self) -> dict[str, Any]:
        return _capped({**asdict(self), "repaired": self.repaired}, ("fetched", "failed", "cannot", "extra"))

    def summary(self) -> str:
        wrong = len(self.fetched) + len(self.failed) + len(self.cannot)
        text = f"release {self.release}: " + (f"{len(self.fetched)} of {wrong} wrong files fetched again" if wrong
                                                else f"{self.checked} files as recorded, nothing to fetch")
        if self.failed:
            text += "; " + "; ".join(f"{f['path']}: {f['error']}" for f in self.failed[:SHOWN])
        if self.cannot:
            text += "; " + _names("cannot be fetched again", [c["path"] for c in self.cannot]) + ": " + self.cannot[0]["why"]
        if self.extra:
            text += "; " + _names("extra, left as they are", self.extra)
        return text


NO_URL = ("no remote URL recorded (extracted from an archive, made by a process, or from a protocol=local "
          "remote): update the bank to make a new release")

#: Told of a repair's download: (files done, files to fetch).
FetchProgress = Callable[[int, int], Awaitable[None]]


async def repair_release(run: RunContext, bank: Bank, entry: dict, session_id: float | None, *,
                         progress: Progress | None = None, fetched: FetchProgress | None = None) -> Repair | None:
    """Fetch again the missing and changed files of the production release ``entry``; None when
    it has no provenance file to repair against. The caller holds the bank lock."""
    release, release_dir = entry["release"], Bank.production_dir(entry)
    try:
        recorded = await asyncio.to_thread(crate.read, release_dir)
    except CrateError as exc:
        raise BiomajError(f"release {release} of {bank.name}: {exc}; nothing to repair it against") from None
    if recorded is None:
        return None
    report = await check(release, release_dir, recorded, progress=progress, cancelled=run.cancelled)
    outcome = Repair(release, checked=report.files, extra=report.extra)
    wanted: list[Wanted] = []
    for path in report.missing + [c["path"] for c in report.changed] + [u["path"] for u in report.unreadable]:
        file = recorded.files[path]
        if not file.url:
            outcome.cannot.append({"path": path, "why": NO_URL})
            continue
        try:  # the provider's checksum too: the downloader checks it as the file streams in
            wanted.append(replace(wanted_from_url(bank.props, file.url, path, file.size, file.mtime),
                                  checksum=file.checksum))
        except ConfigError as exc:
            outcome.cannot.append({"path": path, "why": str(exc)})
    if wanted:
        await _fetch_again(run, bank, release_dir, recorded, wanted, session_id, outcome, fetched)
    return outcome


async def _fetch_again(run: RunContext, bank: Bank, release_dir: Path, recorded: crate.Release, wanted: list[Wanted],
                       session_id: float | None, outcome: Repair, fetched: FetchProgress | None) -> None:
    """Download ``wanted`` beside the release, then put each file that has its recorded sha256 in place."""
    if run.downloads is None:
        raise BiomajError("repair fetches files again through the downloaders, and none runs here")
    staging = release_dir.parent / f".biomaj-repair-{release_dir.name}"
    await asyncio.to_thread(fs.remove_tree, staging)
    staging.mkdir(parents=True)
    results: dict[str, Any] = {}

    async def on_result(result) -> None:
        for item in result.outcomes():
            results[item.save_as] = item
        if fetched is not None:
            await fetched(len(results), len(wanted))

    try:
        requests = download_requests(bank, run.job_id, str(session_id), staging, wanted)
        await run.downloads.run_all(requests, on_result, run.cancelled)
        for item in wanted:
            path, result = item.save_as, results.get(item.save_as)
            if result is None or not result.ok:
                outcome.failed.append({"path": path, "error": result.error if result else "no downloader reported on it"})
                continue
            staged = staging / path
            digest = result.digest or await asyncio.to_thread(file_digest, staged, DIGEST)
            expected = recorded.files[path].sha256
            if digest != expected:
                outcome.failed.append({"path": path, "error": f"the remote file is not the recorded one any more "
                                       f"(sha256 {digest}, recorded {expected}): update the bank for a new release"})
                continue
            await asyncio.to_thread(_put_back, release_dir, path, staged)
            outcome.fetched.append(path)
    finally:
        await asyncio.to_thread(fs.remove_tree, staging)


def _put_back(release_dir: Path, path: str, staged: Path) -> None:
    """Rename the fetched file over the release's: a new inode, the old one stays with any other
    release it is hard-linked into. The folder is checked to lie inside the release."""
    target = safe_join(release_dir, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)
