"""sha256 of a release's files: read off the event loop in large blocks, by a few threads, with
progress and cancel; and the rule that lets a digest computed earlier stand for a file.

A release can be 200 GB: a file hard-linked unchanged from the previous release, or hashed by
the downloader as it streamed in, is not read again while it is still the file that was hashed
(:func:`still_valid`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from biomaj.reports import human_size

from .engine import CANCELLED, Cancelled

BLOCK = 4 * 1024 * 1024  # bytes read at a time: few system calls, progress within a big file
THREADS = 4  # files read at once: a network file system answers several reads better than one
PROGRESS_EVERY = 2.0  # seconds between two progress reports
#: Two dates this close are the same file date (a date read back from ISO 8601 keeps microseconds).
SAME_DATE = 1e-3


@dataclass(frozen=True)
class Known:
    """A sha256 computed earlier for a file of ``size`` bytes dated ``mtime``; ``source``: the
    file it was computed on, when it may be the very same file (a hard link)."""

    sha256: str
    size: int
    mtime: float | None
    source: Path | None = None


def still_valid(known: Known, st: os.stat_result) -> bool:
    """True when ``known`` is the digest of the file whose stat is ``st``: the same size, and the
    same date to the millisecond or the same inode as the file it was computed on."""
    if st.st_size != known.size:
        return False
    if known.mtime is not None and abs(st.st_mtime - known.mtime) < SAME_DATE:
        return True
    if known.source is None:
        return False
    try:
        return os.path.samestat(os.stat(known.source), st)
    except OSError:
        return False


@dataclass
class HashProgress:
    """Where a hashing run stands: files and bytes done of the totals."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


ProgressSink = Callable[[HashProgress], Awaitable[None]]


class _Run:
    """The threads' shared state: the files to read, each thread's own counters (summed when
    read, so that no lock is taken per block), the results, the stop flag."""

    def __init__(self, root: Path, files: Iterable[tuple[str, int]], threads: int):
        self.root = root
        self._queue: Iterator[tuple[str, int]] = iter(files)
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self.counters = [[0, 0] for _ in range(threads)]  # [files, bytes] per thread
        self.results: dict[str, str | OSError] = {}

    def next(self) -> tuple[str, int] | None:
        with self._lock:
            return next(self._queue, None)

    def worker(self, index: int) -> None:
        counter = self.counters[index]
        buffer = bytearray(BLOCK)
        view = memoryview(buffer)
        while not self.stop.is_set():
            item = self.next()
            if item is None:
                return
            relative, _size = item
            try:
                self.results[relative] = self._digest(self.root / relative, view, counter)
            except OSError as exc:
                self.results[relative] = exc
            counter[0] += 1

    def _digest(self, path: Path, view: memoryview, counter: list[int]) -> str:
        digest = hashlib.sha256()
        # O_NOFOLLOW: a symlink planted under a listed name is not followed out of the release
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with open(fd, "rb", buffering=0) as stream:
            while n := stream.readinto(view):
                digest.update(view[:n])  # hashlib releases the GIL on big blocks
                counter[1] += n
                if self.stop.is_set():
                    break
        return digest.hexdigest()

    def progress(self, files_total: int, bytes_total: int) -> HashProgress:
        return HashProgress(sum(c[0] for c in self.counters), files_total,
                            sum(c[1] for c in self.counters), bytes_total)


async def sha256_files(root: Path, files: list[tuple[str, int]], *, progress: ProgressSink | None = None,
                       cancelled: asyncio.Event | None = None, every: float = PROGRESS_EVERY,
                       threads: int = THREADS) -> dict[str, str | OSError]:
    """The sha256 (hex) of each ``(relative path, size)`` of ``files`` under ``root``, or the
    OSError that reading it raised (a file removed meanwhile: FileNotFoundError). ``progress``
    is told every ``every`` seconds and once at the end; Cancelled once ``cancelled`` is set."""
    bytes_total = sum(size for _, size in files)
    threads = max(1, min(threads, len(files)))
    run = _Run(root, files, threads)
    loop = asyncio.get_running_loop()
    # threads of its own: hours of reading must not hold the loop's default executor, which the
    # downloaders' writes and every asyncio.to_thread of the process share
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="biomaj-sha256")
    workers = [loop.run_in_executor(pool, run.worker, i) for i in range(threads)]
    try:
        pending = set(workers)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=every)
            if cancelled is not None and cancelled.is_set():
                raise Cancelled(CANCELLED)
            if progress is not None and pending:
                await progress(run.progress(len(files), bytes_total))
    finally:
        run.stop.set()  # the threads stop at their next block (a cancelled or failed run)
        pool.shutdown(wait=False)
    for worker in workers:
        worker.result()  # a bug in a thread is not silenced
    if progress is not None:
        await progress(run.progress(len(files), bytes_total))
    return run.results


def progress_fields(where: HashProgress) -> dict[str, int]:
    """A hashing run's progress as job event fields (``ctl --follow``, the web UI)."""
    return {"files_checked": where.files_done, "files_to_check": where.files_total,
            "bytes_checked": where.bytes_done, "bytes_to_check": where.bytes_total}


def progress_message(what: str, where: HashProgress) -> str:
    """``verify 2024-01: 3/10 files read, 1.2 GB of 5.0 GB``."""
    return (f"{what}: {where.files_done}/{where.files_total} files read, "
            f"{human_size(where.bytes_done)} of {human_size(where.bytes_total)}")
