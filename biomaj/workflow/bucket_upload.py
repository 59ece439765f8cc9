"""Copying a release directory into a bucket, verified and resumable, and the marker that names it.

The transfer half of the publish to a bucket (:mod:`.bucket_publish` is the bank's half: settings,
records, when to run). Every regular file of the release goes to ``<release prefix><relative path>``:

* one ``PUT`` for a file up to one part, a multipart upload above (parts of :func:`part_size`: at
  least 8 MiB, and big enough for at most 10,000 parts, S3's limit);
* the MD5 of each part is computed in the pass that reads the file for the upload (in a thread),
  and the ETag S3 answers must be the one of what was sent (:func:`biomaj.buckets.multipart_etag`
  for a multipart upload); the provenance file's sha256 of the file rides along as the object's
  user metadata ``x-amz-meta-sha256``;
* the objects verified are written to a journal (a JSON line per object: key, size, local date,
  ETag) in the bank's cache directory, so that a rerun lists the release prefix once and skips
  what the journal and the listing agree on. An object listed but not in the journal (the run
  was killed before writing its line) is kept when its size and ETag are those of the local
  file (its expected ETag is computed from the file). S3 shows an object only once whole;
* a last listing checks every object's size and ETag, and removes the objects under the
  prefix that the release does not have (a release of the same name removed and made again);
* only then may the caller write the marker (:func:`switch_marker`).

Uploads run at most the endpoint's host budget at once (``limits.per_host``, or its line in
``limits.hosts``), the same budget the downloads from that endpoint use: one slot per object, and
the slots free at its start for more parts at once of a big one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from biomaj import buckets
from biomaj.download.limits import HostBudget
from biomaj.errors import BiomajError

from . import crate, provenance
from .engine import CANCELLED, Cancelled

if TYPE_CHECKING:
    from obstore.store import S3Store

log = logging.getLogger(__name__)

MARKER = "current"
PART_MIN = 8 * 1024 * 1024
MAX_PARTS = 10_000
READ_BLOCK = 1024 * 1024  # a part is a whole number of blocks: a block never straddles two parts
DELETE_BATCH = 1000  # keys per DeleteObjects request (S3's limit)


class UploadFailed(BiomajError):
    """An object could not be written or verified; ``failure``: what S3 answered, when it did."""

    def __init__(self, message: str, failure: buckets.Failure | None = None):
        super().__init__(message)
        self.failure = failure


@dataclass(frozen=True)
class LocalFile:
    """One file of the release: its path relative to the release directory, size and date."""

    path: str
    size: int
    mtime_ns: int
    sha256: str | None = None


@dataclass
class Progress:
    """Where an upload stands: objects and bytes done (uploaded or found in place) of the totals."""

    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    uploaded: int = 0  # objects written this run (the others were in place)
    removed: int = 0  # objects under the prefix that the release does not have, deleted


#: Told where the upload stands, after each object.
OnProgress = Callable[[Progress], Awaitable[None]]


def part_size(size: int) -> int:
    """The part size of a multipart upload of ``size`` bytes: 8 MiB, or more (whole MiB) so that
    the object takes at most 10,000 parts."""
    needed = -(-size // MAX_PARTS)
    return max(PART_MIN, -(-needed // READ_BLOCK) * READ_BLOCK)


def release_files(release_dir: Path) -> list[LocalFile]:
    """Every regular file of the release with the sha256 its provenance file records (blocking).
    Symbolic links are not uploaded (an object store has none), as the provenance file does not
    list them."""
    try:
        recorded = crate.read(release_dir)
    except crate.CrateError as exc:
        log.warning("%s: %s: objects are written without their sha256", release_dir, exc)
        recorded = None
    known = recorded.files if recorded is not None else {}
    files = provenance.scan(release_dir)
    own = release_dir / crate.FILE_NAME
    if own.is_file():
        files[crate.FILE_NAME] = own.stat()
    found = []
    for path in sorted(files):
        st = files[path]
        entry = known.get(path)
        found.append(LocalFile(path, st.st_size, st.st_mtime_ns, entry.sha256 if entry is not None else None))
    return found


# --- the journal ---------------------------------------------------------------------------------


class Journal:
    """The objects of one release verified in one bucket: a JSON line each, appended as they are."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, tuple[int, int, str]]:
        """key -> (size, local date in ns, ETag); a line torn by a kill is dropped from the file,
        so that the lines added next start on a line of their own."""
        found: dict[str, tuple[int, int, str]] = {}
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return found
        kept = []
        for line in text.splitlines():
            try:
                item = json.loads(line)
                found[item["key"]] = (int(item["size"]), int(item["mtime_ns"]), str(item["etag"]))
            except (ValueError, KeyError, TypeError):
                continue
            kept.append(line)
        if text and (len(kept) != text.count("\n") or not text.endswith("\n")):
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.path)
        return found

    def add(self, key: str, file: LocalFile, etag: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as out:
            out.write(json.dumps({"key": key, "size": file.size, "mtime_ns": file.mtime_ns, "etag": etag}) + "\n")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# --- ETags of local files --------------------------------------------------------------------------


def _same_etag(a: str | None, b: str | None) -> bool:
    return bool(a and b) and a.strip('"').lower() == b.strip('"').lower()


def expected_etag(path: Path, size: int) -> str:
    """The ETag an upload of ``path`` by :func:`put_file` gets (blocking: reads the file)."""
    part = part_size(size)
    digests = []
    with path.open("rb") as source:
        for _ in range(max(1, -(-size // part))):
            digest, left = hashlib.md5(), part  # noqa: S324 - S3's ETag scheme
            while left:
                block = source.read(min(READ_BLOCK, left))
                if not block:
                    break
                digest.update(block)
                left -= len(block)
            digests.append(digest.digest())
    return f'"{digests[0].hex()}"' if size <= part else buckets.multipart_etag(digests)


class _Unreadable(Exception):
    """The local file could not be read whole (told apart from obstore's own OSErrors)."""


async def _parts(path: Path, size: int, part: int, digests: list[bytes]) -> AsyncIterator[bytes]:
    """``path``'s content in blocks read in a thread, the MD5 of each ``part`` bytes appended to
    ``digests`` as it is read. _Unreadable when it cannot be read, or is not ``size`` bytes any more."""
    try:
        source = await asyncio.to_thread(path.open, "rb")
    except OSError as exc:
        raise _Unreadable(exc.strerror or str(exc)) from None
    digest, in_part, total = hashlib.md5(), 0, 0  # noqa: S324 - S3's ETag scheme

    def read(count: int) -> bytes:
        try:
            block = source.read(count)
        except OSError as exc:
            raise _Unreadable(exc.strerror or str(exc)) from None
        digest.update(block)
        return block

    try:
        while True:
            block = await asyncio.to_thread(read, min(READ_BLOCK, part - in_part))
            if not block:
                break
            total += len(block)
            in_part += len(block)
            if in_part == part:
                digests.append(digest.digest())
                digest, in_part = hashlib.md5(), 0  # noqa: S324
            yield block
        if in_part:
            digests.append(digest.digest())
    finally:
        await asyncio.to_thread(source.close)
    if total != size:
        raise _Unreadable(f"it changed while it was uploaded ({total} bytes read, {size} expected)")


def _read_whole(path: Path, size: int) -> tuple[bytes, str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _Unreadable(exc.strerror or str(exc)) from None
    if len(data) != size:
        raise _Unreadable(f"it changed while it was uploaded ({len(data)} bytes read, {size} expected)")
    return data, hashlib.md5(data).hexdigest()  # noqa: S324 - S3's ETag scheme


async def put_file(store: S3Store, key: str, path: Path, file: LocalFile, *, connections: int = 1) -> str:
    """Upload one file to ``key`` and return its ETag, checked against what was sent;
    ``connections``: parts of a multipart upload sent at once."""
    import obstore

    attributes = {"sha256": file.sha256} if file.sha256 else None
    part = part_size(file.size)
    try:
        if file.size <= part:
            data, md5 = await asyncio.to_thread(_read_whole, path, file.size)
            result = await obstore.put_async(store, key, data, use_multipart=False, attributes=attributes)
            expected = f'"{md5}"'
        else:
            digests: list[bytes] = []
            result = await obstore.put_async(store, key, _parts(path, file.size, part, digests), use_multipart=True,
                                             chunk_size=part, max_concurrency=connections, attributes=attributes)
            expected = buckets.multipart_etag(digests)
    except _Unreadable as exc:
        raise UploadFailed(f"{file.path}: cannot be read ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - obstore's errors: the S3 status and code read back
        raise _failed(key, exc) from None
    etag = result.get("e_tag")
    if not _same_etag(etag, expected):
        raise UploadFailed(f"{key}: the bucket's ETag {etag} is not the {expected} of what was sent "
                           "(the object was damaged on its way, or the store encrypts with KMS)")
    return etag


def _failed(key: str, exc: BaseException) -> UploadFailed:
    failure = buckets.read_failure(exc)
    return UploadFailed(f"{key}: {failure.text}", failure)


# --- listing, marker, removal ----------------------------------------------------------------------


async def list_prefix(store: S3Store, prefix: str) -> dict[str, tuple[int, str]]:
    """Every object under ``prefix``: key -> (size, ETag), listed once (pages streamed)."""
    import obstore

    found: dict[str, tuple[int, str]] = {}
    try:
        async for batch in obstore.list(store, prefix=prefix, chunk_size=1000):
            for meta in batch:
                found[meta["path"]] = (int(meta["size"]), meta.get("e_tag") or "")
    except Exception as exc:  # noqa: BLE001 - obstore's errors, read back
        raise _failed(prefix, exc) from None
    return found


async def read_marker(store: S3Store, key: str) -> str | None:
    """The release directory the marker object ``key`` names, None without a marker."""
    import obstore

    try:
        result = await obstore.get_async(store, key)
        body = bytes(await result.bytes_async())
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001
        raise _failed(key, exc) from None
    return body.decode("utf-8", "replace").strip() or None


async def write_marker(store: S3Store, key: str, prod_dir: str) -> None:
    """The marker names ``prod_dir`` (``<prod_dir>\\n``), in one PUT: readers see the old or the new."""
    import obstore

    try:
        await obstore.put_async(store, key, f"{prod_dir}\n".encode(), use_multipart=False,
                                attributes={"Content-Type": "text/plain; charset=utf-8"})
    except Exception as exc:  # noqa: BLE001
        raise _failed(key, exc) from None


async def delete_keys(store: S3Store, keys: list[str]) -> None:
    """Delete ``keys``, a thousand per request."""
    import obstore

    for start in range(0, len(keys), DELETE_BATCH):
        batch = keys[start:start + DELETE_BATCH]
        try:
            await obstore.delete_async(store, batch)
        except Exception as exc:  # noqa: BLE001
            raise _failed(batch[0], exc) from None


# --- the upload ------------------------------------------------------------------------------------


@dataclass
class _Plan:
    to_send: list[LocalFile]
    in_place: list[LocalFile]


async def _plan(files: list[LocalFile], release_dir: Path, prefix: str, listed: dict[str, tuple[int, str]],
                journal: Journal) -> _Plan:
    """Which files must be sent: not listed, or listed with another size or ETag than the file's."""
    verified = await asyncio.to_thread(journal.load)
    plan = _Plan([], [])
    for file in files:
        key = prefix + file.path
        there = listed.get(key)
        if there is None or there[0] != file.size:
            plan.to_send.append(file)
            continue
        mine = verified.get(key)
        if mine is not None and mine[:2] == (file.size, file.mtime_ns) and _same_etag(mine[2], there[1]):
            plan.in_place.append(file)
            continue
        expected = await asyncio.to_thread(expected_etag, release_dir / file.path, file.size)
        if _same_etag(expected, there[1]):
            await asyncio.to_thread(journal.add, key, file, there[1])
            plan.in_place.append(file)
        else:
            plan.to_send.append(file)
    return plan


async def upload_release(store: S3Store, access: buckets.BucketAccess, release_dir: Path, prefix: str, *,
                         journal: Journal, budget: HostBudget | None = None, progress: OnProgress | None = None,
                         cancelled: asyncio.Event | None = None) -> Progress:
    """Make ``prefix`` (``.../<prod_dir>/``) hold exactly the files of ``release_dir``, each
    verified; returns what was done. UploadFailed on the first object that fails (the others
    stop), Cancelled when ``cancelled`` is set."""
    files = await asyncio.to_thread(release_files, release_dir)
    listed = await list_prefix(store, prefix)
    plan = await _plan(files, release_dir, prefix, listed, journal)
    state = Progress(files_done=len(plan.in_place), files_total=len(files),
                     bytes_done=sum(f.size for f in plan.in_place), bytes_total=sum(f.size for f in files))
    budget = budget if budget is not None else HostBudget()
    queue = list(reversed(plan.to_send))
    errors: list[BaseException] = []

    async def worker() -> None:
        while queue and not errors:
            if cancelled is not None and cancelled.is_set():
                raise Cancelled(CANCELLED)
            file = queue.pop()
            key = prefix + file.path
            async with budget.slot(access.address):
                extra = await _spare_slots(budget, access.address, file)
                try:
                    etag = await put_file(store, key, release_dir / file.path, file, connections=1 + len(extra))
                finally:
                    for slot in extra:
                        slot.release()
            await asyncio.to_thread(journal.add, key, file, etag)
            state.files_done += 1
            state.bytes_done += file.size
            state.uploaded += 1
            if progress is not None:
                await progress(state)

    async def guarded() -> None:
        try:
            await worker()
        except BaseException as exc:
            errors.append(exc)
            raise

    workers = max(1, min(budget.limit(access.address), len(queue)))
    await asyncio.gather(*(guarded() for _ in range(workers)), return_exceptions=True)
    if errors:
        raise errors[0]
    if progress is not None and not plan.to_send:
        await progress(state)
    await _check_and_prune(store, prefix, files, release_dir, state)
    return state


async def _spare_slots(budget: HostBudget, host: str, file: LocalFile) -> list:
    """The host's slots free now, for more parts of a big file at once (a release of one 200 GB
    file would else go up on one connection): none for a file sent in one PUT."""
    parts = -(-file.size // part_size(file.size))
    spare = []
    while len(spare) < min(parts, budget.limit(host)) - 1:
        slot = await budget.try_acquire(host)
        if slot is None:
            break
        spare.append(slot)
    return spare


async def _check_and_prune(store: S3Store, prefix: str, files: list[LocalFile], release_dir: Path,
                           state: Progress) -> None:
    """The last listing: every file there with its size (an ETag met at upload), and nothing more."""
    listed = await list_prefix(store, prefix)
    wanted = {prefix + f.path: f for f in files}
    for key, file in wanted.items():
        there = listed.get(key)
        if there is None or there[0] != file.size:
            raise UploadFailed(f"{key}: {'missing' if there is None else f'{there[0]} bytes'} in the bucket after "
                               f"its upload ({file.size} bytes expected)")
    extra = sorted(set(listed) - set(wanted))
    if extra:
        await delete_keys(store, extra)
        state.removed = len(extra)
