"""`ctl update --follow` into a pipe (a cron job's log file): besides the steps, a plain progress
line (files done/total, bytes, rate) every --progress-interval seconds, and the download's last one."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

PROGRESS = re.compile(r"\[example\] download (\d+)/(\d+) files, (\d+ B|[\d.]+ [KMGT]iB), "
                      r"(\d+ B|[\d.]+ [KMGT]iB)/s(, limit .*)?")


def _update(root: Path, biomaj_cmd: list[str], files: int, **env: str) -> list[re.Match]:
    """`ctl update example --follow` with stderr into a pipe, on an example remote of `files` more
    files; the progress lines it printed."""
    remote = root / "example-remote"
    for i in range(files):
        (remote / f"example-{i:03d}.fasta").write_text(f">seq{i}\n" + "ACGT" * 4096 + "\n")
    environ = {k: v for k, v in os.environ.items() if k not in ("BIOMAJ_CONFIG", "BIOMAJ_DEBUG")} | env
    result = subprocess.run([*biomaj_cmd, "-c", str(root / "config.yml"), "ctl", "update", "example", "--follow"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert "[example] download" in lines and lines[-1] == "[example] done: release 1 updated", result.stderr
    assert not any("\r" in line or "#" in line for line in lines), result.stderr  # plain lines, no live bar
    progress = [PROGRESS.fullmatch(line) for line in lines if line.startswith("[example] download ")]
    assert all(progress), result.stderr
    return progress


def test_follow_into_a_pipe_prints_progress_lines(biomaj_root, biomaj_cmd):
    progress = _update(biomaj_root, biomaj_cmd, 40, BIOMAJ_PROGRESS_INTERVAL="0")  # every progress event
    total = 43  # the 40 files added, example.fasta, example2.fasta.gz and release.txt
    assert len(progress) >= 2
    done = [int(m[1]) for m in progress]
    assert done[0] == 0 and done[-1] == total and done == sorted(done)
    assert all(int(m[2]) == total for m in progress)
    assert progress[-1][3] != "0 B"


def test_progress_lines_come_at_most_every_interval_and_the_last_one_always(biomaj_root, biomaj_cmd):
    progress = _update(biomaj_root, biomaj_cmd, 40, BIOMAJ_PROGRESS_INTERVAL="3600")
    assert [(int(m[1]), int(m[2])) for m in progress] == [(0, 43), (43, 43)]


def test_the_bandwidth_limit_in_force_is_shown_with_the_progress(biomaj_root, biomaj_cmd):
    bank_file = biomaj_root / "conf" / "example.properties"
    bank_file.write_text(bank_file.read_text() + "\ndownload.bandwidth=00:00,20M 23:59,20M\n")
    progress = _update(biomaj_root, biomaj_cmd, 2, BIOMAJ_PROGRESS_INTERVAL="0")
    assert {m[5] for m in progress} == {", limit 20 MiB/s (bank)"}
