#!/usr/bin/env python3
"""Bank update benchmark: biomaj's whole update workflow against `rsync --link-dest`.

Scenario, on a bank of N files (default 1,000 x 4 KiB, `protocol=local`, `release.control=true`
so that every run lists and compares the whole remote tree):

  1. first update: every file copied into a new release;
  2. nothing changed: biomaj must find nothing new and download nothing;
  3. one file changed: biomaj must fetch that file only and hard-link the rest into the new release.

The peer does the same with the classic snapshot mirror: `rsync -a --link-dest=<previous> src/ new/`
(a new directory per release, unchanged files hard-linked; `rsync -a` into the same directory for
"nothing changed"). Both run in the same process tree, interleaved, `--reps` times; the report gives
medians and ratios. biomaj is run as a user runs it: `biomaj ctl update BANK` (a new process each
time, so Python start-up is included; the job's own duration is given too).

    make install && python3 bench/update.py [--files 1000] [--reps 3]

Only the standard library; everything is written under /tmp/biomaj-bench/update.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("BENCH_ROOT", "/tmp/biomaj-bench")) / "update"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def make_tree(tree: Path, files: int, size: int) -> None:
    tree.mkdir(parents=True)
    block = os.urandom(size)
    for i in range(files):
        sub = tree / f"d{i % 20:02d}"
        sub.mkdir(exist_ok=True)
        (sub / f"seq{i:06d}.fa").write_bytes(block[: size - 8] + i.to_bytes(8, "big"))


class Biomaj:
    def __init__(self, python: Path, tree: Path):
        self.biomaj = python.with_name("biomaj")
        self.root = ROOT / "biomaj-root"
        shutil.rmtree(self.root, ignore_errors=True)
        run([str(self.biomaj), "init", str(self.root)])
        (self.root / "conf" / "bench.properties").write_text(f"""[GENERAL]
db.fullname=update benchmark
db.formats=fasta
dir.version=bench
offline.dir.name=offline/bench_tmp
protocol=local
server=
remote.dir={tree}/
remote.files=**/*
local.files=**/*
release.control=true
keep.old.version=100
""")

    def update(self) -> tuple[float, dict]:
        started = time.perf_counter()
        out = run([str(self.biomaj), "-c", str(self.root / "config.yml"), "ctl", "--json", "update", "bench"])
        wall = time.perf_counter() - started
        return wall, json.loads(out.stdout)

    def reset(self) -> None:
        run([str(self.biomaj), "-c", str(self.root / "config.yml"), "ctl", "remove-all", "bench", "--force"])


class Rsync:
    def __init__(self, tree: Path):
        self.tree = tree
        self.dest = ROOT / "rsync"
        self.releases: list[Path] = []

    def reset(self) -> None:
        shutil.rmtree(self.dest, ignore_errors=True)
        self.dest.mkdir(parents=True)
        self.releases = []

    def new_release(self) -> float:
        target = self.dest / f"r{len(self.releases)}"
        cmd = ["rsync", "-a", f"{self.tree}/", f"{target}/"]
        if self.releases:
            cmd.insert(2, f"--link-dest={self.releases[-1]}")
        started = time.perf_counter()
        run(cmd)
        self.releases.append(target)
        return time.perf_counter() - started

    def same_release(self) -> float:
        started = time.perf_counter()
        run(["rsync", "-a", f"{self.tree}/", f"{self.releases[-1]}/"])
        return time.perf_counter() - started


def job_seconds(job: dict) -> float:
    return (job.get("finished") or 0) - (job.get("started") or 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--python", type=Path, default=PROJECT / ".venv" / "bin" / "python")
    args = parser.parse_args()
    if not shutil.which("rsync"):
        print("rsync is needed (apt-get install rsync)", file=sys.stderr)
        return 1
    shutil.rmtree(ROOT, ignore_errors=True)
    tree = ROOT / "remote"
    make_tree(tree, args.files, args.size)
    biomaj, rsync = Biomaj(args.python, tree), Rsync(tree)
    changed = tree / "d07" / "seq000007.fa"
    figures: dict[str, list[float]] = {k: [] for k in (
        "biomaj first", "biomaj first (job)", "biomaj same", "biomaj same (job)", "biomaj one", "biomaj one (job)",
        "rsync first", "rsync same", "rsync one")}
    checks: list[str] = []
    for rep in range(args.reps):
        changed.write_bytes(os.urandom(args.size))
        os.utime(changed, (time.time() - 3600 * (rep + 2),) * 2)
        if rep:
            biomaj.reset()
        rsync.reset()
        wall, job = biomaj.update()
        figures["biomaj first"].append(wall)
        figures["biomaj first (job)"].append(job_seconds(job))
        figures["rsync first"].append(rsync.new_release())
        wall, job = biomaj.update()
        assert job["state"] == "done" and not job["result"]["updated"], job
        figures["biomaj same"].append(wall)
        figures["biomaj same (job)"].append(job_seconds(job))
        figures["rsync same"].append(rsync.same_release())
        changed.write_bytes(os.urandom(args.size))
        wall, job = biomaj.update()
        assert job["state"] == "done" and job["result"]["updated"], job
        figures["biomaj one"].append(wall)
        figures["biomaj one (job)"].append(job_seconds(job))
        figures["rsync one"].append(rsync.new_release())
        log = Path(job["result"]["log_file"]).read_text()
        line = next(x for x in log.splitlines() if "files:" in x and "to download" in x)
        checks.append(line.split("Workflow:wf_download:")[1])
    med = {k: statistics.median(v) for k, v in figures.items()}
    per_k = 1000 / args.files
    print(f"\nBank update benchmark: {args.files} files x {args.size} B, {args.reps} repetitions (medians)\n")
    print(f"| step | biomaj ctl update (wall) | biomaj job only | rsync --link-dest | biomaj/rsync (wall) |")
    print("|---|---|---|---|---|")
    for step, label in (("first", "first release"), ("same", "nothing changed"), ("one", "one file changed")):
        b, j, r = med[f"biomaj {step}"], med[f"biomaj {step} (job)"], med[f"rsync {step}"]
        print(f"| {label} | {b:.3f} s | {j:.3f} s | {r:.3f} s | {b / r:.1f} |")
    print(f"\nnothing changed, per 1,000 files: biomaj job {med['biomaj same (job)'] * per_k:.3f} s "
          f"(target: well under 1 s), whole command {med['biomaj same'] * per_k:.3f} s")
    print("one file changed, what the download step did:", "; ".join(sorted(set(checks))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
