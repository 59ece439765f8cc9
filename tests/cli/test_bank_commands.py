"""`biomaj ctl` bank commands, end to end: the installed console script on a fresh `biomaj init`
root, checked against the files it writes and what the other commands then report.

The example bank reads its release from ``example-remote/release.txt`` ("Release 1"), keeps one
old release and publishes each new one. The cancel tests serve it over HTTP with the project's
test server, one file stalling after its first block, so that a download is surely running.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.servers import http_server
from tests.servers.faults import Faults

_SCRIPT = Path(sys.executable).with_name("biomaj")
BIOMAJ = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "biomaj"]
ENV = {k: v for k, v in os.environ.items() if k not in ("BIOMAJ_CONFIG", "BIOMAJ_DEBUG")}


# --- helpers -------------------------------------------------------------------------------------


def ctl_args(root: Path, *args: str) -> list[str]:
    return [*BIOMAJ, "-c", str(root / "config.yml"), "ctl", *args]


def run(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`biomaj -c ROOT/config.yml ctl ARGS...`; with ``check`` it must succeed."""
    result = subprocess.run(ctl_args(root, *args), check=False, capture_output=True, text=True, env=ENV, timeout=60)
    if check:
        assert result.returncode == 0, f"ctl {' '.join(args)}: {result.stdout}{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def run_json(root: Path, *args: str):
    return json.loads(run(root, *args, "--json").stdout)


def error_line(result: subprocess.CompletedProcess, code: int) -> str:
    """The single `error: ...` line of a failed command (a failed job adds the path of its log)."""
    assert result.returncode == code, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: "), result.stderr
    assert all(line.startswith("  log: ") for line in lines[1:]), result.stderr
    return lines[0]


def set_release(root: Path, number: int) -> None:
    (root / "example-remote" / "release.txt").write_text(f"Release {number}\n")


def bank_dir(root: Path) -> Path:
    return root / "data" / "example"


def productions(root: Path) -> list[str]:
    return [row["Release"] for row in run_json(root, "status", "example")["production"]]


def status_row(root: Path) -> dict | None:
    return next((row for row in run_json(root, "status") if row["Name"] == "example"), None)


def table_headers(text: str) -> list[list[str]]:
    """The header row of each psql/grid table printed (the line after each top border)."""
    lines = text.splitlines()
    return [[cell.strip() for cell in lines[i + 1].strip("|").split("|")]
            for i, line in enumerate(lines[:-1]) if line.startswith("+-") and lines[i + 1].startswith("| ")
            and (i == 0 or not lines[i - 1].startswith("| "))]


# --- update --------------------------------------------------------------------------------------


def test_update_downloads_and_publishes_the_first_release(biomaj_root):
    result = run(biomaj_root, "update", "example")
    release_dir = bank_dir(biomaj_root) / "example_1"
    assert result.stdout.strip() == f"example: release 1 updated in {release_dir}"

    flat = release_dir / "flat"
    remote = biomaj_root / "example-remote"
    assert sorted(p.name for p in flat.iterdir()) == ["example.fasta", "example2.fasta", "release.txt"]
    assert (flat / "example.fasta").read_bytes() == (remote / "example.fasta").read_bytes()
    assert (flat / "example2.fasta").read_bytes() == gzip.decompress((remote / "example2.fasta.gz").read_bytes())
    assert os.readlink(bank_dir(biomaj_root) / "current") == "example_1"
    assert (bank_dir(biomaj_root) / "RELEASE.txt").read_text() == "Bank: example\nRelease: 1\nRemote release:1\n"
    assert not (biomaj_root / "lock" / "example.lock").exists()


def test_update_json_is_the_job_record_and_a_second_update_has_nothing_to_do(biomaj_root):
    job = run_json(biomaj_root, "update", "example")
    assert (job["kind"], job["bank"], job["state"]) == ("update", "example", "done")
    assert job["result"]["updated"] is True and job["result"]["release"] == "1"
    assert job["result"]["release_dir"] == str(bank_dir(biomaj_root) / "example_1")
    assert Path(job["result"]["log_file"]).is_file()

    again = run_json(biomaj_root, "update", "example")
    assert again["state"] == "done" and again["id"] != job["id"]
    assert again["result"]["updated"] is False and again["result"]["release"] == "1"
    assert run(biomaj_root, "update", "example").stdout.strip() == "example: no need to update, release 1 is current"


def test_new_remote_release_hard_links_unchanged_files_and_keeps_one_old_release(biomaj_root):
    run(biomaj_root, "update", "example")
    set_release(biomaj_root, 2)
    result = run(biomaj_root, "update", "example")
    assert result.stdout.strip() == f"example: release 2 updated in {bank_dir(biomaj_root) / 'example_2'}"

    old, new = (bank_dir(biomaj_root) / name / "flat" / "example.fasta" for name in ("example_1", "example_2"))
    assert old.stat().st_ino == new.stat().st_ino and new.stat().st_nlink == 2
    assert (bank_dir(biomaj_root) / "example_2" / "flat" / "release.txt").read_text() == "Release 2\n"
    assert os.readlink(bank_dir(biomaj_root) / "current") == "example_2"
    assert productions(biomaj_root) == ["1", "2"]  # keep.old.version=1: the previous one stays

    set_release(biomaj_root, 3)
    run(biomaj_root, "update", "example")
    assert productions(biomaj_root) == ["2", "3"]
    assert not (bank_dir(biomaj_root) / "example_1").exists()
    assert (bank_dir(biomaj_root) / "example_2" / "flat" / "example.fasta").is_file()


def test_follow_prints_one_line_per_step_on_stderr(biomaj_root):
    result = run(biomaj_root, "update", "example", "--follow")
    lines = result.stderr.splitlines()
    steps = [line for line in lines if re.fullmatch(r"\[example\] [a-z]+", line)]
    assert steps == [f"[example] {step}" for step in
                     ("init", "check", "depends", "preprocess", "release", "download", "postprocess", "publish", "over")]
    assert lines[-1] == "[example] done: release 1 updated"
    assert result.stdout.strip().startswith("example: release 1 updated in ")


def test_stop_after_download_leaves_a_pending_release_that_the_next_update_finishes(biomaj_root):
    result = run(biomaj_root, "update", "example", "--stop-after", "download")
    assert result.stdout.strip() == "example: stopped as asked, release 1; the next update resumes it"
    assert not (bank_dir(biomaj_root) / "current").exists()

    text = run(biomaj_root, "status", "example").stdout
    assert [h[0] for h in table_headers(text)] == ["Name", "Session", "Pending release", "Release"]
    assert "| 1 (unfinished) | none" in text  # its change report, made by the download task
    detail = run_json(biomaj_root, "status", "example")
    assert [p["Pending release"] for p in detail["pending"]] == ["1"] and detail["production"] == []
    assert run_json(biomaj_root, "status-ko") == []  # stopped as asked is not a failure

    resumed = run(biomaj_root, "update", "example")
    assert resumed.stdout.strip() == f"example: release 1 updated in {bank_dir(biomaj_root) / 'example_1'}"
    assert os.readlink(bank_dir(biomaj_root) / "current") == "example_1"
    detail = run_json(biomaj_root, "status", "example")
    assert detail["pending"] == [] and [p["Release"] for p in detail["production"]] == ["1"]
    assert [h[0] for h in table_headers(run(biomaj_root, "status", "example").stdout)] == ["Name", "Session", "Release"]


def test_remove_pending_forgets_a_stopped_update(biomaj_root):
    run(biomaj_root, "update", "example", "--stop-after", "download")
    result = run(biomaj_root, "remove-pending", "example")
    assert result.stdout.strip() == "example: 1 pending release(s) removed"
    assert run_json(biomaj_root, "status", "example")["pending"] == []
    assert not (bank_dir(biomaj_root) / "example_1").exists()
    assert run(biomaj_root, "update", "example").stdout.startswith("example: release 1 updated in ")


def test_release_check_reads_the_remote_release_without_downloading(biomaj_root):
    assert run(biomaj_root, "release-check", "example").stdout.strip() == "example: remote release 1 (new)"
    assert not bank_dir(biomaj_root).exists()
    run(biomaj_root, "update", "example")
    assert run(biomaj_root, "release-check", "example").stdout.strip() == \
        "example: remote release 1 (already in production)"
    set_release(biomaj_root, 2)
    assert run_json(biomaj_root, "release-check", "example")["result"]["details"]["new"] is True


def test_release_check_says_a_file_changed_under_the_same_release(biomaj_root):
    """With remote.checksums, a file fixed upstream under the same release is news, in words and
    in --json; the update then makes release 1__1."""
    import hashlib

    source = biomaj_root / "example-remote"

    def manifest() -> None:
        (source / "MD5SUMS").write_text("".join(f"{hashlib.md5((source / n).read_bytes()).hexdigest()}  {n}\n"
                                                for n in ("example.fasta", "example2.fasta.gz")))

    manifest()
    bank_file = biomaj_root / "conf" / "example.properties"
    bank_file.write_text(bank_file.read_text() + "remote.checksums=MD5SUMS\n")
    run(biomaj_root, "update", "example")
    assert run(biomaj_root, "release-check", "example").stdout.strip() == \
        "example: remote release 1 (already in production)"
    (source / "example.fasta").write_text(">fixed\nACGT\n")
    manifest()
    assert run(biomaj_root, "release-check", "example").stdout.strip() == (
        "example: remote release 1 (changed under the same release: 1 file(s) with another checksum: example.fasta)")
    details = run_json(biomaj_root, "release-check", "example")["result"]["details"]
    assert details["new"] is True and details["changed_under_same_release"] == {"count": 1, "files": ["example.fasta"]}
    assert run(biomaj_root, "update", "example").stdout.startswith("example: release 1__1 updated in ")
    assert (bank_dir(biomaj_root) / "example_1__1" / "flat" / "example.fasta").read_text() == ">fixed\nACGT\n"


# --- read commands -------------------------------------------------------------------------------


def test_status_show_search_history_stats_after_three_updates(biomaj_root):
    run(biomaj_root, "update", "example")
    run(biomaj_root, "update", "example")
    set_release(biomaj_root, 2)
    run(biomaj_root, "update", "example")

    text = run(biomaj_root, "status").stdout
    assert table_headers(text) == [["Name", "Type(s)", "Release", "Visibility", "Last update"]]
    row = [cell.strip() for cell in text.splitlines()[3].strip("|").split("|")]
    assert row[:4] == ["example", "nucleic", "2", "public"] and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row[4])
    assert status_row(biomaj_root)["Release"] == "2"

    detail_text = run(biomaj_root, "status", "example").stdout
    assert [h[0] for h in table_headers(detail_text)] == ["Name", "Session", "Release"]  # no pending table; changes
    detail = run_json(biomaj_root, "status", "example")
    assert detail["bank"][0]["Published release"] == "2"
    assert [(p["Release"], p["Directory"], p["Freeze"]) for p in detail["production"]] == [
        ("1", str(bank_dir(biomaj_root) / "example_1"), "no"), ("2", str(bank_dir(biomaj_root) / "example_2"), "no")]

    show = run(biomaj_root, "show", "example").stdout
    assert "+=====" in show  # a grid table
    assert [r["Release"] for r in run_json(biomaj_root, "show", "example")] == ["1", "2 (current)"]
    assert [r["Release"] for r in run_json(biomaj_root, "show", "example", "--release", "1")] == ["1"]
    unknown = run(biomaj_root, "show", "example", "--release", "9", check=False)
    assert "has no release 9" in error_line(unknown, 2)

    found = run(biomaj_root, "search", "--formats", "fasta")
    assert found.stdout.startswith("Search by formats=['fasta'], types=[]\n")
    assert [(r["Release"], r["Published"]) for r in run_json(biomaj_root, "search", "--formats", "fasta")] == [
        ("2", "yes"), ("1", "no")]
    assert run_json(biomaj_root, "search", "--formats", "blast") == []
    assert len(run_json(biomaj_root, "search", "--types", "nucleic")) == 2

    history = run_json(biomaj_root, "history")
    assert [(h["Action"], h["Updated"], h["Error"]) for h in history] == [
        ("update", True, False), ("update", False, False), ("update", True, False)]
    assert len(run_json(biomaj_root, "history", "--bank", "example", "--limit", "1")) == 1
    assert "| Bank " in run(biomaj_root, "history").stdout

    sizes = {(r["bank"], r["release"]): r["size"] for r in run_json(biomaj_root, "stats")}
    assert sizes[("example", "1")] > 0 and sizes[("example", "2")] > 0
    assert sizes[("example", "All")] == sizes[("example", "1")] + sizes[("example", "2")]
    assert table_headers(run(biomaj_root, "stats").stdout) == [["Bank", "Release", "Size"]]


def test_status_of_a_bank_never_updated_is_an_error(biomaj_root):
    assert run_json(biomaj_root, "status") == []
    result = run(biomaj_root, "status", "example", check=False)
    assert "never updated" in error_line(result, 2)


def test_maintenance_refuses_updates_and_shows_in_whatsup(biomaj_root):
    assert run_json(biomaj_root, "whatsup") == []
    assert run(biomaj_root, "maintenance", "status").stdout.strip() == "Maintenance: Off"
    assert run(biomaj_root, "maintenance", "on").stdout.strip() == "Maintenance: On"
    assert (biomaj_root / "lock" / "biomaj.lock").is_file()
    assert run_json(biomaj_root, "whatsup") == [{"Type": "system", "Bank": "biomaj", "Status": "running"}]
    assert "| system | biomaj " in run(biomaj_root, "whatsup").stdout

    refused = run(biomaj_root, "update", "example", check=False)
    assert "maintenance" in error_line(refused, 1)
    assert not (bank_dir(biomaj_root) / "example_1").exists() and not (bank_dir(biomaj_root) / "current").exists()
    assert run_json(biomaj_root, "maintenance", "status") == {"maintenance": True}

    assert run(biomaj_root, "maintenance", "off").stdout.strip() == "Maintenance: Off"
    assert run_json(biomaj_root, "whatsup") == []
    assert run(biomaj_root, "update", "example").stdout.startswith("example: release 1 updated in ")


# --- publish, freeze, remove ---------------------------------------------------------------------


def test_publish_unpublish_freeze_and_remove(biomaj_root):
    run(biomaj_root, "update", "example")
    set_release(biomaj_root, 2)
    run(biomaj_root, "update", "example")
    current, release_txt = bank_dir(biomaj_root) / "current", bank_dir(biomaj_root) / "RELEASE.txt"

    assert run(biomaj_root, "unpublish", "example").stdout.strip() == "example: unpublished"
    assert not current.exists() and not current.is_symlink() and not release_txt.exists()
    assert status_row(biomaj_root)["Release"] == "N/A"

    assert run(biomaj_root, "publish", "example", "--release", "1").stdout.strip() == "example: release 1 published"
    assert os.readlink(current) == "example_1"
    assert "Release: 1\n" in release_txt.read_text()
    refused = run(biomaj_root, "remove", "example", "--release", "1", check=False)
    assert "published release" in error_line(refused, 1)
    assert (bank_dir(biomaj_root) / "example_1").is_dir()
    missing = run(biomaj_root, "publish", "example", "--release", "9", check=False)
    assert "no production release named 9" in error_line(missing, 2)

    run(biomaj_root, "publish", "example")  # without --release: the latest production
    assert os.readlink(current) == "example_2"
    assert run(biomaj_root, "freeze", "example", "1").stdout.strip() == "example: release 1 frozen"
    assert [p["Freeze"] for p in run_json(biomaj_root, "status", "example")["production"]] == ["yes", "no"]
    frozen = run(biomaj_root, "remove", "example", "--release", "1", check=False)
    assert "frozen" in error_line(frozen, 1)
    assert (bank_dir(biomaj_root) / "example_1").is_dir()

    assert run(biomaj_root, "unfreeze", "example", "1").stdout.strip() == "example: release 1 unfrozen"
    assert run(biomaj_root, "remove", "example", "--release", "1").stdout.strip() == "example: release 1 removed"
    assert not (bank_dir(biomaj_root) / "example_1").exists()
    assert productions(biomaj_root) == ["2"]
    assert run_json(biomaj_root, "history", "--limit", "1")[0]["Action"] == "remove"


def test_remove_all_deletes_everything_but_not_a_frozen_release_without_force(biomaj_root):
    run(biomaj_root, "update", "example")
    run(biomaj_root, "freeze", "example", "1")
    refused = run(biomaj_root, "remove-all", "example", check=False)
    assert "frozen releases (1)" in error_line(refused, 1) and "--force" in refused.stderr
    assert (bank_dir(biomaj_root) / "example_1").is_dir() and status_row(biomaj_root) is not None

    result = run(biomaj_root, "remove-all", "example", "--force")
    assert result.stdout.strip() == "example: removed (1 releases)"
    assert not bank_dir(biomaj_root).exists()
    assert not (biomaj_root / "log" / "example").exists()
    assert status_row(biomaj_root) is None
    assert "never updated" in error_line(run(biomaj_root, "status", "example", check=False), 2)
    assert run(biomaj_root, "update", "example").stdout.startswith("example: release 1 updated in ")


def test_remove_all_of_an_unfrozen_bank(biomaj_root):
    run(biomaj_root, "update", "example")
    run(biomaj_root, "remove-all", "example")
    assert not bank_dir(biomaj_root).exists() and run_json(biomaj_root, "status") == []


# --- bad input -----------------------------------------------------------------------------------


def test_unknown_bank(biomaj_root):
    result = run(biomaj_root, "update", "nosuch", check=False)
    assert "nosuch" in error_line(result, 2)
    assert "nosuch" in error_line(run(biomaj_root, "remove", "nosuch", "--release", "1", check=False), 2)


def test_unknown_task_name_is_a_usage_error(biomaj_root):
    result = run(biomaj_root, "update", "example", "--from-task", "nosuch", check=False)
    assert result.returncode == 2
    assert "Invalid value for '--from-task'" in result.stderr and "'postprocess'" in result.stderr
    assert not bank_dir(biomaj_root).exists()
    assert run_json(biomaj_root, "history") == []


def test_bank_file_with_errors_is_refused_before_any_work(biomaj_root):
    (biomaj_root / "conf" / "bad.properties").write_text(
        "[GENERAL]\ndb.fullname=bad\ndb.name=bad\nlocal.files=^x$\noffline.dir.name=offline/bad_tmp\n")
    result = run(biomaj_root, "update", "bad", check=False)
    line = error_line(result, 2)
    assert "wrong configuration" in line and "dir.version is not set" in line and "protocol is not set" in line
    assert list((biomaj_root / "data").iterdir()) == []
    assert run_json(biomaj_root, "history") == []


def test_from_task_with_an_unknown_release(biomaj_root):
    run(biomaj_root, "update", "example")
    result = run(biomaj_root, "update", "example", "--from-task", "postprocess", "--release", "nosuch", check=False)
    assert "release nosuch does not exist" in error_line(result, 2)  # UnknownRelease: a bad argument


def test_cancel_and_unlock_with_nothing_to_do(biomaj_root):
    run(biomaj_root, "update", "example")
    assert "no job queued or running on bank example" in error_line(run(biomaj_root, "cancel", "example", check=False), 1)
    assert run(biomaj_root, "unlock", "example").stdout.strip() == "example: not locked"


def _write_lock(root: Path, pid: int) -> Path:
    lock = root / "lock" / "example.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "job": "x", "user": "u", "since": 0}))
    return lock


def test_stale_lock_is_reported_and_cleared_by_unlock(biomaj_root):
    finished = subprocess.Popen(["true"])
    finished.wait()
    lock = _write_lock(biomaj_root, finished.pid)

    result = run(biomaj_root, "update", "example", check=False)
    line = error_line(result, 1)
    assert f"process {finished.pid}" in line and "no longer running" in line and "`biomaj ctl unlock example`" in line
    assert lock.exists() and not (bank_dir(biomaj_root) / "current").exists()
    assert run_json(biomaj_root, "whatsup") == [{"Type": "system", "Bank": "example", "Status": "running"}]

    unlocked = run(biomaj_root, "unlock", "example")
    assert unlocked.stdout.startswith(f"example: lock of process {finished.pid} on {socket.gethostname()} ")
    assert not lock.exists()
    assert run(biomaj_root, "update", "example").stdout.startswith("example: release 1 updated in ")


def test_lock_of_a_live_process_is_not_taken_nor_cleared_without_force(biomaj_root):
    lock = _write_lock(biomaj_root, os.getpid())
    line = error_line(run(biomaj_root, "update", "example", check=False), 1)
    assert f"locked by process {os.getpid()}" in line and "no longer running" not in line

    refused = run(biomaj_root, "unlock", "example", check=False)
    assert f"locked by process {os.getpid()}" in error_line(refused, 1)
    assert lock.exists()
    assert run_json(biomaj_root, "unlock", "example", "--force")["details"]["was_locked"] is True
    assert not lock.exists()
    assert run(biomaj_root, "update", "example").stdout.startswith("example: release 1 updated in ")


# --- cancelling a running update -----------------------------------------------------------------

BIG = "example-big.fasta"


async def _serve_example_over_http(root: Path):
    """Serve example-remote over HTTP, with a 1 MiB file that stalls after its first 256 KiB."""
    remote = root / "example-remote"
    (remote / BIG).write_bytes(b">big\n" + b"ACGT" * (1 << 18))
    faults = Faults(stall={BIG: 60})
    server = await http_server.start(remote, faults, protocol="http")
    conf = root / "conf" / "example.properties"
    text = conf.read_text().replace("protocol=local", "protocol=http")
    text = re.sub(r"(?m)^server=.*$", f"server=127.0.0.1:{server.config.port}", text)
    conf.write_text(re.sub(r"(?m)^remote\.dir=.*$", "remote.dir=/", text))
    return server, faults


async def arun(root: Path, *args: str) -> tuple[int, str, str]:
    """`run` without blocking the event loop (the HTTP server lives in it)."""
    proc = await asyncio.create_subprocess_exec(*ctl_args(root, *args), env=ENV, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def _start_stalled_update(root: Path, faults: Faults) -> asyncio.subprocess.Process:
    update = await asyncio.create_subprocess_exec(*ctl_args(root, "update", "example"), env=ENV,
                                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    await asyncio.wait_for(faults.started(BIG).wait(), 60)
    code, out, _ = await arun(root, "whatsup", "--json")
    assert code == 0 and json.loads(out) == [{"Type": "system", "Bank": "example", "Status": "running"}]
    return update


async def _assert_cancelled_then_resumed(root: Path, server, faults: Faults, update) -> str:
    """The update ends cancelled (its stderr is returned); the next one resumes the big file."""
    out, err = (text.decode() for text in await asyncio.wait_for(update.communicate(), 30))  # << the 60 s stall
    assert update.returncode == 1, out + err
    assert "error: update of example cancelled" in err
    assert not (root / "lock" / "example.lock").exists()
    assert not (bank_dir(root) / "current").exists()
    code, out, _ = await arun(root, "whatsup", "--json")
    assert json.loads(out) == []

    assert faults.stall == {}  # the stall was for the first transfer only
    code, again, again_err = await arun(root, "update", "example")
    assert code == 0 and again.startswith("example: release 1 updated in "), again + again_err
    big = bank_dir(root) / "example_1" / "flat" / BIG
    assert big.read_bytes() == (root / "example-remote" / BIG).read_bytes()
    # (its HEADs, one per update: the index prints "1.0M", the manager asks for the exact size)
    ranges = [seen["headers"].get("Range") for seen in server.seen
              if seen["path"] == f"/{BIG}" and seen["method"] == "GET"]
    assert len(ranges) == 2 and ranges[0] is None
    assert re.fullmatch(r"bytes=[1-9]\d*-", ranges[1])  # resumed where the cancelled transfer stopped
    return err


async def test_cancel_from_another_process_stops_a_running_update(biomaj_root):
    server, faults = await _serve_example_over_http(biomaj_root)
    try:
        update = await _start_stalled_update(biomaj_root, faults)
        code, out, err = await arun(biomaj_root, "cancel", "example")
        assert code == 0 and re.fullmatch(r"example: update job \w+ asked to stop\n", out), out + err
        await _assert_cancelled_then_resumed(biomaj_root, server, faults, update)
    finally:
        await server.close()


async def test_ctrl_c_cancels_the_update_and_the_next_one_resumes(biomaj_root):
    server, faults = await _serve_example_over_http(biomaj_root)
    try:
        update = await _start_stalled_update(biomaj_root, faults)
        update.send_signal(signal.SIGINT)
        err = await _assert_cancelled_then_resumed(biomaj_root, server, faults, update)
        assert "cancelling update of example (Ctrl-C again to quit at once)" in err
    finally:
        await server.close()
