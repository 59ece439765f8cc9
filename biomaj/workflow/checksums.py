"""Providers' checksum manifests in an update (``remote.checksums``, docs/checksums.md).

The manifests are the files the listing shows beside the wanted files whose name matches
``remote.checksums`` (NCBI's ``md5checksums.txt`` in each assembly folder, Ensembl's
``CHECKSUMS``, a ``.md5`` per BLAST volume). :class:`Manifests` picks them out of the listing,
fetches them before any file (the manager's client pool, within the host budget), reads them
(:mod:`biomaj.download.manifests`) and gives each wanted file they name its checksum
(``Wanted.checksum``, ``algo:hex``): the downloaders then check each file against it as it
streams in, a file kept or reused from the last release is compared by it, and it is recorded
in the session's file list for the next update and the release check (a checksum changed under
the same release is an update).
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import re
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from biomaj.bus.messages import FileOutcome
from biomaj.config.properties import BankProperties
from biomaj.download.engine import ClientPool, Fetcher, FetchItem, FetchResult, FetchSettings
from biomaj.download.manifests import AUTO, FORMATS, ManifestError, display_checksum, parse_manifest
from biomaj.download.paths import safe_join
from biomaj.download.retry import RetryPolicy
from biomaj.errors import ConfigError
from biomaj.protocols.base import RemoteConfig, RemoteEntry, RemoteError

from .engine import TaskFailed
from .remote_files import Wanted, remote_failure, retry_policy

#: A file bigger than this is no checksum manifest: remote.checksums matches too much.
MANIFEST_MAX_SIZE = 64 * 1024 * 1024
#: Mismatches named one by one in a failed update's error (all of them are in the session log).
SHOWN_MISMATCHES = 50
#: Changed files named in a release check's result.
SHOWN_CHANGES = 20
#: The stronger checksum wins when two manifests give one file checksums of different algorithms.
_STRENGTH = ("bsd-sum", "md5", "sha1", "sha256", "sha512")

#: ``(done, total)`` of the manifests fetched so far.
ManifestProgress = Callable[[int, int], Awaitable[None]]


def enabled(props: BankProperties) -> bool:
    """The bank reads its provider's checksum manifests."""
    return bool((props.get("remote.checksums") or "").strip())


def _pattern(props: BankProperties) -> re.Pattern[str]:
    text = (props.get("remote.checksums") or "").strip()
    try:
        return re.compile(text)
    except re.error as exc:
        raise ConfigError(f"remote.checksums={text!r} is not a valid regular expression ({exc})") from None


@dataclass
class ChecksumReport:
    """What the manifests gave: ``sources`` maps each file with a checksum (save_as) to its manifest."""

    manifests: int = 0
    files: int = 0  # wanted files with a checksum
    without: int = 0  # wanted files no manifest names
    sources: dict[str, str] | None = None


class Manifests:
    """The manifests of one run: :meth:`seen` is the listing's hook, :meth:`attach` fetches and
    reads them and gives the wanted files their checksums."""

    def __init__(self, props: BankProperties, pool: ClientPool, log: logging.Logger):
        self.props = props
        self.pool = pool
        self.log = log
        self.pattern = _pattern(props)
        self.format = (props.get("remote.checksums.format") or AUTO).strip().lower()
        if self.format != AUTO and self.format not in FORMATS:
            raise ConfigError(f"remote.checksums.format={self.format!r}: expected {AUTO} or one of {', '.join(FORMATS)}")
        # (root, path) -> (its remote, when not the listing's, and the entry) of each manifest listed
        self._listed: dict[tuple[str | None, str], tuple[RemoteConfig | None, RemoteEntry]] = {}
        self._files: set[str] = set()  # every file path the listing showed
        self.report = ChecksumReport()

    def seen(self, entry: RemoteEntry, config: RemoteConfig | None = None) -> None:
        """A file of the listing (of ``config``, default the bank's remote): kept when its name
        is a manifest's."""
        self._files.add(entry.path)
        if self.pattern.fullmatch(entry.name):
            self._listed.setdefault((config.root if config else None, entry.path), (config, entry))

    async def attach(self, wanted: list[Wanted], *, retry: RetryPolicy, offline: Path | None = None,
                     progress: ManifestProgress | None = None) -> list[Wanted]:
        """``wanted`` with the checksums of the manifests beside them. A manifest that is also a
        wanted file is fetched to its place in ``offline`` (the download then finds it there);
        the others to a temporary folder. TaskFailed when a manifest cannot be fetched or read."""
        if not wanted:
            return wanted
        if not self._files:  # remote.list: nothing was listed, the folders of its files are
            await self._list_folders(wanted)
        listed = [(config or wanted[0].config, entry) for config, entry in self._listed.values()]
        listed.sort(key=lambda found: (found[0].root, found[1].path))
        for _, entry in listed:
            if (entry.size or entry.size_hint or 0) > MANIFEST_MAX_SIZE:
                raise TaskFailed(f"remote.checksums={self.pattern.pattern} matches {entry.path} ({entry.size or entry.size_hint} "
                                 "bytes): too big for a checksum manifest; make remote.checksums match only the manifests")
        manifests = await self._read(listed, wanted, retry, offline, progress)
        return self._give(wanted, manifests)

    async def _list_folders(self, wanted: list[Wanted]) -> None:
        folders: dict[tuple[str, str], tuple[RemoteConfig, str]] = {}
        for item in wanted:
            folder = posixpath.dirname(item.entry.path)
            folders.setdefault((item.config.root, folder), (item.config, folder))
        for config, folder in folders.values():
            try:
                async with self.pool.client(config) as client:
                    async for entry in client.list(folder):
                        if not entry.is_dir:
                            self.seen(entry, config)
            except RemoteError as exc:
                raise remote_failure(exc, "remote.checksums", "listing the folders of remote.list for checksum manifests",
                                     config.root_url) from None

    async def _read(self, listed: list[tuple[RemoteConfig, RemoteEntry]], wanted: list[Wanted], retry: RetryPolicy,
                    offline: Path | None, progress: ManifestProgress | None) -> list[_Read]:
        """Fetch every manifest, the host's budget at a time, and read each as it arrives (only
        the checksums of wanted files are kept: NCBI has a manifest per assembly folder)."""
        by_path = {(w.config.root, w.entry.path): w for w in wanted}
        fetcher = Fetcher(self.pool, FetchSettings(retry=retry, check_archives=False))
        found: dict[int, _Read] = {}
        unfetched: list[str] = []
        unreadable: list[str] = []
        done = 0
        with tempfile.TemporaryDirectory(prefix="biomaj-manifests-") as tmp:
            groups: dict[str, tuple[RemoteConfig, list[int], list[FetchItem]]] = {}  # one fetch_many per remote
            for index, (config, entry) in enumerate(listed):
                also_wanted = by_path.get((config.root, entry.path))
                if offline is not None and also_wanted is not None:
                    dest = safe_join(offline, also_wanted.save_as)
                else:
                    dest = Path(tmp) / str(index)
                _, indexes, items = groups.setdefault(config.root, (config, [], []))
                indexes.append(index)
                items.append(FetchItem(entry, dest))

            for config, indexes, items in groups.values():
                async def finished(position: int, result: FetchResult | BaseException, indexes=indexes) -> None:
                    nonlocal done
                    done += 1
                    index = indexes[position]
                    remote = listed[index][1].path
                    if isinstance(result, FetchResult):
                        try:
                            found[index] = await asyncio.to_thread(
                                self._load, result.path, listed[index][0], remote, by_path, result.path.parent == Path(tmp))
                        except ManifestError as exc:
                            unreadable.append(str(exc))
                    else:
                        unfetched.append(f"{remote}: {result}")
                    if progress is not None:
                        await progress(done, len(listed))

                await fetcher.fetch_many(config, items, finished)
        if unfetched:
            more = f" (and {len(unfetched) - 5} more)" if len(unfetched) > 5 else ""
            raise TaskFailed(f"{len(unfetched)} checksum manifest(s) could not be fetched: {'; '.join(unfetched[:5])}{more}")
        if unreadable:
            more = f" (and {len(unreadable) - 1} more manifest(s) that cannot be read)" if len(unreadable) > 1 else ""
            raise TaskFailed(unreadable[0] + more)
        return [found[index] for index in sorted(found)]

    def _load(self, local: Path, config: RemoteConfig, remote: str, wanted: Mapping[tuple[str, str], Wanted],
              temporary: bool) -> _Read:
        """One manifest fetched to ``local``, read (a temporary copy is removed at once)."""
        try:
            text = local.read_text(encoding="utf-8", errors="replace")
        finally:
            if temporary:
                local.unlink(missing_ok=True)
        manifest = parse_manifest(text, remote, self.format)
        checksums = {path: checksum for path, checksum in manifest.remote_paths().items()
                     if (config.root, path) in wanted}
        return _Read(config.root, manifest.path, checksums, manifest.groups, manifest.note)

    def _give(self, wanted: list[Wanted], manifests: list[_Read]) -> list[Wanted]:
        """Each wanted file named by a manifest, with its checksum (the strongest when several)."""
        found: dict[tuple[str, str], tuple[str, str]] = {}  # (root, remote path) -> (checksum, manifest)
        for manifest in manifests:
            if manifest.note:
                self.log.info("Workflow:wf_download:checksum manifest %s: %s", manifest.path, manifest.note)
            for path, checksum in manifest.checksums.items():
                key = (manifest.root, path)
                before = found.get(key)
                if before is not None and before[0] != checksum:
                    old, new = before[0].partition(":")[0], checksum.partition(":")[0]
                    if old == new:
                        raise TaskFailed(f"{path}: the checksum manifests disagree: {before[1]} says {before[0]}, "
                                         f"{manifest.path} says {checksum}")
                    if _STRENGTH.index(new) < _STRENGTH.index(old):
                        continue
                found[key] = (checksum, manifest.path)
        self._check_groups(wanted, manifests)
        out, sources = [], {}
        for item in wanted:
            hit = found.get((item.config.root, item.entry.path))
            if hit is None:
                out.append(item)
                continue
            out.append(replace(item, checksum=hit[0]))
            sources[item.save_as] = hit[1]
        self.report = ChecksumReport(len(manifests), len(sources), len(wanted) - len(sources), sources)
        self.log.info("Workflow:wf_download:checksum manifests: %d read (remote.checksums=%s); %d of %d files have "
                      "a checksum in them, %d have none and are checked as before", len(manifests),
                      self.pattern.pattern, len(sources), len(wanted), len(wanted) - len(sources))
        return out

    def _check_groups(self, wanted: list[Wanted], manifests: list[_Read]) -> None:
        """A BLAST database (NCBI's JSON manifest) with some volumes wanted needs all of them."""
        paths = {w.entry.path for w in wanted}
        for manifest in manifests:
            folder = posixpath.dirname(manifest.path)
            for database, names in manifest.groups:
                volumes = [posixpath.join(folder, n) if folder else n for n in names if n.endswith(".tar.gz")]
                missing = [v for v in volumes if v not in paths]
                if missing and len(missing) < len(volumes):
                    where = ("remote.files does not select" if all(v in self._files for v in missing)
                             else "the server does not list all of")
                    raise TaskFailed(f"BLAST database {database}: {manifest.path} lists {len(volumes)} volumes and "
                                     f"{where} {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}: a database "
                                     "needs every volume")


@dataclass(frozen=True)
class _Read:
    """A manifest read: the checksums of the wanted files it names (by remote path under
    ``root``), and what else it says (:class:`~biomaj.download.manifests.Manifest`)."""

    root: str
    path: str
    checksums: dict[str, str]
    groups: tuple[tuple[str, tuple[str, ...]], ...]
    note: str


# --- after the download ----------------------------------------------------------------------------


@dataclass
class Verified:
    """The files with a provider checksum, by what became of them in the download task."""

    streamed: list[str]  # downloaded, checked as they streamed in
    reused: list[str]  # linked from the last release, whose recorded checksum is the same
    present: list[str]  # complete in the offline directory already (an earlier run of the session)

    @property
    def checked(self) -> set[str]:
        return set(self.streamed) | set(self.reused)

    def session_doc(self, report: ChecksumReport) -> dict:
        """``session["checksums"]``: what the manifests covered and how each file was checked."""
        return {"manifests": report.manifests, "files": report.files, "without": report.without,
                "verified": len(self.streamed), "reused": len(self.reused), "present": len(self.present)}


def verified(wanted: list[Wanted], outcomes: Mapping[str, FileOutcome], reused: list[str]) -> Verified:
    """Sort the files with a checksum: fetched (and so verified), reused, or already there."""
    linked = set(reused)
    result = Verified([], [], [])
    for item in wanted:
        if not item.checksum:
            continue
        outcome = outcomes.get(item.save_as)
        if outcome is not None and outcome.ok and not outcome.skipped:
            result.streamed.append(item.save_as)
        elif item.save_as in linked:
            result.reused.append(item.save_as)
        else:
            result.present.append(item.save_as)
    return result


def mismatch_error(wanted: list[Wanted], outcomes: Mapping[str, FileOutcome], report: ChecksumReport,
                   failure: str) -> str | None:
    """The error of a download task whose failures include files that did not match their
    manifest's checksum: each such file with both checksums, then the other failures' message;
    None when no file failed so."""
    expected = {w.save_as: w.checksum for w in wanted if w.checksum}
    bad = [(name, expected[name], outcome.got_checksum) for name, outcome in outcomes.items()
           if not outcome.ok and outcome.got_checksum and name in expected]
    if not bad:
        return None
    # a checksum no manifest gave came with the listing (an S3 object's MD5 ETag)
    sources = {**{w.save_as: "the object's ETag" for w in wanted if w.checksum and w.checksum == w.entry.checksum},
               **(report.sources or {})}
    shown = "; ".join(f"{name}: expected {display_checksum(want)} ({sources.get(name, 'manifest')}), "
                      f"got {display_checksum(got)}" for name, want, got in sorted(bad)[:SHOWN_MISMATCHES])
    more = f" (and {len(bad) - SHOWN_MISMATCHES} more, in the session log)" if len(bad) > SHOWN_MISMATCHES else ""
    text = (f"{len(bad)} file(s) do not match the provider's checksum manifest, each fetched twice: {shown}{more}")
    others = sum(1 for o in outcomes.values() if not o.ok) - len(bad)
    return f"{text}. {failure}" if others else text


# --- changed under the same release -------------------------------------------------------------


def changed_under_same_release(current: list[dict], previous: list[dict] | None) -> list[str]:
    """The files (save_as) whose provider checksum differs from the one recorded for the last
    production release, added or gone ones included; [] when that release recorded none (it was
    downloaded before remote.checksums was set: nothing to compare). A file whose checksum is of
    another algorithm now is not compared."""
    if not previous:
        return []
    before = {r.get("save_as") or r.get("name"): r["checksum"] for r in previous if r.get("checksum")}
    if not before:
        return []
    now = {r.get("save_as") or r.get("name"): r["checksum"] for r in current if r.get("checksum")}
    changed = []
    for name in sorted(now.keys() | before.keys()):
        new, old = now.get(name), before.get(name)
        if new and old and new.partition(":")[0] != old.partition(":")[0]:
            continue  # the provider changed its algorithm: nothing to compare
        if new != old:
            changed.append(name)
    return changed


async def changed_remote_files(manifests: Manifests, wanted: list[Wanted], previous: list[dict] | None,
                               props: BankProperties) -> list[str]:
    """The release check's question, asked of the manifests alone: the files whose checksum
    changed since the last production release (:func:`changed_under_same_release`); ``wanted``
    was listed with ``manifests.seen``. The manifests go to a temporary folder."""
    if wanted:
        wanted = await manifests.attach(wanted, retry=retry_policy(props, wanted[0].config))
    return changed_under_same_release([w.record() for w in wanted], previous)
