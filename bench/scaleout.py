#!/usr/bin/env python3
"""Scale-out benchmark: one bank updated with 1, 2 and 4 download nodes over RabbitMQ + Redis.

Scenario: one `protocol=http` bank of N small files (default 2,000 x 1 KiB) in one remote
directory, served by a local aiohttp server that this script starts on 127.0.0.1 (a free port)
and that waits `--latency` seconds (default 0.020) before answering EVERY request, listings and
files alike: a far-away server, where a node's throughput is bounded by its connections, not by
the bytes. The bank is updated, from scratch each time (`biomaj ctl remove-all --force` first), in
four modes:

  in-process  no RabbitMQ nor Redis: `biomaj ctl update` runs the whole job in its own process
              (in-process bus, one downloader);
  amqp x1     a manager node and 1 download node (`biomaj serve`, separate processes); the job is
              submitted by `biomaj ctl update` over RabbitMQ;
  amqp x2     the same with 2 download nodes;
  amqp x4     the same with 4 download nodes.

Every node keeps the default limits of config.yml (`limits.downloads`, `limits.per_host`), so
in-process and one download node have the same concurrency; `limits.per_host` (4 connections to
the server) holds for the whole cluster, so more download nodes add CPU, not connections. Each update must end `done` with
exactly N files in the release directory, else the run stops with the tail of the node logs.

Figures, medians over `--reps` updates per mode: the whole update (the job's own started ->
finished, from its record) and the download phase alone (from the session log's timestamps of
`Workflow:Start:download` and `Workflow:Start:download:checksum`), in files/s; the speed-up of
2 and 4 download nodes over 1; the AMQP / in-process ratio (the cost of the messages). How the
files were split between the nodes is read from the session log (`downloaded by node:`). To
show where the time goes, the CPU seconds of every process (nodes, `ctl`, the remote server,
RabbitMQ, Redis) and how busy the cores were are read from /proc around each update.

Targets (printed, never asserted): 4 download nodes >= 3 x the files/s of 1; AMQP with 1 download
node within 20 % of the in-process files/s.

Needs RabbitMQ on 127.0.0.1:5672 (guest/guest) and Redis on 127.0.0.1:6379 (exit 2 when either
does not answer). With `rabbitmqctl` (run as root) the run uses its own RabbitMQ vhost, deleted
at the end; without it, vhost "/". Redis keys go under a prefix of their own (REDIS_PREFIX).

    make install && .venv/bin/python bench/scaleout.py [--files 2000] [--reps 3] [--json]

Other options: `--size 1024` (bytes per file), `--latency 0.020` (seconds per request); e.g.
`--files 1000 --latency 0.2` makes the run bound by latency rather than by CPU.

Standard library plus aiohttp (from the project venv); everything is written under
/tmp/biomaj-bench/scaleout (`BENCH_ROOT`), node logs in its `logs/` folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from email.utils import formatdate
from pathlib import Path

from aiohttp import web

PROJECT = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("BENCH_ROOT", "/tmp/biomaj-bench")) / "scaleout"
BANK = "bench"
RABBITMQ = ("127.0.0.1", 5672)
REDIS = ("127.0.0.1", 6379)
#: (mode, number of download nodes); 0 nodes: the job runs inside `biomaj ctl update`.
MODES = (("in-process", 0), ("amqp", 1), ("amqp", 2), ("amqp", 4))
NODES_TIMEOUT = 30.0  # seconds for the nodes to register
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL
UPDATE_TIMEOUT = 1800.0  # seconds for one `ctl update`


class BenchError(Exception):
    """Something went wrong: the message says what, the run stops."""


# The remote: an Apache-like HTTP server with latency ------------------------------------------


def make_files(directory: Path, files: int, size: int) -> None:
    directory.mkdir(parents=True)
    for i in range(files):
        (directory / f"f{i:06d}.dat").write_bytes(os.urandom(size))


def apache_size(size: int) -> str:
    """Apache's way to print a size in an index page (`1.0K`, `512K`, `3.0M`), enough for here."""
    if size < 973:
        return f"{size:3d} "
    value, unit = size / 1024, "K"
    for bigger in "MG":
        if value < 973:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f}{unit}" if value < 9.95 else f"{value:3.0f}{unit}"


INDEX_HEAD = (
    '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN" "http://www.w3.org/TR/html4/strict.dtd">\n'
    "<html>\n <head>\n  <title>Index of {path}</title>\n </head>\n <body>\n<h1>Index of {path}</h1>\n"
    '<pre><img src="/icons/blank.gif" alt="Icon "> <a href="?C=N;O=D">Name</a>                    '
    '<a href="?C=M;O=A">Last modified</a>      <a href="?C=S;O=A">Size</a>  <a href="?C=D;O=A">Description</a><hr>'
    '<img src="/icons/back.gif" alt="[PARENTDIR]"> <a href="/">Parent Directory</a>                             -   \n'
)
INDEX_TAIL = "<hr></pre>\n</body></html>\n"


def index_page(directory: Path, url_path: str) -> str:
    """An Apache 2.4 FancyIndexing page (as `mod_autoindex` writes it) of `directory`."""
    lines = [INDEX_HEAD.format(path=url_path)]
    for path in sorted(directory.iterdir()):
        st = path.stat()
        date = datetime.fromtimestamp(st.st_mtime).strftime("%Y-%m-%d %H:%M")
        padding = " " * max(1, 24 - len(path.name))
        lines.append(f'<img src="/icons/unknown.gif" alt="[   ]"> <a href="{path.name}">{path.name}</a>{padding}'
                     f"{date}  {apache_size(st.st_size)} \n")
    lines.append(INDEX_TAIL)
    return "".join(lines)


class Remote:
    """The aiohttp server, in a thread of its own with its own event loop."""

    def __init__(self, data: Path, latency: float):
        self.data = data
        self.latency = latency
        self.requests = 0
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="remote", daemon=True)
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        await asyncio.sleep(self.latency)
        name = request.match_info["name"]
        if not name:
            return web.Response(text=index_page(self.data, "/data/"), content_type="text/html")
        path = self.data / name
        if "/" in name or not path.is_file():
            return web.Response(status=404, text="not found")
        headers = {"Last-Modified": formatdate(path.stat().st_mtime, usegmt=True)}
        return web.FileResponse(path, headers=headers)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/data/{name:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# RabbitMQ and Redis ---------------------------------------------------------------------------


def port_open(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=3):
            return True
    except OSError:
        return False


class Vhost:
    """A RabbitMQ vhost of this run (rabbitmqctl), so that no stale queue, and no manager of another
    installation, interferes; "/" without rabbitmqctl."""

    def __init__(self) -> None:
        self.name = "/"
        self.created: str | None = None
        self.note = ""

    def create(self) -> None:
        if not shutil.which("rabbitmqctl"):
            self.note = "rabbitmqctl not found: using RabbitMQ vhost '/' (stale queues there could interfere)"
            return
        name = f"biomaj-bench-{os.getpid()}"
        try:
            run(["rabbitmqctl", "add_vhost", name], timeout=60)
            self.created = name
            run(["rabbitmqctl", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"], timeout=60)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            self.delete()
            self.note = f"rabbitmqctl failed ({describe_failure(exc)}): using RabbitMQ vhost '/'"
            return
        self.name = name
        self.note = f"RabbitMQ vhost {name} (created for this run, deleted at the end)"

    def delete(self) -> None:
        if self.created:
            subprocess.run(["rabbitmqctl", "delete_vhost", self.created], capture_output=True, timeout=60, check=False)
            self.created = None


def forget_redis_keys(prefix: str) -> int:
    """Delete this run's Redis keys (`<prefix>:*`); the number deleted, -1 without redis-py."""
    try:
        import redis
    except ImportError:
        return -1
    client = redis.Redis(host=REDIS[0], port=REDIS[1])
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


# CPU accounting (Linux /proc; None elsewhere) -------------------------------------------------


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by process `pid`."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine since boot."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return None
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def service_pids() -> dict[str, list[int]]:
    """The pids of the RabbitMQ (Erlang VM) and Redis server processes of this machine."""
    found: dict[str, list[int]] = {"rabbitmq": [], "redis": []}
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            name = comm.read_text().strip()
        except OSError:
            continue
        if name == "beam.smp":
            found["rabbitmq"].append(int(comm.parent.name))
        elif name == "redis-server":
            found["redis"].append(int(comm.parent.name))
    return found


class CpuMeter:
    """CPU used during one update: by each node, by the `ctl` command (a waited child), by this
    script (the remote server's thread), by RabbitMQ and Redis, and how busy the machine's cores
    were."""

    def __init__(self, nodes: list[tuple[str, subprocess.Popen, Path]]):
        self.nodes = [(node_id, proc.pid) for node_id, proc, _log in nodes]
        self.services = service_pids() if Path("/proc").is_dir() else {}
        self.before = self._snapshot()

    def _snapshot(self) -> dict:
        children, me = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        return {
            "nodes": {node_id: process_cpu(pid) for node_id, pid in self.nodes},
            "services": {name: {pid: process_cpu(pid) for pid in pids} for name, pids in self.services.items()},
            "ctl": children.ru_utime + children.ru_stime,
            "bench": me.ru_utime + me.ru_stime,
            "machine": machine_cpu(),
        }

    def result(self) -> dict:
        after, before = self._snapshot(), self.before
        nodes = {n: (after["nodes"][n] - before["nodes"][n]) if after["nodes"][n] is not None
                 and before["nodes"][n] is not None else None for n in after["nodes"]}
        busy = busy_s = None
        if after["machine"] and before["machine"]:
            busy_jiffies = after["machine"][0] - before["machine"][0]
            busy = busy_jiffies / max(1, after["machine"][1] - before["machine"][1])
            busy_s = busy_jiffies / os.sysconf("SC_CLK_TCK")
        services = {name: sum(after["services"][name][pid] - before["services"][name][pid]
                              for pid in pids if None not in (after["services"][name][pid], before["services"][name][pid]))
                    for name, pids in self.services.items()}
        return {"nodes": nodes, "ctl": after["ctl"] - before["ctl"], "bench": after["bench"] - before["bench"],
                "services": services, "machine_busy": busy, "machine_busy_s": busy_s}


# biomaj ---------------------------------------------------------------------------------------


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def describe_failure(exc: Exception) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        return f"exit {exc.returncode}: {(exc.stderr or exc.stdout or '').strip()[-2000:]}"
    return str(exc)


def clean_environment() -> dict[str, str]:
    """This environment without any setting that would change biomaj's bus, state or config."""
    prefixes = ("RABBITMQ_", "REDIS_", "MONGO_", "BIOMAJ_CONFIG", "WEB_PORT")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def amqp_environment(vhost: str, prefix: str) -> dict[str, str]:
    env = clean_environment()
    env.update(RABBITMQ_HOST=RABBITMQ[0], RABBITMQ_PORT=str(RABBITMQ[1]), RABBITMQ_USER="guest",
               RABBITMQ_PASSWORD="guest", RABBITMQ_VHOST=vhost,
               REDIS_HOST=REDIS[0], REDIS_PORT=str(REDIS[1]), REDIS_PREFIX=prefix)
    return env


def bank_file(port: int) -> str:
    return f"""[GENERAL]
db.fullname=scale-out benchmark
db.formats=raw
dir.version=scaleout
offline.dir.name=offline/scaleout_tmp
protocol=http
server=127.0.0.1:{port}
remote.dir=/data/
release.file=
release.regexp=
remote.files=^f\\d+\\.dat$
local.files=^.*$
keep.old.version=1
"""


class Biomaj:
    """A biomaj root (`biomaj init`) with the bench bank, and the nodes of the current mode."""

    def __init__(self, python: Path, root: Path, port: int):
        self.exe = str(python.with_name("biomaj"))
        self.root = root
        self.config = root / "config.yml"
        self.logs = root.parent / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        run([self.exe, "init", str(root)], env=clean_environment())
        (root / "conf" / f"{BANK}.properties").write_text(bank_file(port))
        self.nodes: list[tuple[str, subprocess.Popen, Path]] = []

    def ctl(self, args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
        return run([self.exe, "-c", str(self.config), "ctl", *args], env=env, timeout=timeout)

    def limits(self) -> dict:
        """limits.downloads and limits.per_host as biomaj reads them."""
        code = ("import json, sys; from biomaj.config.service import load_config; from pathlib import Path; "
                "l = load_config(Path(sys.argv[1])).settings.limits; "
                "print(json.dumps({'downloads': l.downloads, 'per_host': l.per_host}))")
        out = run([str(Path(self.exe).with_name("python")), "-c", code, str(self.config)], env=clean_environment())
        return json.loads(out.stdout)

    # Nodes ------------------------------------------------------------------------------------
    def start_node(self, role: str, node_id: str, env: dict[str, str]) -> None:
        log_path = self.logs / f"{node_id}.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen([self.exe, "-c", str(self.config), "serve", "--role", role, "--node-id", node_id],
                                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes.append((node_id, proc, log_path))

    def start_nodes(self, downloaders: int, env: dict[str, str]) -> None:
        """A manager and `downloaders` download nodes, once every one is registered."""
        self.start_node("manager", f"bench-manager-x{downloaders}", env)
        for i in range(downloaders):
            self.start_node("download", f"bench-download-x{downloaders}-{i + 1}", env)
        self.wait_registered(env)

    def wait_registered(self, env: dict[str, str]) -> None:
        wanted = {node_id for node_id, _proc, _log in self.nodes}
        deadline = time.monotonic() + NODES_TIMEOUT
        seen: set[str] = set()
        while time.monotonic() < deadline:
            for node_id, proc, _log in self.nodes:
                if proc.poll() is not None:
                    raise BenchError(f"node {node_id} exited with code {proc.returncode} at start")
            try:
                listed = json.loads(self.ctl(["--json", "nodes"], env, timeout=30).stdout)
                seen = {n["node_id"] for n in listed}
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError):
                pass
            if wanted <= seen:
                return
            time.sleep(0.5)
        raise BenchError(f"nodes not registered after {NODES_TIMEOUT:.0f} s: missing {sorted(wanted - seen)}")

    def stop_nodes(self) -> None:
        for _node_id, proc, _log in self.nodes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for node_id, proc, _log in self.nodes:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"  node {node_id} still running {STOP_TIMEOUT:.0f} s after SIGTERM: SIGKILL", file=sys.stderr)
                proc.kill()
                proc.wait()
        self.nodes = []

    def node_logs_tail(self, lines: int = 25) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(out)

    # Jobs -------------------------------------------------------------------------------------
    def remove_all(self, env: dict[str, str]) -> None:
        """Every release deleted, so that the next update downloads everything; a bank without
        release (the first run) is not an error."""
        try:
            self.ctl(["remove-all", BANK, "--force"], env, timeout=300)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"remove-all failed: {exc}") from None
        except subprocess.CalledProcessError as exc:
            if not re.search(r"no (release|bank)|not found|nothing", (exc.stderr or "") + (exc.stdout or ""), re.IGNORECASE):
                raise BenchError(f"remove-all failed: {describe_failure(exc)}") from None

    def update(self, env: dict[str, str]) -> tuple[float, dict]:
        started = time.perf_counter()
        try:
            out = self.ctl(["--json", "update", BANK], env, timeout=UPDATE_TIMEOUT)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise BenchError(f"ctl update failed: {describe_failure(exc)}") from None
        return time.perf_counter() - started, json.loads(out.stdout)


# Reading a run ----------------------------------------------------------------------------------


def log_time(line: str) -> float:
    """The timestamp of a session log line (`2024-05-01 12:00:00,123 INFO ...`)."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def session_figures(log_file: Path) -> tuple[float | None, dict[str, int]]:
    """(seconds of the download phase, files downloaded per node) from a session log."""
    start = end = None
    split: dict[str, int] = {}
    for line in log_file.read_text(errors="replace").splitlines():
        if line.endswith("Workflow:Start:download"):
            start = log_time(line)
        elif line.endswith("Workflow:Start:download:checksum"):
            end = log_time(line)
        elif "Workflow:wf_download:downloaded by node: " in line:
            for part in line.split("downloaded by node: ", 1)[1].split(", "):
                node, _, count = part.rpartition(" ")
                split[node] = int(count)
    seconds = end - start if start is not None and end is not None else None
    return seconds, split


def check_job(job: dict, files: int) -> None:
    if job.get("state") != "done":
        raise BenchError(f"update ended {job.get('state')}: {job.get('error')}")
    result = job.get("result") or {}
    release_dir = Path(result.get("release_dir") or "")
    if not result.get("release_dir") or not release_dir.is_dir():
        raise BenchError(f"update done but no release directory: {result}")
    count = sum(1 for p in release_dir.rglob("*") if p.is_file())
    if count != files:
        raise BenchError(f"release directory {release_dir} holds {count} files, expected {files}")


def measure_mode(biomaj: Biomaj, remote: Remote, env: dict[str, str], args, label: str) -> list[dict]:
    runs = []
    for rep in range(args.reps):
        biomaj.remove_all(env)
        requests_before = remote.requests
        meter = CpuMeter(biomaj.nodes)
        wall, job = biomaj.update(env)
        cpu = meter.result()
        check_job(job, args.files)
        log_file = Path(job["result"]["log_file"])
        download_s, split = session_figures(log_file)
        record = {
            "wall_s": wall,
            "job_s": job["finished"] - job["started"],
            "download_s": download_s,
            "by_node": split,
            "requests": remote.requests - requests_before,
            "log_file": str(log_file),
            "cpu_s": cpu,
        }
        runs.append(record)
        where = ", ".join(f"{n} {c}" for n, c in sorted(split.items()))
        download = f"{download_s:.2f} s" if download_s is not None else "?"
        print(f"  {label} rep {rep + 1}: wall {wall:.2f} s, job {record['job_s']:.2f} s, download phase {download}, "
              f"{record['requests']} requests; by node: {where}; CPU s: {describe_cpu(cpu)}", file=sys.stderr)
    return runs


def describe_cpu(cpu: dict) -> str:
    parts = [f"{node} {seconds:.2f}" for node, seconds in cpu["nodes"].items() if seconds is not None]
    parts += [f"ctl {cpu['ctl']:.2f}", f"remote server {cpu['bench']:.2f}"]
    parts += [f"{name} {seconds:.2f}" for name, seconds in cpu["services"].items()]
    if cpu["machine_busy"] is not None:
        parts.append(f"cores {cpu['machine_busy']:.0%} busy")
    return ", ".join(parts)


def run_mode(biomaj: Biomaj, remote: Remote, downloaders: int, env: dict[str, str], args) -> list[dict]:
    label = f"amqp x{downloaders}" if downloaders else "in-process"
    print(f"{label}: ...", file=sys.stderr)
    try:
        if downloaders:
            biomaj.start_nodes(downloaders, env)
        return measure_mode(biomaj, remote, env, args, label)
    finally:
        biomaj.stop_nodes()


# Report -----------------------------------------------------------------------------------------


def cpu_groups(cpu: dict) -> dict[str, float]:
    """CPU seconds of one update by kind of process; `cores busy` is a fraction of all cores.
    A large `other` means something else ran on the machine during the update."""
    nodes = cpu["nodes"]
    groups = {
        "manager node": sum(v or 0.0 for n, v in nodes.items() if "manager" in n),
        "download nodes": sum(v or 0.0 for n, v in nodes.items() if "download" in n),
        "ctl": cpu["ctl"],
        "remote server": cpu["bench"],
        **cpu["services"],
    }
    if cpu["machine_busy"] is not None:
        # what the machine's cores did besides: other workloads, the kernel's share of I/O ...
        groups["other (machine busy minus the above)"] = max(0.0, cpu["machine_busy_s"] - sum(groups.values()))
        groups["cores busy"] = cpu["machine_busy"]
    return groups


def summarize(files: int, results: list[tuple[str, int, list[dict]]]) -> list[dict]:
    rows = []
    for mode, nodes, runs in results:
        downloads = [r["download_s"] for r in runs if r["download_s"]]
        rows.append({
            "mode": mode,
            "download_nodes": nodes or 1,
            "wall_s": statistics.median(r["wall_s"] for r in runs),
            "job_s": statistics.median(r["job_s"] for r in runs),
            "update_files_s": files / statistics.median(r["job_s"] for r in runs),
            "download_files_s": files / statistics.median(downloads) if downloads else None,
            "requests": statistics.median(r["requests"] for r in runs),
            "cpu_s": {k: statistics.median(cpu_groups(r["cpu_s"])[k] for r in runs)
                      for k in cpu_groups(runs[0]["cpu_s"])},
            "runs": runs,
        })
    inproc = next(r for r in rows if r["mode"] == "in-process")
    one = next(r for r in rows if r["mode"] == "amqp" and r["download_nodes"] == 1)
    for row in rows:
        row["speedup_vs_1"] = row["update_files_s"] / one["update_files_s"] if row["mode"] == "amqp" else None
        row["download_speedup_vs_1"] = (row["download_files_s"] / one["download_files_s"]
                                        if row["mode"] == "amqp" and row["download_files_s"] and one["download_files_s"]
                                        else None)
        row["vs_in_process"] = row["update_files_s"] / inproc["update_files_s"]
    return rows


def targets(rows: list[dict]) -> dict:
    inproc = next(r for r in rows if r["mode"] == "in-process")
    one = next(r for r in rows if r["mode"] == "amqp" and r["download_nodes"] == 1)
    four = next((r for r in rows if r["mode"] == "amqp" and r["download_nodes"] == 4), None)
    scale = four["update_files_s"] / one["update_files_s"] if four else None
    overhead = one["update_files_s"] / inproc["update_files_s"]
    return {
        "scale_4_over_1": scale,
        "scale_target_met": scale is not None and scale >= 3.0,
        "amqp_over_in_process": overhead,
        "overhead_target_met": overhead >= 0.8,
    }


def fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def print_report(args, limits: dict, notes: list[str], rows: list[dict], verdicts: dict) -> None:
    print(f"\nScale-out benchmark: {args.files} files x {args.size} B over HTTP, {args.latency * 1000:.0f} ms per request, "
          f"{args.reps} repetitions (medians)")
    print(f"limits per node (config.yml defaults): downloads {limits['downloads']}, "
          f"per_host {limits['per_host']} (for the whole cluster); {os.cpu_count()} CPUs")
    for note in notes:
        print(note)
    print("\n| mode | download nodes | wall s | job s | update files/s | download-phase files/s | "
          "speed-up vs 1 node (update / download) | vs in-process |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        speedup = ("-" if r["speedup_vs_1"] is None else
                   f"{r['speedup_vs_1']:.2f} / {fmt(r['download_speedup_vs_1'])}")
        print(f"| {r['mode']} | {r['download_nodes']} | {r['wall_s']:.2f} | {r['job_s']:.2f} | "
              f"{r['update_files_s']:.0f} | {fmt(r['download_files_s'], '.0f')} | {speedup} | {r['vs_in_process']:.2f} |")
    print("\nfiles downloaded by each node, per repetition (session logs, `downloaded by node:`):")
    for r in rows:
        if r["mode"] == "amqp" and r["download_nodes"] > 1:
            splits = ["; ".join(f"{node} {count}" for node, count in sorted(run["by_node"].items()))
                      for run in r["runs"]]
            print(f"  {r['mode']} x{r['download_nodes']}: " + " | ".join(splits))
    print("CPU seconds per update (median), by process, and how busy the cores were:")
    for r in rows:
        parts = [f"{k} {v:.0%}" if k == "cores busy" else f"{k} {v:.2f}" for k, v in r["cpu_s"].items()
                 if k == "cores busy" or v > 0]
        print(f"  {r['mode']} x{r['download_nodes']}: " + ", ".join(parts))
    print("HTTP requests per update (median): "
          + ", ".join(f"{r['mode']} x{r['download_nodes']} {r['requests']:g}" for r in rows))
    print(f"\ntarget: 4 download nodes >= 3 x the files/s of 1: {fmt(verdicts['scale_4_over_1'], '.2f', ' x')} "
          f"{'PASS' if verdicts['scale_target_met'] else 'MISS'}")
    print(f"target: AMQP x1 within 20 % of in-process: {verdicts['amqp_over_in_process']:.2f} x "
          f"{'PASS' if verdicts['overhead_target_met'] else 'MISS'}")


# Main -------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000, help="files in the bank (default 2000)")
    parser.add_argument("--size", type=int, default=1024, help="bytes per file (default 1024)")
    parser.add_argument("--latency", type=float, default=0.020, help="seconds added to every request (default 0.020)")
    parser.add_argument("--reps", type=int, default=3, help="updates per mode (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of tables")
    parser.add_argument("--python", type=Path, default=PROJECT / ".venv" / "bin" / "python",
                        help="the venv python whose `biomaj` is run")
    args = parser.parse_args()
    if args.files < 1 or args.reps < 1 or args.size < 0 or args.latency < 0:
        parser.error("--files and --reps must be >= 1, --size and --latency >= 0")

    for name, address in (("RabbitMQ", RABBITMQ), ("Redis", REDIS)):
        if not port_open(address):
            print(f"{name} does not answer on {address[0]}:{address[1]}: start it first "
                  f"(this benchmark needs RabbitMQ and Redis)", file=sys.stderr)
            return 2

    # SIGTERM (e.g. `timeout`) ends the run like Ctrl-C does: through the `finally` below, which
    # stops the nodes (they run in sessions of their own) and deletes the vhost.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    shutil.rmtree(ROOT, ignore_errors=True)
    make_files(ROOT / "remote", args.files, args.size)
    remote = Remote(ROOT / "remote", args.latency)
    vhost = Vhost()
    prefix = f"biomaj-bench-{os.getpid()}"
    biomaj = None
    try:
        remote.start()
        vhost.create()
        notes = [vhost.note, f"Redis prefix {prefix}; remote http://127.0.0.1:{remote.port}/data/"]
        biomaj = Biomaj(args.python, ROOT / "biomaj-root", remote.port)
        limits = biomaj.limits()
        results = []
        for mode, downloaders in MODES:
            env = amqp_environment(vhost.name, prefix) if mode == "amqp" else clean_environment()
            results.append((mode, downloaders, run_mode(biomaj, remote, downloaders, env, args)))
    except BenchError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        if biomaj is not None:
            print(biomaj.node_logs_tail(), file=sys.stderr)
        return 1
    finally:
        if biomaj is not None:
            biomaj.stop_nodes()
        vhost.delete()
        forget_redis_keys(prefix)
        remote.stop()

    rows = summarize(args.files, results)
    verdicts = targets(rows)
    if args.json:
        print(json.dumps({"files": args.files, "size": args.size, "latency": args.latency, "reps": args.reps,
                          "cpus": os.cpu_count(), "limits": limits, "notes": notes, "modes": rows, "targets": verdicts},
                         indent=2))
    else:
        print_report(args, limits, notes, rows, verdicts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
