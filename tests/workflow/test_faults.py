"""Updates under real faults: a remote that is down, cut connections, wrong checksums, a process
killed mid-download, a full disk, cancellation, stale locks, maintenance, hostile names and
release strings.

Every fault is real: real HTTP servers (tests/servers) that drop, stall or list hostile names,
a real ``biomaj ctl update`` process killed with SIGKILL, a real full file system (a 1 MiB
tmpfs) or a real file size limit (RLIMIT_FSIZE), real archives and lock files. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict
from pathlib import Path, PurePosixPath

import pytest

from biomaj.errors import BiomajError
from biomaj.storage import open_store
from biomaj.workflow import locks, runner
from biomaj.workflow.bank import Bank
from biomaj.workflow.update import UpdateOptions
from tests.servers import http_server
from tests.servers.faults import Faults
from tests.workflow.harness import Site, run_cli, write_bank

BANK = "local"
PART = ".biomaj-part"


# Helpers ------------------------------------------------------------------------------------------


def day(year: int, month: int, mday: int) -> float:
    """Noon (local time) of a day: a file date whose release name does not depend on the zone."""
    return time.mktime((year, month, mday, 12, 0, 0, 0, 0, -1))


def set_dates(folder: Path, when: float) -> None:
    for path in folder.iterdir():
        os.utime(path, (when, when))


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every file under `root` (bytes) and symlink ("-> target"), by relative path."""
    tree: dict[str, bytes | str] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                tree[relative] = "-> " + os.readlink(path)
            elif path.is_file():
                tree[relative] = path.read_bytes()
    return tree


def names_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


async def wait_until(condition, what: str, timeout: float = 20.0) -> None:
    """Poll `condition` (a plain function) until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def http_bank(site: Site, server, **overrides: str) -> None:
    """Bank ``local`` served over HTTP by `server` (upstream global.properties' http.parse)."""
    values = {"protocol": "http", "server": f"127.0.0.1:{server.config.port}", "remote__dir": "/",
              "remote__files": "^test.*", "local__files": "^test.*"}
    values.update(overrides)
    site.add_bank(BANK, **values)


def file_requests(server) -> list[dict]:
    """The GETs of files (not of index pages) the server received."""
    return [s for s in server.seen if s["method"] == "GET" and not s["path"].endswith("/")]


def current_target(bank_dir: Path) -> str | None:
    link = bank_dir / "current"
    return os.readlink(link) if link.is_symlink() else None


async def stored_bank(root: Path, bank: str) -> dict:
    """The bank document of a `biomaj init` root, read from its store."""
    store = open_store("", root)
    async with store:
        return await store.get_bank(bank) or {}


# 1. Remote down -----------------------------------------------------------------------------------


async def test_remote_down_fails_clearly_and_the_next_update_resumes(site: Site):
    server = await http_server.start(site.remote, Faults(), protocol="http")
    port = server.config.port
    http_bank(site, server)
    await server.close()  # the remote is down: nothing listens on its port any more

    failed = await site.update(BANK)

    assert not failed.ok and not failed.updated
    assert failed.failed_task in ("download", "release")
    assert f"127.0.0.1:{port}" in failed.error
    assert "connect" in failed.error.lower()
    doc = await site.doc(BANK)
    assert doc["production"] == [] and doc["current"] is None
    assert not (site.bank_dir(BANK) / "current").exists()
    session = await site.session(BANK)
    assert session["status"]["download"] is False and not session["status"].get("over")
    assert session["error"]["task"] == "download"

    server = await http_server.start(site.remote, Faults(), protocol="http")
    try:
        site.set(BANK, server=f"127.0.0.1:{server.config.port}")
        done = await site.update(BANK, publish=True)
    finally:
        await server.close()

    assert done.ok and done.updated, done.error
    assert done.session_id == failed.session_id  # the failed session was resumed, not replaced
    doc = await site.doc(BANK)
    assert [e["release"] for e in doc["production"]] == [done.release]
    assert doc["current"] == done.session_id
    assert current_target(site.bank_dir(BANK)) == done.release_dir.name
    flat = site.bank_dir(BANK) / "current" / "flat"
    assert (flat / "test2.fasta").read_bytes() == (site.remote / "test2.fasta").read_bytes()
    assert (flat / "test_100.txt").read_bytes() == (site.remote / "test_100.txt").read_bytes()


# 2. Transient faults ------------------------------------------------------------------------------


async def test_connection_dropped_mid_file_is_retried_and_resumed(site: Site):
    big = os.urandom(700_000)
    (site.remote / "test_big.bin").write_bytes(big)
    faults = Faults(drop_after={"test_big.bin": 300_000}, transient_errors={"test2.fasta": 1})
    server = await http_server.start(site.remote, faults, protocol="http")
    try:
        http_bank(site, server, wait_policy="wait_fixed(0.2)")
        outcome = await site.update(BANK)
    finally:
        await server.close()

    assert outcome.ok and outcome.updated, outcome.error
    assert faults.transfers["test_big.bin"] == 2 and faults.transfers["test2.fasta"] == 2
    first, second = [s["headers"].get("Range") for s in file_requests(server) if s["path"] == "/test_big.bin"]
    assert first is None
    # the retry asks only for what did not arrive before the cut
    assert second is not None and second.startswith("bytes=") and second.endswith("-")
    assert 0 < int(second[len("bytes="):-1]) <= 300_000
    flat = outcome.release_dir / "flat"
    assert (flat / "test_big.bin").read_bytes() == big
    assert (flat / "test2.fasta").read_bytes() == (site.remote / "test2.fasta").read_bytes()


# 3. Checksum mismatch -----------------------------------------------------------------------------


async def test_checksum_mismatch_is_never_published(site: Site):
    data = site.remote / "data.txt"
    sidecar = site.remote / "data.txt.md5"
    data.write_bytes(b"release one\n" * 50)
    sidecar.write_text(f"{hashlib.md5(data.read_bytes()).hexdigest()}  data.txt\n")
    set_dates(site.remote, day(2024, 1, 10))
    site.add_bank(BANK, remote__files=r"^data\.txt.*", local__files=r"^data\.txt.*")
    good = await site.update(BANK, publish=True)
    assert good.ok and good.updated and good.release == "2024-1-10", good.error
    published = snapshot(good.release_dir)
    assert published["flat/data.txt"] == data.read_bytes()

    data.write_bytes(b"release two, corrupted upstream\n" * 50)
    actual = hashlib.md5(data.read_bytes()).hexdigest()
    wrong = hashlib.md5(b"what upstream meant to publish").hexdigest()
    sidecar.write_text(f"{wrong}  data.txt\n")
    set_dates(site.remote, day(2024, 2, 20))
    bad = await site.update(BANK, publish=True)

    assert not bad.ok and not bad.updated
    assert bad.failed_task == "download:checksum"
    assert "data.txt" in bad.error and actual in bad.error and wrong in bad.error
    doc = await site.doc(BANK)
    assert [e["release"] for e in doc["production"]] == ["2024-1-10"]
    assert doc["current"] == good.session_id
    assert current_target(site.bank_dir(BANK)) == good.release_dir.name
    assert not (site.bank_dir(BANK) / f"{BANK}_2024-2-20").exists()
    assert snapshot(good.release_dir) == published  # the published release is untouched
    assert (site.bank_dir(BANK) / "RELEASE.txt").read_text().splitlines()[1] == "Release: 2024-1-10"


# 4. A process killed mid-download -----------------------------------------------------------------


async def test_update_killed_mid_download_is_reported_then_resumed(tmp_path, biomaj_root, biomaj_cmd):
    """A real `biomaj ctl update` process is killed (SIGKILL) while the server stalls on the big
    file; what it left (lock, job record, offline files) is reported, cleared, and resumed."""
    tree = tmp_path / "remote"
    tree.mkdir()
    # under 973 bytes, so that the Apache index gives their exact size (larger ones read "2.7K": size
    # unknown, and an offline copy whose size cannot be compared is downloaded again, as in BioMAJ 3)
    small = {f"f{i}.txt": f"small file {i}\n".encode() * 50 for i in range(4)}
    for name, content in small.items():
        (tree / name).write_bytes(content)
    big = os.urandom(2 * 1024 * 1024)
    (tree / "fbig.dat").write_bytes(big)
    faults = Faults(stall={"fbig.dat": 120.0})
    server = await http_server.start(tree, faults, protocol="http")
    try:
        write_bank(biomaj_root, "faulty", protocol="http", server=f"127.0.0.1:{server.config.port}",
                   remote__dir="/", remote__files="^f.*", local__files="^f.*")
        config = str(biomaj_root / "config.yml")
        update = [*biomaj_cmd, "-c", config, "ctl", "update", "faulty"]
        offline = biomaj_root / "data" / "offline" / "faulty_tmp"
        lock_file = biomaj_root / "lock" / "faulty.lock"

        process = await asyncio.create_subprocess_exec(*update, stdout=asyncio.subprocess.DEVNULL,
                                                       stderr=asyncio.subprocess.DEVNULL)
        try:
            await wait_until(lambda: all((offline / n).is_file() for n in small)
                             and faults.transfers["fbig.dat"] == 1 and faults.active == 1,
                             "the small files done and the big one in flight", timeout=60)
        finally:
            os.kill(process.pid, signal.SIGKILL)
            await process.wait()
        assert process.returncode == -signal.SIGKILL
        part = offline / ("fbig.dat" + PART)
        kept = part.stat().st_size if part.exists() else 0  # what reached the disk before the kill
        assert not (offline / "fbig.dat").exists()
        holder = locks.read_holder(biomaj_root / "lock", "faulty")
        assert holder is not None and holder.pid == process.pid and holder.is_dead()

        code, _, err = await run_cli(update)
        assert code != 0
        assert "no longer running" in err and "biomaj ctl unlock faulty" in err
        assert lock_file.exists()  # reported, never taken over silently
        store = open_store("", biomaj_root)
        async with store:
            killed = await store.get_job(holder.job)
        assert killed["state"] == "failed" and "died" in killed["error"]

        code, out, err = await run_cli([*biomaj_cmd, "-c", config, "ctl", "unlock", "faulty"])
        assert code == 0, err
        assert f"process {process.pid}" in out and not lock_file.exists()

        assert not faults.stall  # the stall was spent on the killed transfer
        seen_before = len(server.seen)
        code, out, err = await run_cli(update)
        assert code == 0, err
        assert "faulty: release" in out and "updated" in out
    finally:
        await server.close()

    again = [s for s in server.seen[seen_before:] if s["method"] == "GET" and not s["path"].endswith("/")]
    assert [s["path"] for s in again] == ["/fbig.dat"]  # the files finished before the kill are kept
    assert again[0]["headers"].get("Range") == (f"bytes={kept}-" if kept else None)
    doc = await stored_bank(biomaj_root, "faulty")
    assert len(doc["production"]) == 1 and doc["current"] == doc["production"][0]["session"]
    flat = biomaj_root / "data" / "faulty" / "current" / "flat"
    assert (flat / "fbig.dat").read_bytes() == big
    assert {n: (flat / n).read_bytes() for n in small} == small
    assert not list((biomaj_root / "data").rglob("*" + PART))


# 5. Full disk -------------------------------------------------------------------------------------


async def _mount_tmpfs(folder: Path, size: str) -> bool:
    """Mount a tmpfs of `size` on `folder`; False where mounting is not allowed."""
    try:
        code, _, _ = await run_cli(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], timeout=30)
    except OSError:  # no mount command
        return False
    return code == 0


#: Runs a command with a file size limit, writes beyond it failing with EFBIG (not killed by SIGXFSZ).
_LIMITED = (
    "import os, resource, signal, sys\n"
    "limit = int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


async def _file_size_limit_scenario(tmp_path: Path, root: Path, command: list[str]) -> None:
    """The full-disk stand-in: `biomaj ctl update` runs in a process whose files may not grow
    beyond 1 MiB (RLIMIT_FSIZE); a 3 MiB remote file cannot be written (EFBIG), as on a full disk."""
    remote = tmp_path / "fsize-remote"
    remote.mkdir()
    (remote / "seq1.fasta").write_bytes(b">seq1\nACGT\n" * 20)
    set_dates(remote, day(2024, 1, 10))
    write_bank(root, "fsz", protocol="local", remote__dir=f"{remote}/", remote__files=r"^seq.*",
               local__files=r"^seq.*")
    executable = command[0] if len(command) == 1 else sys.executable
    limited = [sys.executable, "-c", _LIMITED, str(1024 * 1024), executable, *command[1:]]
    update = [*limited, "-c", str(root / "config.yml"), "ctl", "update", "fsz"]

    code, _, err = await run_cli(update)
    assert code == 0, err  # auto_publish=1 in `biomaj init`'s global.properties
    bank_dir = root / "data" / "fsz"
    published = current_target(bank_dir)
    assert published == "fsz_2024-1-10"
    before = snapshot(bank_dir / published)

    (remote / "seq2.fasta").write_bytes(os.urandom(3 * 1024 * 1024))
    set_dates(remote, day(2024, 2, 20))
    code, _, err = await run_cli(update)

    assert code != 0
    assert "File too large" in err and "seq2.fasta" in err
    assert current_target(bank_dir) == published
    assert snapshot(bank_dir / published) == before
    doc = await stored_bank(root, "fsz")
    assert [e["release"] for e in doc["production"]] == ["2024-1-10"]


async def test_full_disk_keeps_the_published_release(site: Site, tmp_path, biomaj_root, biomaj_cmd):
    """data.dir on a real 1 MiB tmpfs (this test runs as root with mount allowed); where mount
    is refused it runs the RLIMIT_FSIZE stand-in of the next test instead."""
    if not await _mount_tmpfs(site.data, "1m"):
        await _file_size_limit_scenario(tmp_path, biomaj_root, biomaj_cmd)
        return
    try:
        set_dates(site.remote, day(2024, 1, 10))
        site.add_bank(BANK)
        good = await site.update(BANK, publish=True)
        assert good.ok and good.updated, good.error
        before = snapshot(good.release_dir)

        (site.remote / "test_big.txt").write_bytes(os.urandom(3 * 1024 * 1024))
        set_dates(site.remote, day(2024, 2, 20))
        full = await asyncio.wait_for(site.update(BANK, publish=True), 60)

        assert not full.ok and full.failed_task == "download"
        assert "No space left on device" in full.error
        assert current_target(site.bank_dir(BANK)) == good.release_dir.name
        assert snapshot(good.release_dir) == before
        doc = await site.doc(BANK)
        assert [e["release"] for e in doc["production"]] == [good.release]
        assert doc["current"] == good.session_id
    finally:
        code, _, err = await run_cli(["umount", str(site.data)], timeout=30)
        assert code == 0, err


async def test_file_size_limit_keeps_the_published_release(tmp_path, biomaj_root, biomaj_cmd):
    """A stand-in for a full disk that needs no privilege: a file size limit (RLIMIT_FSIZE) on a
    real `biomaj ctl update` process, so that writing the new file fails with EFBIG."""
    await _file_size_limit_scenario(tmp_path, biomaj_root, biomaj_cmd)


# 6. Cancellation ----------------------------------------------------------------------------------


async def test_cancel_stops_the_transfer_and_the_next_update_resumes(site: Site):
    big = os.urandom(700_000)
    (site.remote / "test_big.bin").write_bytes(big)
    faults = Faults(stall={"test_big.bin": 120.0})
    server = await http_server.start(site.remote, faults, protocol="http")
    try:
        http_bank(site, server)
        run = site.context(job_id="cancelled-job")
        task = asyncio.create_task(runner.update_bank(run, BANK, UpdateOptions()))
        others = [f for f in site.remote.iterdir() if f.name != "test_big.bin"]
        expected_bytes = sum(f.stat().st_size for f in others) + http_server.BLOCK
        offline = site.data / site.source_value(BANK, "offline.dir.name")
        # every other file done, and the first block of the big one received (the server then stalls)
        await wait_until(lambda: all((offline / f.name).is_file() for f in others) and faults.active == 1
                         and site.downloader.bytes_received == expected_bytes, "the big file in flight")
        assert locks.read_holder(site.root / "lock", BANK).job == "cancelled-job"
        run.cancelled.set()
        cancelled = await asyncio.wait_for(task, 20)

        assert cancelled.cancelled and not cancelled.ok and not cancelled.updated
        assert locks.read_holder(site.root / "lock", BANK) is None
        await wait_until(lambda: faults.active == 0, "the server to see the transfer end", timeout=10)
        part = offline / ("test_big.bin" + PART)
        kept = part.stat().st_size
        assert kept == http_server.BLOCK and part.read_bytes() == big[:kept]  # what arrived is kept
        session = await site.session(BANK, cancelled.session_id)
        assert not session["status"].get("over") and session["status"]["download"] is not True
        doc = await site.doc(BANK)
        assert doc["production"] == [] and cancelled.release in [p["release"] for p in doc["pending"]]

        seen_before = len(server.seen)
        resumed = await site.update(BANK)
    finally:
        await server.close()

    assert resumed.ok and resumed.updated, resumed.error
    assert resumed.session_id == cancelled.session_id
    again = [s for s in server.seen[seen_before:] if s["method"] == "GET" and not s["path"].endswith("/")]
    assert [(s["path"], s["headers"].get("Range")) for s in again] == [("/test_big.bin", f"bytes={kept}-")]
    assert (resumed.release_dir / "flat" / "test_big.bin").read_bytes() == big


# 7. Stale locks -----------------------------------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


def write_lock(site: Site, content: str) -> Path:
    path = locks.lock_path(site.root / "lock", BANK)
    path.write_text(content)
    return path


async def test_stale_live_and_unknown_locks(site: Site):
    site.add_bank(BANK)
    ctx = site.context()

    # the job of a process that died mid-update: still "running" in the store, its lock left behind
    job_id = await site.store.add_job({"kind": "update", "bank": BANK}, dedup_key=f"update:{BANK}")
    await site.store.claim_job("killed-node", job_id)
    dead = locks.LockHolder(socket.gethostname(), dead_pid(), job_id, "someone", time.time())
    path = write_lock(site, json.dumps(asdict(dead)))
    with pytest.raises(locks.BankLocked) as stale:  # refused before any session is recorded
        await site.update(BANK)
    assert "no longer running" in str(stale.value) and f"biomaj ctl unlock {BANK}" in str(stale.value)
    assert (await site.doc(BANK))["sessions"] == []
    assert json.loads(path.read_text())["pid"] == dead.pid  # reported, not taken over
    cleared = await runner.unlock(ctx, BANK)
    assert cleared.details["was_locked"] and not path.exists()
    job = await site.store.get_job(job_id)
    assert job["state"] == "failed" and "died" in job["error"]  # so a new update job can be queued
    queued = await site.store.add_job({"kind": "update", "bank": BANK}, dedup_key=f"update:{BANK}")
    await site.store.claim_job("test", queued)
    await site.store.finish_job(queued, "cancelled")

    alive = locks.LockHolder(socket.gethostname(), os.getpid(), "running-job", "someone", time.time())
    write_lock(site, json.dumps(asdict(alive)))
    with pytest.raises(locks.BankLocked) as busy:
        await site.update(BANK)
    assert "locked by" in str(busy.value) and f"process {os.getpid()}" in str(busy.value)
    assert "no longer running" not in str(busy.value)
    with pytest.raises(locks.BankLocked, match="locked by"):
        await runner.unlock(ctx, BANK)
    assert path.exists()
    assert (await runner.unlock(ctx, BANK, force=True)).details["was_locked"] and not path.exists()

    write_lock(site, "1")  # BioMAJ 3's lock file
    with pytest.raises(locks.BankLocked, match="unknown process"):
        await site.update(BANK)
    with pytest.raises(BiomajError, match="unknown"):
        await runner.unlock(ctx, BANK)
    assert path.read_text() == "1"
    await runner.unlock(ctx, BANK, force=True)
    assert not path.exists()

    done = await site.update(BANK)
    assert done.ok and done.updated, done.error
    assert not path.exists()


# 8. Maintenance -----------------------------------------------------------------------------------


async def test_maintenance_refuses_updates_until_it_is_off(site: Site):
    site.add_bank(BANK)
    lock_dir = site.root / "lock"
    locks.set_maintenance(lock_dir, True, "admin")
    with pytest.raises(locks.InMaintenance, match="maintenance"):
        await site.update(BANK)
    assert locks.read_holder(lock_dir, BANK) is None
    doc = await site.doc(BANK)
    assert doc["production"] == [] and doc["sessions"] == []  # a refused attempt leaves no session

    locks.set_maintenance(lock_dir, False)
    done = await site.update(BANK)
    assert done.ok and done.updated, done.error


# 9. Unsafe names ----------------------------------------------------------------------------------


async def test_hostile_names_in_an_index_are_never_fetched_nor_written(site: Site, tmp_path):
    evil = ["../evil", "..%2Fevil2", "sub/../../evil3"]
    server = await http_server.start(site.remote, Faults(evil_names=evil), protocol="http")
    try:
        http_bank(site, server, remote__files=".*", local__files=".*")
        outcome = await site.update(BANK)
    finally:
        await server.close()

    index = next(s for s in server.seen if s["path"] == "/")
    assert index["method"] == "GET"  # the hostile listing was read ...
    assert outcome.ok, outcome.error  # ... and its unsafe entries skipped
    session = await site.session(BANK)
    assert session["download_files"] == []  # as BioMAJ 3: the list is in the session's cache file
    listed = Bank.load(site.global_properties, BANK).read_file_list(session["id"])
    assert sorted(f["name"] for f in listed) == ["test.fasta.gz", "test2.fasta", "test_100.txt"]
    assert not [s for s in server.seen if "evil" in s["path"]]
    assert not [p for p in tmp_path.rglob("*evil*")]
    assert sorted((outcome.release_dir / "flat").iterdir()) == sorted(
        outcome.release_dir / "flat" / n for n in ("test.fasta", "test2.fasta", "test_100.txt"))


async def test_archive_member_escaping_the_offline_dir_fails_uncompress(site: Site, tmp_path):
    with tarfile.open(site.remote / "test_archive.tar.gz", "w:gz") as archive:
        for name in ("inside.txt", "../escape.txt"):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = 6, day(2024, 1, 10)
            archive.addfile(info, io.BytesIO(b"hello\n"))
    site.add_bank(BANK)
    outcome = await site.update(BANK, publish=True)

    assert not outcome.ok and outcome.failed_task == "download:uncompress"
    assert "test_archive.tar.gz" in outcome.error and "'../escape.txt'" in outcome.error
    assert not list(tmp_path.rglob("escape.txt"))
    doc = await site.doc(BANK)
    assert doc["production"] == [] and doc["current"] is None
    assert current_target(site.bank_dir(BANK)) is None
    assert not outcome.release_dir.exists()


# 10. Release strings ------------------------------------------------------------------------------


@pytest.mark.parametrize("release", ["../../etc", "1 2", "/etc"])
async def test_unusable_release_string_is_refused(site: Site, tmp_path, release: str):
    (site.remote / "release.txt").write_text(f"Release: {release}\n")
    site.add_bank(BANK, release__file=r"^release\.txt$", release__regexp=r"Release: (.+)")
    outcome = await site.update(BANK)

    assert not outcome.ok and outcome.failed_task == "release"
    assert "not usable as a directory name" in outcome.error and repr(release) in outcome.error
    # only the empty bank and offline directories exist: no release directory, nothing outside
    folders = (site.source_value(BANK, "offline.dir.name"), site.source_value(BANK, "dir.version"))
    assert names_under(site.data) == {p.as_posix() for f in folders for p in (PurePosixPath(f), *PurePosixPath(f).parents)} - {"."}
    assert not [p for p in tmp_path.rglob("etc") if p.is_dir()]
    assert (await site.doc(BANK))["production"] == []
