"""The per-bank lock file and the maintenance lock, in BioMAJ 3's lock.dir.

``<lock.dir>/<bank>.lock`` exists while a workflow runs on the bank; ``<lock.dir>/biomaj.lock``
puts the whole installation in maintenance. BioMAJ 3 writes ``1`` in the lock file and cannot
tell a running update from a crashed one; ours records the holder (host, pid, job, user, since)
so that a lock left by a dead process is *detected and reported*. It is never taken over
silently: ``biomaj ctl unlock BANK`` (or ``repair``) clears it after the user checked, and the
one exception is the same job resuming after its own process died (a requeued job).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from biomaj.errors import BiomajError

MAINTENANCE = "biomaj"  # lock.dir/biomaj.lock, shown as bank "biomaj" by whatsup (as BioMAJ 3)
SUFFIX = ".lock"


@dataclass(frozen=True)
class LockHolder:
    """Who holds a bank lock. BioMAJ 3 lock files (content ``1``) give an unknown holder."""

    host: str = ""
    pid: int = 0
    job: str = ""
    user: str = ""
    since: float = 0.0

    @classmethod
    def here(cls, job: str, user: str = "") -> LockHolder:
        return cls(socket.gethostname(), os.getpid(), job, user, time.time())

    @property
    def known(self) -> bool:
        return bool(self.host and self.pid)

    def is_dead(self) -> bool:
        """True when the holder ran on this host and its process is gone."""
        if not self.known or self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def describe(self) -> str:
        if not self.known:
            return "an unknown process (a lock file without holder, e.g. written by BioMAJ 3)"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since)) if self.since else "?"
        return f"process {self.pid} on {self.host} (job {self.job or '?'}, user {self.user or '?'}, since {when})"


class BankLocked(BiomajError):
    """The bank is locked by another run (``stale`` when its process is known to be dead)."""

    def __init__(self, bank: str, holder: LockHolder, stale: bool):
        self.bank, self.holder, self.stale = bank, holder, stale
        if stale:
            message = (
                f"bank {bank} is locked by {holder.describe()}, which is no longer running: "
                f"check that nothing works on it, then `biomaj ctl unlock {bank}` and update again"
            )
        else:
            message = f"bank {bank} is locked by {holder.describe()}; wait for it, or cancel it with `biomaj ctl cancel {bank}`"
        super().__init__(message)


class InMaintenance(BiomajError):
    """The maintenance lock is on."""


def lock_path(lock_dir: Path, bank: str) -> Path:
    return Path(lock_dir) / f"{bank}{SUFFIX}"


def read_holder(lock_dir: Path, bank: str) -> LockHolder | None:
    """The holder of the bank lock, or None when the bank is not locked."""
    try:
        text = lock_path(lock_dir, bank).read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        return LockHolder(**{k: data[k] for k in LockHolder.__dataclass_fields__ if k in data})
    except (ValueError, TypeError):
        return LockHolder()


def may_take_over(current: LockHolder, job: str, lease_held: bool) -> bool:
    """True when ``current`` is the lock of job ``job`` itself, left by a run that is dead: its
    process is gone (this host), or ``lease_held``: this run holds the bank's lease, which a live
    holder on any host would have kept."""
    same_job = bool(current.job) and current.job == job
    return same_job and (lease_held or current.is_dead())


def acquire(lock_dir: Path, bank: str, holder: LockHolder, *, resume_job: bool = False,
            lease_held: bool = False) -> None:
    """Create the bank lock for ``holder``, or raise BankLocked / InMaintenance.

    With ``resume_job`` a lock left by a dead process *of the same job* is taken over (the job
    was requeued after its manager died); any other lock is reported, never stolen. A process
    of another host cannot be checked; ``lease_held`` (this job holds the bank's lease in the
    shared state, which a live holder would have kept) proves it dead.
    """
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    if is_maintenance(lock_dir):
        raise InMaintenance("biomaj is in maintenance (`biomaj ctl maintenance off` ends it)")
    path = lock_path(lock_dir, bank)
    payload = json.dumps(asdict(holder)).encode()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            current = read_holder(lock_dir, bank)
            if current is None:
                continue  # released meanwhile: try again
            ours = may_take_over(current, holder.job, lease_held)
            if resume_job and ours:
                path.write_bytes(payload)
                return
            raise BankLocked(bank, current, stale=ours or current.is_dead()) from None
        try:
            os.write(fd, payload)
        finally:
            os.close(fd)
        return
    raise BankLocked(bank, LockHolder(), stale=False)


def release(lock_dir: Path, bank: str, holder: LockHolder | None = None) -> bool:
    """Remove the bank lock (only if ``holder``'s job holds it, when given); True if removed."""
    path = lock_path(lock_dir, bank)
    if holder is not None:
        current = read_holder(lock_dir, bank)
        if current is None or (current.known and (current.job, current.pid) != (holder.job, holder.pid)):
            return False
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def list_locks(lock_dir: Path) -> list[tuple[str, LockHolder]]:
    """Every lock file of lock.dir as (bank, holder); the maintenance lock is bank "biomaj"."""
    lock_dir = Path(lock_dir)
    if not lock_dir.is_dir():
        return []
    found = []
    for path in sorted(lock_dir.glob(f"*{SUFFIX}")):
        holder = read_holder(lock_dir, path.name[: -len(SUFFIX)])
        if holder is not None:
            found.append((path.name[: -len(SUFFIX)], holder))
    return found


def is_maintenance(lock_dir: Path) -> bool:
    return lock_path(lock_dir, MAINTENANCE).exists()


def set_maintenance(lock_dir: Path, on: bool, user: str = "") -> None:
    """Create or remove ``<lock.dir>/biomaj.lock``."""
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_path(lock_dir, MAINTENANCE)
    if on:
        path.write_text(json.dumps(asdict(LockHolder.here("maintenance", user))))
    else:
        path.unlink(missing_ok=True)


def installation_lock_dir(global_properties: Path, root: Path) -> Path:
    """The lock.dir of the installation (global.properties), where maintenance and the lock
    files of every bank live: ``lock.dir``, else ``data.dir``, else ``<root>/lock``."""
    from biomaj.config.properties import GlobalProperties

    props = GlobalProperties.load(global_properties)
    return Path(props.get("lock.dir") or props.get("data.dir") or Path(root) / "lock")
