#!/usr/bin/env python3
"""WAN benchmark: `biomaj ctl update BANK` against aria2c, lftp and curl over a slow, distant link.

Real servers configured as public mirrors are (bench/wan_servers.py): Apache 2.4 with mod_ratelimit
capping EACH connection (default 4 MiB/s) and vsftpd with a per-connection `anon_max_rate` (the
same cap), reached through bench/delay_relay.py, a user-space TCP relay adding 30 ms each way
(this kernel has no netem) that also counts the connections open at once.

    (a) 2 x 256 MiB (data set wan-big) through the per-connection cap, connection budget 8:
        curl (one stream, the files one after the other), aria2c -x8 -s8 -j1, lftp pget -n 8,
        biomaj (limits per host 8, download.split.max=8)
    (b) 2,000 x 64 KiB in 20 directories (data set small), budget 4:
        lftp mirror --parallel=4, aria2c -j4 -x1 (an input file of URLs), biomaj (per host 4)
    (c) biomaj alone, (a) and (b) distributed: a manager and 1 or 3 download nodes over RabbitMQ
        and Redis, per-host limit 4 on every node (the budget the whole cluster must keep); the
        figure is the relay's maximum of connections open at once

    make install && python3 bench/wan.py [--reps 3] [--only a,b,c] [--protos http,ftp]
        [--tools curl,aria2,lftp,biomaj] [--cap 4096] [--delay-ms 30] [--keep-servers]

biomaj's row is the whole user command, `biomaj -c ROOT/config.yml ctl --json update bench`, in a
new root each run (bench/download.py's `--mode e2e` machinery: the same runner, checks and AMQP
nodes). Runs are interleaved (repetition 1 of every row, then 2, ...); medians of --reps. The
report goes to $BENCH_ROOT/results/wan-latest.md (raw data: wan-latest.tsv, and a dated folder
with the logs) and is printed. Standard library only; nothing is written in the repository
(apart from Python's git-ignored bytecode cache of biomaj/, compiled as bench/download.py does).
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # importing download.py must not leave bench/__pycache__ behind

import argparse  # noqa: E402
import csv  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Optional  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
import download as dl  # noqa: E402  runner, output checks, biomaj roots, AMQP nodes, report helpers
import wan_servers as ws  # noqa: E402

ROOT, DATA, RESULTS = dl.ROOT, dl.DATA, dl.RESULTS
WAN = ROOT / "wan"
HTTP = f"{ws.RELAY_ADDR}:{ws.HTTP_PORT}"  # what every client talks to: the relay
FTP = f"{ws.RELAY_ADDR}:{ws.FTP_PORT}"
URL = {"http": f"http://{HTTP}", "ftp": f"ftp://{FTP}"}
HOSTPORT = {"http": HTTP, "ftp": FTP}
MiB = dl.MiB
BIG, SMALL = "wan-big", "small"
BIG_FILE_MIB = 256
CASES = ("a", "b", "c")
TOOLS = ("curl", "aria2", "lftp", "biomaj")
PROTOS = ("http", "ftp")
BUDGET = {"a": 8, "b": 4, "c": 4}  # connections to the server, for every tool of the case
CLUSTER_NODES = (1, 3)
SPLIT_MIN_SIZE = 64 * MiB  # bytes: the 256 MiB files are split
SPLIT_MAX = 8

# Targets (issue 20): printed beside the figures, never asserted.
TARGET_VS_ARIA2 = 0.95  # (a) biomaj MiB/s >= 0.95 x aria2c -x8 -s8
TARGET_VS_CURL = 5.0  # (a) ... and >= 5 x one curl stream
TARGET_VS_LFTP_MIRROR = 1.25  # (b) biomaj files/s >= 1.25 x lftp mirror --parallel=4
TARGET_SPLIT_RSS_MB = 100.0  # peak RSS of biomaj for a split 256 MiB download (10^6 bytes)

ARIA2 = ["aria2c", "--no-conf", "--console-log-level=error", "--summary-interval=0", "--show-console-readout=false",
         "--download-result=hide", "--file-allocation=falloc", "--allow-overwrite=true", "--auto-file-renaming=false"]

EXTRA_FIELDS = ["case", "nodes", "budget", "max_http", "max_ftp", "max_ftp_data", "connections", "relay_cpu", "tail"]


def log(msg: str) -> None:
    print(f"[wan {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# Data --------------------------------------------------------------------------------------------


def build_wan_big() -> None:
    """wan-big: 2 x 256 MiB of seeded random bytes (the same on every machine), kept when complete."""
    want = {f"file{i}.bin": BIG_FILE_MIB * MiB for i in (1, 2)}
    if dl.source_tree(BIG) == want:
        return
    t = time.time()
    root = DATA / BIG
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = random.Random("biomaj-bench-" + BIG)
    for name, size in want.items():
        with open(root / name, "wb") as fh:
            for _ in range(size // (4 * MiB)):
                fh.write(rng.randbytes(4 * MiB))
        (root / name).chmod(0o644)
    root.chmod(0o755)
    log(f"data set {BIG} built in {time.time() - t:.1f} s")


def warm(ds: str) -> None:
    """The source tree in the page cache (untimed): the servers read memory, as for every tool."""
    for d, _, files in os.walk(DATA / ds):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                while fh.read(8 * MiB):
                    pass


# biomaj roots ------------------------------------------------------------------------------------


def per_host_key(project_py: str) -> str:
    """The config.yml key of the per-host connection limit the installed biomaj accepts:
    limits.per_host (issue 20) or, before that rename, limits.downloads_per_host."""
    probe = ("from biomaj.config.service import LimitsSettings as L\n"
             "f = L.model_fields\n"
             "k = 'per_host' if 'per_host' in f else 'downloads_per_host'\n"
             "print(k, type(f[k].default).__name__)")
    p = subprocess.run([project_py, "-c", probe], capture_output=True, text=True, cwd=REPO)
    if p.returncode:
        raise SystemExit(f"cannot read biomaj's limits settings: {p.stderr.strip()[-300:]}")
    key, kind = p.stdout.split()
    if kind != "int":
        raise SystemExit(f"limits.{key} is a {kind} now, not an int: teach bench/wan.py (Biomaj.tune) its form")
    return key


@dataclass
class Biomaj:
    command: str  # .venv/bin/biomaj
    limit_key: str  # per_host | downloads_per_host

    def tune(self, root: Path, budget: int) -> None:
        """The case's settings on a root made by download.ctl_setup: the per-host limit in
        config.yml, the split settings (ignored until biomaj knows them) in the bank file."""
        cfg = root / "config.yml"
        text = cfg.read_text()
        line = f"  {self.limit_key}: {budget}"
        text, n = re.subn(rf"^(limits:\n(?:  .*\n)*?)  {self.limit_key}: .*$", lambda m: m.group(1) + line, text, flags=re.M)
        if n == 0:
            text, n = re.subn(r"^limits:\n", lambda m: m.group(0) + line + "\n", text, flags=re.M)
        if n == 0:
            text += f"\nlimits:\n{line}\n"
        cfg.write_text(text)
        bank = root / "conf" / f"{dl.CTL_BANK}.properties"
        props = re.sub(r"^files\.num\.threads=.*$", f"files.num.threads={budget}", bank.read_text(), flags=re.M)
        bank.write_text(props + f"download.split.min_size={SPLIT_MIN_SIZE}\ndownload.split.max={SPLIT_MAX}\n")

    def prepare(self, root: Path, proto: str, ds: str, budget: int) -> None:
        dl.ctl_setup(self.command, root, proto, HOSTPORT[proto], ds)
        self.tune(root, budget)


class Cluster(dl.AmqpNodes):
    """download.py's AMQP nodes (a private RabbitMQ vhost, Redis keys under a private prefix, a
    manager and a download node registered before the timed command, all removed after it), with
    the case's settings on the root and `downloaders` download nodes."""

    def __init__(self, bio: Biomaj, proto: str, ds: str, budget: int, downloaders: int):
        super().__init__(bio.command, proto, HOSTPORT[proto], ds)
        self.bio, self.budget, self.downloaders = bio, budget, downloaders

    def setup(self, od: Path) -> None:
        plain = dl.ctl_setup
        # AmqpNodes.setup makes the root with download.ctl_setup, then starts the nodes: the
        # settings must be in place before they read config.yml.
        dl.ctl_setup = lambda biomaj, root, proto, hp, ds: (plain(biomaj, root, proto, hp, ds),
                                                              self.bio.tune(root, self.budget))
        try:
            super().setup(od)
        finally:
            dl.ctl_setup = plain
        if not self.procs or self.downloaders <= 1:
            return
        cfg = od / "root" / "config.yml"
        logs = ROOT / "serve-logs"
        for i in range(2, self.downloaders + 1):
            with open(logs / f"download-{i}.log", "wb") as fh:
                self.procs.append(subprocess.Popen([self.biomaj, "-c", str(cfg), "serve", "--role", "download"],
                                                   stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                   start_new_session=True, cwd=od, env=dl.RUN_ENV))
        deadline = time.time() + 60
        while time.time() < deadline:
            p = subprocess.run([self.biomaj, "-c", str(cfg), "ctl", "--json", "nodes"], capture_output=True, text=True)
            try:
                seen = sum("download" in n.get("roles", []) for n in json.loads(p.stdout))
            except (ValueError, AttributeError, TypeError):
                seen = 0
            if seen >= self.downloaders:
                self.cpu0 = self.cpu()
                return
            if any(pr.poll() is not None for pr in self.procs):
                break
            time.sleep(0.5)
        self.stop()
        log(f"amqp: {self.downloaders} download nodes did not register within 60 s (logs: {logs})")


# Runs --------------------------------------------------------------------------------------------


@dataclass
class Row:
    case: str
    tool: str
    proto: str
    ds: str
    nodes: int  # download nodes (c); 0: in-process
    budget: int
    run: dl.Run


def aria2_input(proto: str) -> Path:
    """aria2c's input file for (b): every file's URL with its dir= and out= (written untimed;
    aria2c cannot list a directory, so it gets the list the others have to fetch)."""
    path = WAN / f"aria2-{SMALL}-{proto}.txt"
    lines = []
    for rel in sorted(dl.source_tree(SMALL)):
        d, _, name = rel.rpartition("/")
        lines += [f"{URL[proto]}/{SMALL}/{rel}", f"  dir={SMALL}/{d}" if d else f"  dir={SMALL}", f"  out={name}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_rows(cases: list[str], tools: set[str], protos: list[str], bio: Optional[Biomaj]) -> list[Row]:
    """The rows to run, in the order of a repetition. bio: None when the biomaj rows are not run."""
    rows: list[Row] = []
    big = sorted(dl.source_tree(BIG))
    result = f"root/data/{dl.CTL_BANK}/{dl.CTL_BANK}_*/flat"

    def update(tool: str) -> list[str]:  # the root is made by the run's set-up in OUT/<tool>/root
        return [bio.command, "-c", str(dl.OUT / tool / "root" / "config.yml"), "ctl", "--json", "update", dl.CTL_BANK]

    def ctl(case: str, proto: str, ds: str) -> Row:
        b = BUDGET[case]
        return Row(case, "biomaj", proto, ds, 0, b, dl.Run(
            "ctl", proto, ds, "mirror", update("ctl"), f"**biomaj ctl update** (per host {b}, split.max {SPLIT_MAX})",
            setup=lambda od: bio.prepare(od / "root", proto, ds, b), result=result))

    def mkdir(sub: str):
        return lambda od: (od / sub).mkdir(parents=True, exist_ok=True)

    for proto in protos:
        u = URL[proto]
        if "a" in cases:
            if "curl" in tools:
                args = ["curl", "-sS", "--fail", "--create-dirs"]
                for f in big:
                    args += ["-o", f"{BIG}/{f}", f"{u}/{BIG}/{f}"]
                rows.append(Row("a", "curl", proto, BIG, 0, 1, dl.Run("curl", proto, BIG, "mirror", args, "curl, 1 stream")))
            if "aria2" in tools:
                rows.append(Row("a", "aria2", proto, BIG, 0, 8, dl.Run(
                    "aria2", proto, BIG, "mirror", [*ARIA2, "-x8", "-s8", "-j1", "-Z", "-d", BIG, *(f"{u}/{BIG}/{f}" for f in big)],
                    "aria2c -x8 -s8 (files in turn)")))
            if "lftp" in tools:
                pgets = "; ".join(f"pget -n 8 /{BIG}/{f} -o {BIG}/{f}" for f in big)
                rows.append(Row("a", "lftp", proto, BIG, 0, 8, dl.Run(
                    "lftp", proto, BIG, "mirror", ["lftp", "-c", f"set cmd:fail-exit yes; open {u}; {pgets}"],
                    "lftp pget -n 8 (files in turn)", setup=mkdir(BIG))))
            if bio:
                rows.append(ctl("a", proto, BIG))
        if "b" in cases:
            if "lftp" in tools:
                src = f"/{SMALL}/" if proto == "http" else f"/{SMALL}"
                rows.append(Row("b", "lftp", proto, SMALL, 0, 4, dl.Run(
                    "lftp", proto, SMALL, "mirror", ["lftp", "-c", f"open {u}; mirror --parallel=4 {src} {SMALL}"],
                    "lftp mirror --parallel=4")))
            if "aria2" in tools:
                rows.append(Row("b", "aria2", proto, SMALL, 0, 4, dl.Run(
                    "aria2", proto, SMALL, "mirror", [*ARIA2, "-j4", "-x1", "-s1", "-i", str(aria2_input(proto))],
                    "aria2c -j4 -x1 (input file of URLs)")))
            if bio:
                rows.append(ctl("b", proto, SMALL))
        if "c" in cases and bio:
            for ds in (BIG, SMALL):
                for n in CLUSTER_NODES:
                    cluster = Cluster(bio, proto, ds, BUDGET["c"], n)
                    rows.append(Row("c", "biomaj", proto, ds, n, BUDGET["c"], dl.Run(
                        "amqp", proto, ds, "mirror", update("amqp"),
                        f"**biomaj ctl update**, manager + {n} download node{'s' if n > 1 else ''}",
                        setup=cluster.setup, teardown=cluster.stop, result=result)))
    return rows


class RelayWatch:
    """Around each timed command: wait until the relay holds no connection, reset its counters
    (after the untimed set-up), and read them back as soon as the command ended."""

    def __init__(self):
        self.before: dict = {}
        self.after: dict = {}

    def wrap(self, run: dl.Run) -> None:
        setup, teardown = run.setup, run.teardown

        def new_setup(od: Path) -> None:
            if setup:
                setup(od)
            deadline = time.time() + 15
            while time.time() < deadline and any(g["open"] for g in ws.relay("stats")["groups"].values()):
                time.sleep(0.2)
            self.before = ws.relay("reset")

        def new_teardown() -> Optional[float]:
            self.after = ws.relay("stats")
            return teardown() if teardown else None

        run.setup, run.teardown = new_setup, new_teardown

    def fields(self) -> dict:
        g = self.after.get("groups", {})
        if not g:
            return {"max_http": "", "max_ftp": "", "max_ftp_data": "", "connections": "", "relay_cpu": ""}
        return {"max_http": g["http"]["max"], "max_ftp": g["ftp"]["max"], "max_ftp_data": g["ftp-data"]["max"],
                "connections": sum(x["total"] for x in g.values()),
                "relay_cpu": "%.2f" % (self.after["cpu"] - self.before.get("cpu", self.after["cpu"]))}


def log_tail(path: Path, lines: int = 3) -> str:
    """The last lines of a run's output that are not JSON (a failed tool's own words)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    keep = [ln.strip() for ln in text if ln.strip() and not re.match(r"^\s*[\[\]{}\"]|^\s*$", ln)]
    return " / ".join(keep[-lines:])[-400:]


def run_row(row: Row, rep: int, expected: dict, logs: Path, timeout: float, watch: RelayWatch) -> dict:
    watch.before, watch.after = {}, {}
    where = logs / (f"{row.case}-x{row.nodes}" if row.nodes else row.case)
    where.mkdir(parents=True, exist_ok=True)
    try:
        out = dl.run_one(row.run, rep, expected, where, timeout)
    except Exception as exc:  # noqa: BLE001  a set-up that failed: a failed row, not a crash
        if row.run.teardown:
            try:
                row.run.teardown()
            except Exception:  # noqa: BLE001
                pass
        watch.after = {}  # no timed command ran: no connection figure
        dl.rm_tree(dl.OUT / row.run.tool)
        out = {"tool": row.run.tool, "proto": row.proto, "dataset": row.ds, "kind": "mirror", "rep": rep, "seconds": "0",
               "maxrss_kb": 0, "rc": -1, "ok": 0, "files": 0, "bytes": 0, "expected_files": len(expected),
               "expected_bytes": sum(expected.values()), "inner_seconds": "", "cpu_seconds": "", "label": row.run.label,
               "note": f"set-up failed: {type(exc).__name__}: {exc}"[:300]}
    if str(out["rc"]) == "124":
        out["note"] += f" (killed after --timeout {timeout:g} s)"
    out.update(case=row.case, nodes=row.nodes, budget=row.budget, tool=row.tool, **watch.fields(),
               tail="" if out["ok"] else log_tail(where / f"{row.run.slug}-{rep}.log"))
    return out


# Report ------------------------------------------------------------------------------------------


def link_check() -> dict:
    """curl's timings for one 64 KiB file, straight to the server and through the relay."""
    fmt = "%{time_connect} %{time_starttransfer} %{time_total}"
    out = {}
    for name, host in (("direct", f"{ws.SERVER_ADDR}:{ws.HTTP_PORT}"), ("relay", HTTP)):
        p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", fmt, f"http://{host}/{SMALL}/sub00/f0000.dat"],
                           capture_output=True, text=True, timeout=30)
        try:
            out[name] = [round(float(x) * 1000, 1) for x in p.stdout.split()]
        except ValueError:
            out[name] = []
    return out


def kernel_netem() -> str:
    try:
        import gzip
        with gzip.open("/proc/config.gz", "rt") as fh:
            found = [ln.strip() for ln in fh if "NET_SCH_NETEM" in ln]
        return found[0] if found else "no NET_SCH_NETEM in /proc/config.gz"
    except OSError:
        return "/proc/config.gz not readable"


def stats_of(raw: list[dict]) -> dict:
    groups: dict[tuple, list[dict]] = {}
    for r in raw:
        groups.setdefault((r["case"], r["tool"], r["proto"], int(r["nodes"]), r["dataset"]), []).append(r)
    st = {}
    for k, rs in groups.items():
        ok = [r for r in rs if str(r["ok"]) == "1"]
        secs = [float(r["seconds"]) for r in ok]
        measured = ok or rs

        def most(field):
            vals = [int(r[field]) for r in measured if str(r.get(field, "")).strip() not in ("",)]
            return max(vals) if vals else None

        inner = [float(r["inner_seconds"]) for r in ok if r.get("inner_seconds")]
        cpu = [float(r["cpu_seconds"]) for r in ok if r.get("cpu_seconds")]
        rcpu = [float(r["relay_cpu"]) for r in ok if r.get("relay_cpu")]
        st[k] = {"n": len(rs), "nok": len(ok), "label": rs[0]["label"], "budget": int(rs[0]["budget"]),
                 "med": statistics.median(secs) if secs else None, "min": min(secs) if secs else None,
                 "max": max(secs) if secs else None,
                 "rss": max(int(r["maxrss_kb"]) for r in ok) / 1024 if ok else None,
                 "files": int(rs[0]["expected_files"]), "bytes": int(rs[0]["expected_bytes"]),
                 "inner": statistics.median(inner) if inner and len(inner) == len(ok) else None,
                 "cpu": statistics.median(cpu) if cpu and len(cpu) == len(ok) else None,
                 "relay_cpu": statistics.median(rcpu) if rcpu else None,
                 "http": most("max_http"), "ftp": most("max_ftp"), "ftp_data": most("max_ftp_data"),
                 "by_rep": {int(r["rep"]): float(r["seconds"]) for r in ok},
                 "notes": sorted({(r["note"] + (f" [{r['tail']}]" if r.get("tail") else "")) for r in rs
                                  if str(r["ok"]) != "1"})}
    return st


def conns(s: dict, proto: str) -> str:
    """Connections open at once, as the server saw them (FTP: sessions, + data connections)."""
    if proto == "http":
        return "-" if s["http"] is None else str(s["http"])
    if s["ftp"] is None:
        return "-"
    return f"{s['ftp']} (+{s['ftp_data']} data)"


def peak(s: dict, proto: str) -> Optional[int]:
    return s["http"] if proto == "http" else s["ftp"]


def build_report(raw: list[dict], meta: dict) -> tuple[str, str]:
    st = stats_of(raw)
    cap = float(meta.get("cap_kib", 4096)) / 1024  # MiB/s per connection
    fs = dl.fmt_s
    reps = sorted({int(r["rep"]) for r in raw})
    out: list[str] = []
    w = out.append
    tables: list[str] = []  # what is printed

    def get(case, tool, proto, nodes=0, ds=None):
        ds = ds or (BIG if case == "a" else SMALL)
        return st.get((case, tool, proto, nodes, ds))

    def ratio(a, b) -> Optional[float]:
        """b's time / a's time: a's speed over b's."""
        return b["med"] / a["med"] if a and b and a["med"] and b["med"] else None

    def per_rep(a, b) -> str:
        r = [b["by_rep"][k] / a["by_rep"][k] for k in a["by_rep"] if k in b["by_rep"]] if a and b else []
        return "%.2f-%.2f" % (min(r), max(r)) if r else "-"

    def failed_cell(s) -> str:
        return f"FAILED ({s['nok']}/{s['n']} ok: {'; '.join(s['notes'])[:300]})"

    w("# biomaj WAN benchmark")
    w("")
    w(f"`python3 bench/wan.py` — every figure is the **median of {len(reps)} interleaved run(s)**. Servers: Apache 2.4 "
      f"(mod_ratelimit) and vsftpd (anon_max_rate), each connection capped at **{cap:g} MiB/s**, reached through a "
      f"user-space delay relay adding **{meta.get('delay_ms', 30):g} ms each way** (this kernel has no netem: "
      f"`{meta.get('netem', '?')}`). Client, servers and relay share this machine's cores.")
    w("")
    w("## Machine")
    w("")
    for k, v in dl.machine(meta).items():
        w(f"- {k}: {v}")
    w("")
    w("## Versions")
    w("")
    for k, v in meta.get("versions", {}).items():
        w(f"- {k}: {v}")
    w("")

    sec_a = ["| tool | proto | median s | min-max s | MiB/s | x cap | peak RSS MiB | CPU s | conns at once | relay CPU s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    sec_b = ["| tool | proto | median s | min-max s | files/s | peak RSS MiB | CPU s | conns at once | relay CPU s |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for case, sec in (("a", sec_a), ("b", sec_b)):
        for proto in PROTOS:
            for tool in TOOLS:
                s = get(case, tool, proto)
                if not s:
                    continue
                label = s["label"]
                if s["med"] is None:
                    sec.append(f"| {label} | {proto} | {failed_cell(s)} |" + " |" * (7 if case == "a" else 6))
                    continue
                note = "" if s["nok"] == s["n"] else f" ({s['nok']}/{s['n']} ok)"
                rate = s["bytes"] / MiB / s["med"]
                cpu = "%.2f" % s["cpu"] if s["cpu"] is not None else "-"
                rc = "%.2f" % s["relay_cpu"] if s["relay_cpu"] is not None else "-"
                common = f"| {label} | {proto} | {fs(s['med'])}{note} | {fs(s['min'])}-{fs(s['max'])} | "
                if case == "a":
                    sec.append(common + f"{rate:.1f} | {rate / cap:.2f} | {s['rss']:.0f} | {cpu} | {conns(s, proto)} | {rc} |")
                else:
                    sec.append(common + f"{s['files'] / s['med']:.0f} | {s['rss']:.0f} | {cpu} | {conns(s, proto)} | {rc} |")
    sec_c = ["| data | proto | download nodes | ctl update wall s | min-max s | job s | MiB/s | files/s | conns at once "
             f"(budget {BUDGET['c']}) | budget held | CPU s (ctl + nodes) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    for ds in (BIG, SMALL):
        for proto in PROTOS:
            for n in CLUSTER_NODES:
                s = get("c", "biomaj", proto, n, ds)
                if not s:
                    continue
                if s["med"] is None:
                    sec_c.append(f"| {ds} | {proto} | {n} | {failed_cell(s)} |" + " |" * 7)
                    continue
                p = peak(s, proto)
                held = "-" if p is None else ("yes" if p <= BUDGET["c"] else f"**no** ({p} > {BUDGET['c']})")
                fps = "-" if ds == BIG else f"{s['files'] / s['med']:.0f}"
                sec_c.append(f"| {ds} | {proto} | {n} | {fs(s['med'])} | {fs(s['min'])}-{fs(s['max'])} | "
                             f"{fs(s['inner']) if s['inner'] is not None else '-'} | {s['bytes'] / MiB / s['med']:.1f} | "
                             f"{fps} | {conns(s, proto)} | {held} | "
                             f"{'%.2f' % s['cpu'] if s['cpu'] is not None else '-'} |")

    w("## Results")
    w("")
    w("Wall time of the whole process (biomaj: `biomaj ctl update`, interpreter start-up, workflow and exit "
      "included), medians over the repetitions; min-max = fastest and slowest successful run; peak RSS = "
      "largest over the runs (GNU time; the timed command only, not the AMQP nodes); CPU s = median user+sys "
      "of the command's process tree (case c: plus the manager and download nodes during the command); "
      "x cap = MiB/s over one connection's cap; **conns at once** = the most connections the server had open "
      "at the same time during the run, counted by the relay (FTP: control sessions, + their data "
      "connections); relay CPU s = the relay's CPU during the run.")
    w("")
    for title, sec, intro in (
            (f"(a) 2 x {BIG_FILE_MIB} MiB through the per-connection cap, budget {BUDGET['a']}", sec_a,
             f"aria2c and lftp fetch the two files one after the other, {BUDGET['a']} connections each; curl one "
             f"stream, the files in turn; biomaj: `limits` per host {BUDGET['a']}, `download.split.max={SPLIT_MAX}`."),
            (f"(b) 2,000 x 64 KiB in 20 directories, budget {BUDGET['b']}", sec_b,
             "lftp lists the tree itself; aria2c is given the list of URLs (it cannot list a directory)."),
            (f"(c) distributed: manager + 1 or 3 download nodes over RabbitMQ and Redis, per-host limit "
             f"{BUDGET['c']} on every node", sec_c,
             "The budget must hold for the whole cluster: every node is set to the same per-host limit, and "
             "the relay counts what reaches the server.")):
        if len(sec) <= 2:
            continue
        w(f"### {title}")
        w("")
        w(intro)
        w("")
        out.extend(sec)
        w("")
        tables += [f"{title}:", *sec, ""]

    # Targets
    tv = ["| target | proto | measured (ratio of medians) | per-rep ratios | verdict |", "|---|---|---:|---:|---|"]

    def verdict(ok: Optional[bool]) -> str:
        return "n/a" if ok is None else ("**met**" if ok else "**missed**")

    cases = meta.get("cases", CASES)
    for proto in PROTOS if "a" in cases else ():
        b = get("a", "biomaj", proto)
        for tool, target, name in (("aria2", TARGET_VS_ARIA2, "aria2c -x8 -s8"), ("curl", TARGET_VS_CURL, "one curl stream")):
            o = get("a", tool, proto)
            r = ratio(b, o)
            if r is None:
                tv.append(f"| (a) biomaj MiB/s >= {target:g} x {name} | {proto} | not measured | - | n/a |")
                continue
            tv.append(f"| (a) biomaj MiB/s >= {target:g} x {name} | {proto} | {r:.2f} x ({b['bytes'] / MiB / b['med']:.1f} "
                      f"vs {o['bytes'] / MiB / o['med']:.1f} MiB/s) | {per_rep(b, o)} | {verdict(r >= target)} |")
        o = get("a", "lftp", proto)
        if ratio(b, o) is not None:
            tv.append(f"| (a) biomaj vs lftp pget -n 8 (no target) | {proto} | {ratio(b, o):.2f} x | {per_rep(b, o)} | - |")
    for proto in PROTOS if "b" in cases else ():
        b = get("b", "biomaj", proto)
        for tool, target, name in (("lftp", TARGET_VS_LFTP_MIRROR, "lftp mirror --parallel=4"), ("aria2", None, "aria2c -j4")):
            o = get("b", tool, proto)
            r = ratio(b, o)
            what = f"(b) biomaj files/s >= {target:g} x {name}" if target else f"(b) biomaj vs {name} (no target)"
            if r is None:
                if target:
                    tv.append(f"| {what} | {proto} | not measured | - | n/a |")
                continue
            tv.append(f"| {what} | {proto} | {r:.2f} x ({b['files'] / b['med']:.0f} vs {o['files'] / o['med']:.0f} files/s) | "
                      f"{per_rep(b, o)} | {verdict(r >= target) if target else '-'} |")
    for proto in PROTOS:
        b = get("a", "biomaj", proto)
        if b and b["rss"] is not None:
            mb = b["rss"] * MiB / 1e6
            tv.append(f"| (a) biomaj peak RSS < {TARGET_SPLIT_RSS_MB:g} MB (2 x {BIG_FILE_MIB} MiB, split) | {proto} | "
                      f"{mb:.0f} MB | - | {verdict(mb < TARGET_SPLIT_RSS_MB)} |")
    for ds in (BIG, SMALL):
        for proto in PROTOS:
            for n in CLUSTER_NODES:
                s = get("c", "biomaj", proto, n, ds)
                if s and peak(s, proto) is not None:
                    p = peak(s, proto)
                    tv.append(f"| (c) conns at once <= {BUDGET['c']}, {ds}, {n} download node{'s' if n > 1 else ''} | "
                              f"{proto} | {p} | - | {verdict(p <= BUDGET['c'])} |")
    w("## Targets")
    w("")
    w("Speed ratios: > 1 means biomaj is faster (the peer's median time over biomaj's); per-rep ratios pair "
      "the runs of one repetition. Biomaj's split rows only show a speed-up once split transfers exist.")
    w("")
    out.extend(tv)
    w("")
    tables += ["Targets:", *tv]

    failed = [(k, s) for k, s in st.items() if s["nok"] < s["n"]]
    if failed:
        w("Runs that failed (left out of the medians): " + "; ".join(
            f"{k[0]}/{k[1]}/{k[2]}{'/x%d' % k[3] if k[3] else ''}: {s['n'] - s['nok']} of {s['n']} ({'; '.join(s['notes'])})"
            for k, s in failed) + f". Logs: `{meta.get('results', RESULTS)}/logs/`.")
        w("")
    if meta.get("skipped"):
        w("Not run: " + "; ".join(f"{k}: {v}" for k, v in meta["skipped"].items()))
        w("")

    lc = {k: " / ".join("%g" % x for x in v) + " ms" for k, v in meta.get("link_check", {}).items()}
    w("## How it was measured")
    w("")
    w(f"- Servers (`bench/wan_servers.py`), on {ws.SERVER_ADDR}: Apache 2.4 (mpm_event, keep-alive, mod_autoindex "
      f"FancyIndexing listings) with `SetOutputFilter RATE_LIMIT` and `SetEnv rate-limit {meta.get('cap_kib')}` on every "
      f"response, i.e. each connection capped at {meta.get('cap_kib')} KiB/s; vsftpd (anonymous, passive ports "
      f"{ws.PASV_PORTS}, `pasv_address={ws.RELAY_ADDR}`) with `anon_max_rate={int(meta.get('cap_kib', 0)) * 1024}` "
      "(bytes/s per session). Source data in the page cache.")
    w(f"- Latency: `bench/delay_relay.py` listens on {ws.RELAY_ADDR} on the same ports (HTTP {ws.HTTP_PORT}, FTP "
      f"{ws.FTP_PORT}, the passive range) and forwards to {ws.SERVER_ADDR}, releasing each chunk "
      f"{meta.get('delay_ms', 30):g} ms after it read it, in both directions, order and back-pressure kept (at most "
      "4 MiB in flight per direction and connection). The kernel has no netem, so the handshake's round trip "
      "cannot be put on connect(): the relay opens its connection to the server 3 one-way delays after "
      "accepting and holds the client's first bytes until then, so a new connection's first answer comes 2 "
      "round trips after connect(), as over a real link. Check (curl, one 64 KiB file, connect / first "
      f"byte / total): straight to the server {lc.get('direct', '?')}, through the relay {lc.get('relay', '?')}. "
      "The relay acknowledges the servers' bytes at once; where that shows, FTP (vsftpd sends its 226 after "
      "closing the data connection with SO_LINGER, i.e. after the client's ACK over a real link), it holds a "
      "226/426/451 reply until one round trip after the 150 reached the client.")
    w("- Connections at once: counted by the relay per server port, as the server sees them (from the "
      "relay's connection to the server until the client's end of stream reaches it or the server closes); "
      "reset after each run's untimed set-up, read right after the command.")
    w("- Each run (bench/download.py's runner): output directory emptied and `sync` (untimed), the command "
      "under `/usr/bin/time -v`, wall time around it, then a check that the output holds exactly the source "
      "tree (every path with its size); biomaj: the job must end `done` and ok, the release directory "
      "`data/bench/bench_*/flat` is checked. Failed runs are reported and left out of the medians.")
    w(f"- biomaj: a new root each run (`biomaj init`), `conf/bench.properties` as bench/download.py's e2e mode "
      f"writes it (protocol, server {ws.RELAY_ADDR}:PORT, `remote.files=**/*`, `release.control=true`) plus "
      f"`files.num.threads=<budget>`, `download.split.min_size={SPLIT_MIN_SIZE}`, `download.split.max={SPLIT_MAX}` "
      f"(ignored by a biomaj without split transfers); config.yml `limits.{meta.get('limit_key', '?')}: <budget>` "
      f"(the per-host connection limit this biomaj accepts). Case c: `bus.url` on a private RabbitMQ vhost, "
      "`state.url` on Redis under a private prefix; the manager and download nodes started and registered "
      "before the timed command (untimed), stopped after it; the command queues the job and follows it.")
    w("- Commands: `curl -sS --fail --create-dirs -o F URL ...` (one process, one connection, files in turn); "
      f"`{' '.join(ARIA2)} -x8 -s8 -j1 -Z -d {BIG} URL1 URL2`; `lftp -c 'set cmd:fail-exit yes; open URL; "
      f"pget -n 8 /{BIG}/file1.bin -o ...; pget -n 8 ...'`; `lftp -c 'open URL; mirror --parallel=4 /{SMALL}/ "
      f"{SMALL}'`; `aria2c ... -j4 -x1 -s1 -i LIST` (LIST: each URL with `dir=` and `out=`).")
    w("- Interleaved: repetition 1 of every row, then repetition 2, ...; no warm-up round (the transfers are "
      "bound by the link; biomaj's bytecode is compiled beforehand). Settings: " + meta.get("settings", "?"))
    w("")
    return "\n".join(out) + "\n", "\n".join(tables)


# Main --------------------------------------------------------------------------------------------


def versions(project_py: str) -> dict:
    sh = dl.sh
    return {
        "curl": sh("curl --version | head -1"),
        "aria2c": sh("aria2c --version | head -1"),
        "lftp": sh("lftp --version | head -1"),
        "HTTP server": sh("apache2 -v | sed -n 's/^Server version: //p'") + " + mod_ratelimit",
        "FTP server": "vsftpd " + (sh("vsftpd -v 0>&1 2>/dev/null | sed -n 's/.*version //p'") or "?"),
        "python (project venv)": sh(f"{project_py} -c 'import sys; print(sys.version.split()[0])'"),
        "biomaj": sh(f"{project_py} -c 'import biomaj; print(biomaj.__version__)' 2>/dev/null") or "?",
        "biomaj source measured": dl.source_fingerprint(),
        "RabbitMQ / Redis": sh("rabbitmqctl version 2>/dev/null | head -1") + " / " + sh("redis-server --version | awk '{print $3}'"),
    }


def preflight(cases: list[str], tools: set[str], project_py: str) -> dict:
    skipped = {}
    for tool, binary in (("curl", "curl"), ("aria2", "aria2c"), ("lftp", "lftp")):
        if tool in tools and not shutil.which(binary):
            skipped[tool] = f"{binary} not installed (apt-get install -y aria2 lftp curl)"
    for binary in ("apache2", "vsftpd"):
        if not shutil.which(binary) and not Path(f"/usr/sbin/{binary}").exists():
            raise SystemExit(f"{binary} not installed (apt-get install -y apache2 vsftpd)")
    if not os.access(dl.GNU_TIME, os.X_OK):
        raise SystemExit(f"{dl.GNU_TIME} (Debian package 'time') is missing")
    if "biomaj" in tools and not os.access(Path(project_py).with_name("biomaj"), os.X_OK):
        skipped["biomaj"] = f"no `biomaj` beside {project_py} (make install)"
    if "c" in cases:
        for binary in ("rabbitmqctl", "redis-cli"):
            if not shutil.which(binary):
                skipped["c"] = f"{binary} not installed"
    for k, v in skipped.items():
        log(f"skipping {k}: {v}")
    return skipped


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="biomaj's WAN benchmark (see bench/README.md)")
    ap.add_argument("--reps", type=int, default=3, help="measured repetitions, interleaved (default 3)")
    ap.add_argument("--only", default="a,b,c", help="cases, comma-separated: a (2 x 256 MiB), b (2,000 x 64 KiB), "
                    "c (distributed)")
    ap.add_argument("--protos", default="http,ftp")
    ap.add_argument("--tools", default=",".join(TOOLS), help="rows of cases a and b: " + ",".join(TOOLS))
    ap.add_argument("--cap", type=int, default=4096, help="KiB/s per connection, both servers (default 4096)")
    ap.add_argument("--delay-ms", type=float, default=30.0, help="one-way delay added by the relay (default 30)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run before it is killed (default 900)")
    ap.add_argument("--python", default=None, help="python of the project venv (default: ../.venv/bin/python)")
    ap.add_argument("--keep-servers", action="store_true", help="leave the servers and the relay running")
    ap.add_argument("--report", metavar="RAW_TSV", help="only rebuild the report from an earlier run's raw data")
    a = ap.parse_args(argv)
    venv_py = REPO / ".venv" / "bin" / "python"
    project_py = a.python or (str(venv_py) if venv_py.exists() else sys.executable)
    cases = [c for c in a.only.split(",") if c]
    tools = {t for t in a.tools.split(",") if t}
    protos = [p for p in PROTOS if p in a.protos.split(",")]
    if set(cases) - set(CASES) or tools - set(TOOLS) or not protos:
        ap.error(f"--only takes {','.join(CASES)}, --tools {','.join(TOOLS)}, --protos http,ftp")

    if a.report:
        raw_path = Path(a.report)
        meta_path = raw_path.with_name("meta.json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        with open(raw_path, newline="") as fh:
            raw = list(csv.DictReader(fh, delimiter="\t"))
        report, text = build_report(raw, meta)
        raw_path.with_name("report.md").write_text(report)
        print(text)
        return 0

    skipped = preflight(cases, tools, project_py)
    tools -= set(skipped)
    if "c" in skipped:
        cases.remove("c")
    bio = Biomaj(str(Path(project_py).with_name("biomaj")), per_host_key(project_py)) if "biomaj" in tools else None
    # Bytecode as a pip install leaves it (biomaj is installed editable), as download.py does.
    subprocess.run([project_py, "-m", "compileall", "-q", str(REPO / "biomaj")], env=dl.RUN_ENV, check=False)
    subprocess.run(["bash", str(BENCH / "datasets.sh"), SMALL], check=True, stdout=subprocess.DEVNULL)
    if "a" in cases or "c" in cases:
        build_wan_big()
    WAN.mkdir(parents=True, exist_ok=True)
    (ROOT / "home").mkdir(parents=True, exist_ok=True)
    dl.RUN_ENV["HOME"] = str(ROOT / "home")  # lftp's and aria2c's state files stay under the bench root
    for ds in (BIG, SMALL):
        if (DATA / ds).is_dir():
            warm(ds)

    rows = make_rows(cases, tools, protos, bio)
    if not rows:
        log("nothing to run")
        return 1
    watch = RelayWatch()
    for row in rows:
        watch.wrap(row.run)
    expected = {ds: dl.source_tree(ds) for ds in {r.ds for r in rows}}

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    res = RESULTS / f"wan-{stamp}"
    logs = res / "logs"
    logs.mkdir(parents=True)
    meta = {"started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "load_start": " ".join(open("/proc/loadavg").read().split()[:3]), "results": str(res),
            "cases": cases, "cap_kib": a.cap, "delay_ms": a.delay_ms, "netem": kernel_netem(), "skipped": skipped,
            "limit_key": bio.limit_key if bio else "",
            "settings": f"reps={a.reps} cases={','.join(cases)} protos={','.join(protos)} cap={a.cap} KiB/s "
                        f"delay={a.delay_ms:g} ms budgets a={BUDGET['a']} b={BUDGET['b']} c={BUDGET['c']} "
                        f"timeout={a.timeout:g}s"}
    fields = dl.RAW_FIELDS + EXTRA_FIELDS
    raw: list[dict] = []
    t0 = time.time()
    ws.start(a.cap, a.delay_ms)
    try:
        meta["link_check"] = link_check()
        meta["versions"] = versions(project_py)
        log(f"link check (ms: connect, first byte, total): {meta['link_check']}")
        log(f"{len(rows)} rows x {a.reps} repetitions")
        with open(res / "raw.tsv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fields, delimiter="\t", extrasaction="ignore")
            writer.writeheader()
            for rep in range(1, a.reps + 1):
                for row in rows:
                    r = run_row(row, rep, expected[row.ds], logs, a.timeout, watch)
                    writer.writerow(r)
                    fh.flush()
                    raw.append(r)
                    conn = r["max_http"] if row.proto == "http" else f"{r['max_ftp']}+{r['max_ftp_data']}"
                    log("%s %-6s %-4s %-8s%s rep %d: %8.2f s  rss %6.0f MiB  conns %s  %s" % (
                        row.case, row.tool, row.proto, row.ds, f" x{row.nodes}" if row.nodes else "   ", rep,
                        float(r["seconds"]), int(r["maxrss_kb"]) / 1024, conn,
                        "ok" if r["ok"] else f"FAILED ({r['note']}) {r['tail']}"))
    finally:
        if not a.keep_servers:
            ws.stop()
    meta.update(finished=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                wall_seconds=str(round(time.time() - t0)), load_end=" ".join(open("/proc/loadavg").read().split()[:3]),
                source_end=dl.source_fingerprint())
    if meta["source_end"] != meta["versions"]["biomaj source measured"]:
        meta["versions"]["biomaj source measured"] += f"; **changed during the run**, at the end: {meta['source_end']}"
    (res / "meta.json").write_text(json.dumps(meta, indent=1))
    report, text = build_report(raw, meta)
    (res / "report.md").write_text(report)
    (RESULTS / "wan-latest.md").write_text(report)
    shutil.copyfile(res / "raw.tsv", RESULTS / "wan-latest.tsv")
    print()
    print(text)
    print(f"\nreport: {RESULTS / 'wan-latest.md'} (raw: {RESULTS / 'wan-latest.tsv'}; logs: {logs})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
