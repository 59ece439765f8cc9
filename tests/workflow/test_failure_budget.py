"""The failure budget of the download step (``download.max_failures``) against real local servers:
a broken mirror stops the download early, a few failures within the budget are tried once more
at the end and succeed, and a file that stays missing fails the update without publishing
anything, by any path (the update, ``ctl publish`` after a repair, ``--from-task``).

The servers are tests/servers' real HTTP and FTP servers; their ``not_found`` fault answers 404
(HTTP) or 550 (FTP) to the first N transfer requests of a path.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from biomaj.bus.messages import JobEvent
from biomaj.errors import BiomajError
from biomaj.workflow import runner
from biomaj.workflow.update import UpdateOptions
from tests.servers import ftp_server, http_server
from tests.servers.faults import Faults
from tests.workflow.harness import Site, run_cli, write_bank

BANK = "local"


def day(year: int, month: int, mday: int) -> float:
    return time.mktime((year, month, mday, 12, 0, 0, 0, 0, -1))


def write_files(root: Path, count: int, when: float) -> list[str]:
    """``count`` small files (exact sizes in any listing), dated ``when``; their names."""
    root.mkdir(parents=True, exist_ok=True)
    names = [f"f{i:03d}.txt" for i in range(count)]
    for name in names:
        (root / name).write_bytes(f"{name}\n".encode() * 20)
        os.utime(root / name, (when, when))
    return names


def bank_over(site: Site, server, **overrides: str) -> None:
    """Bank ``local`` over ``server`` (HTTP or FTP), mirroring the ``f*.txt`` files."""
    config = server.config
    values = {"protocol": config.protocol, "server": f"127.0.0.1:{config.port}", "remote__dir": "/",
              "remote__files": r"^f\d+\.txt$", "local__files": r"^f\d+\.txt$", "auto_publish": "1"}
    if config.user:
        values["server__credentials"] = f"{config.user}:{config.password}"
    values.update(overrides)
    site.add_bank(BANK, **values)


async def update(site: Site, events: list[JobEvent] | None = None, **options) -> runner.Outcome:
    """An update through the harness's real actors, its job events kept in ``events``."""
    run = site.context()

    async def keep(event: JobEvent) -> None:
        if events is not None:
            events.append(event)

    run.emit = keep
    return await runner.update_bank(run, BANK, UpdateOptions(**options))


def log_text(outcome: runner.Outcome) -> str:
    return Path(outcome.log_file).read_text()


@pytest.mark.parametrize("protocol", ["ftp", "http"])
async def test_a_broken_mirror_stops_the_download_early(site: Site, tmp_path: Path, protocol: str):
    names = write_files(tmp_path / "mirror", 300, day(2024, 3, 1))
    broken = names[10:]  # listed, but every transfer answers "not found"
    faults = Faults(not_found={name: 1000 for name in broken})
    start = ftp_server.start if protocol == "ftp" else http_server.start
    server = await start(tmp_path / "mirror", faults, protocol=protocol)
    events: list[JobEvent] = []
    try:
        bank_over(site, server, download__max_failures="5")
        outcome = await update(site, events)
    finally:
        await server.close()

    assert not outcome.ok and outcome.failed_task == "download"
    found = re.match(r"download stopped: (\d+) files failed, more than download\.max_failures=5 allows "
                     r"\(5 of the 300 files to fetch\); (\d+) files were not tried\. First errors: (.*)", outcome.error)
    assert found, outcome.error
    failed, not_tried = int(found[1]), int(found[2])
    assert failed > 5 and not_tried > 0
    assert any(name in found[3] for name in broken)
    # the broken mirror was not walked through: far fewer transfers than files
    requested = sum(faults.transfers.values())
    assert requested < len(names) // 5, f"{requested} transfers for {len(names)} files"
    assert all(faults.transfers[name] <= 1 for name in broken)  # no retry at the end past the budget
    doc = await site.doc(BANK)
    assert doc["production"] == [] and doc["current"] is None
    session = await site.session(BANK)
    assert session["missing"]["count"] == failed + not_tried
    text = log_text(outcome)
    assert "download.max_failures=5: at most 5 of the 300 files to fetch may fail" in text
    assert "failed so far, 5 allowed by download.max_failures=5" in text
    assert "stopping the download" in text
    progress = [e.progress for e in events if "files_failed" in e.progress]
    assert progress[-1]["failures_allowed"] == 5 and progress[-1]["files_failed"] == failed


async def test_failures_within_the_budget_are_tried_again_at_the_end(site: Site, tmp_path: Path):
    names = write_files(tmp_path / "mirror", 40, day(2024, 3, 1))
    flaky = ["f003.txt", "f017.txt", "f029.txt"]
    faults = Faults(not_found={name: 1 for name in flaky})  # missing at first, there on the next request
    server = await http_server.start(tmp_path / "mirror", faults, protocol="http")
    try:
        bank_over(site, server, download__max_failures="10%%")  # 4 of 40
        outcome = await update(site)
    finally:
        await server.close()

    assert outcome.ok and outcome.updated, outcome.error
    assert {name: faults.transfers[name] for name in flaky} == {name: 2 for name in flaky}
    assert all(faults.transfers[name] == 1 for name in names if name not in flaky)
    # the second try of each comes after the first try of every file
    gets = [s["path"].lstrip("/") for s in server.seen if s["method"] == "GET" and not s["path"].endswith("/")]
    retried = [i for i, name in enumerate(gets) if name in flaky and gets.index(name) != i]
    first_tries_end = max(gets.index(name) for name in names)
    assert len(retried) == 3 and min(retried) > first_tries_end
    flat = outcome.release_dir / "flat"
    assert sorted(p.name for p in flat.iterdir()) == names
    assert (await site.session(BANK))["missing"] is None
    text = log_text(outcome)
    assert "3 files failed: trying them once more, after all the others" in text
    assert "download.max_failures=10%: at most 4 of the 40 files to fetch may fail" in text
    doc = await site.doc(BANK)
    assert doc["current"] == outcome.session_id


async def test_a_file_still_missing_at_the_end_is_never_published(site: Site, tmp_path: Path):
    mirror = tmp_path / "mirror"
    names = write_files(mirror, 12, day(2024, 3, 1))
    faults = Faults()
    server = await http_server.start(mirror, faults, protocol="http")
    try:
        bank_over(site, server, download__max_failures="3")
        first = await update(site)
        assert first.ok and first.updated and first.release == "2024-3-1", first.error

        # a new release upstream, one of its files missing from the mirror for good
        write_files(mirror, 12, day(2024, 4, 2))
        faults.transfers.clear()
        faults.not_found["f007.txt"] = 1000
        failed = await update(site)

        assert not failed.ok and failed.failed_task == "download"
        assert failed.error.startswith("1 of 12 files failed to download (each tried once more at the end): f007.txt")
        assert faults.transfers["f007.txt"] == 2  # the first try and the one at the end
        doc = await site.doc(BANK)
        assert [e["release"] for e in doc["production"]] == ["2024-3-1"]
        assert doc["current"] == first.session_id
        assert os.readlink(site.bank_dir(BANK) / "current") == first.release_dir.name
        assert "Release: 2024-3-1" in (site.bank_dir(BANK) / "RELEASE.txt").read_text()
        session = await site.session(BANK)
        assert session["missing"] == {"count": 1, "files": ["f007.txt"]}
        assert session["status"]["publish"] is False

        # no later task can be run past the failed download
        with pytest.raises(BiomajError, match="previous task download was not successful"):
            await update(site, from_task="postprocess")
        # a repair records the release as finished, but publishing it is refused
        repaired = await runner.repair(site.context(), BANK)
        assert repaired.release == "2024-4-2"
        with pytest.raises(BiomajError, match=r"release 2024-4-2 is not published: 1 of its files failed to "
                                              r"download \(f007.txt\).*--from-task download"):
            await runner.publish_bank(site.context(), BANK, "2024-4-2")
        assert (await site.doc(BANK))["current"] == first.session_id
        assert os.readlink(site.bank_dir(BANK) / "current") == first.release_dir.name

        # the mirror is whole again: the update the refusal names fetches the file, and publishes
        faults.not_found.clear()
        fixed = await update(site, release="2024-4-2", from_task="download")
        assert fixed.ok and fixed.release == "2024-4-2", fixed.error
        assert (await site.session(BANK, fixed.session_id))["missing"] is None
        assert (await site.doc(BANK))["current"] == fixed.session_id
        assert sorted(p.name for p in (fixed.release_dir / "flat").iterdir()) == names
    finally:
        await server.close()


async def test_ctl_update_on_a_broken_mirror_fails_the_job_without_cancelling_it(tmp_path, biomaj_root, biomaj_cmd):
    """Through `biomaj ctl update` (a real manager, its cancels, its downloaders): the stopped
    download fails the job; the stop of the round is not taken for a user's cancel."""
    names = write_files(tmp_path / "mirror", 200, day(2024, 3, 1))
    faults = Faults(not_found={name: 1000 for name in names[5:]})
    server = await ftp_server.start(tmp_path / "mirror", faults, protocol="ftp")
    try:
        config = server.config
        write_bank(biomaj_root, "broken", protocol="ftp", server=f"127.0.0.1:{config.port}",
                   server__credentials=f"{config.user}:{config.password}", remote__dir="/",
                   remote__files=r"^f\d+\.txt$", local__files=r"^f\d+\.txt$", download__max_failures="2%%",
                   auto_publish="1")
        code, out, err = await run_cli([*biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", "--json",
                                        "update", "broken"])
    finally:
        await server.close()

    assert code == 1, err
    job = json.loads(out)
    assert job["state"] == "failed", job
    assert re.match(r"download: download stopped: \d+ files failed, more than download\.max_failures=2% allows "
                    r"\(4 of the 200 files to fetch\)", job["error"]), job["error"]
    assert sum(faults.transfers.values()) < len(names) // 5
    assert not (biomaj_root / "data" / "broken" / "current").exists()

