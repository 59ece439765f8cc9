#!/usr/bin/env python3
"""Where biomaj's time goes in one benchmark run: py-spy samples of bench/biomaj_mirror.py.

    python bench/profile.py small http          # mirror small/ over HTTP
    python bench/profile.py many ftp            # the 100,000-entry listing
    python bench/profile.py big ftp --rate 250

Needs py-spy in the project venv (`.venv/bin/python -m pip install py-spy`; for profiling only,
not a dependency of biomaj) and the bench servers up (`bash bench/servers.sh start`). Samples
every thread (the event loop and the to_thread/executor workers) with --threads, by default only
the thread holding the GIL (py-spy --gil: Python execution, not threads queueing for the GIL; use
--all-waits to see those too), without pausing the process (--nonblocking), then prints:

  - CPU per thread (event loop vs worker threads) against the wall time,
  - CPU by biomaj layer: the innermost biomaj frame of each sample (protocol module, engine,
    matching, ...), so library time (aiohttp, asyncio, os) is charged to the biomaj code that
    called it; samples with no biomaj frame are event-loop/library overhead or start-up,
  - the functions with the most self time and the most inclusive time.

The raw collapsed stacks stay in $BENCH_ROOT/profile/<data>-<proto>.txt (flamegraph.pl input).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
ROOT = Path(os.environ.get("BENCH_ROOT", "/tmp/biomaj-bench"))
HTTP = "127.0.0.1:" + os.environ.get("BENCH_HTTP_PORT", "18080")
FTP = "127.0.0.1:" + os.environ.get("BENCH_FTP_PORT", "12121")
FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for part in stack.split(";"):
        m = FRAME.match(part)
        out.append((m["fn"], m["file"]) if m else (part, ""))
    return out


def short(fn: str, file: str) -> str:
    if "biomaj/" in file:
        file = file[file.index("biomaj/"):]
    else:
        file = re.sub(r"^.*/(site-packages|python3\.\d+|lib)/", "", file)
    return f"{fn} ({file})" if file else fn


def layer(file: str, fn: str) -> str | None:
    if "biomaj_mirror.py" in file:
        return "bench driver: " + fn
    m = re.search(r"biomaj/(protocols|download)/(\w+)\.py", file)
    if m:
        return f"biomaj/{m[1]}/{m[2]}.py: {fn}"
    if "/biomaj/" in file:
        return "biomaj (other): " + fn
    return None


def analyse(path: Path, wall: float, rate: int, top: int) -> str:
    samples = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples[stack] += int(count)
    total = sum(samples.values())
    out = []
    w = out.append
    per_thread = collections.Counter()
    by_layer = collections.Counter()
    self_t = collections.Counter()
    incl = collections.Counter()
    main_thread = None
    for stack, n in samples.items():
        fr = frames(stack)
        thread = fr[0][0]
        body = fr[1:]
        is_import = any(f in ("_find_and_load", "<module>") and "importlib" in file or (f == "<module>" and "biomaj_mirror" not in file)
                        for f, file in body)
        if main_thread is None and body and body[0][0] == "<module>":
            main_thread = thread
        per_thread[thread] += n
        owner = None
        for fn, file in reversed(body):
            owner = layer(file, fn)
            if owner:
                break
        if is_import:
            owner = "start-up: imports"
        elif owner is None:
            owner = "no biomaj frame: " + (short(*body[-1]) if body else "?")
        elif "bench driver" in owner and body and "biomaj_mirror" not in body[-1][1]:
            owner = owner + " -> " + short(*body[-1])
        by_layer[(thread, owner)] += n
        if body:
            self_t[short(*body[-1])] += n
        for name in {short(*f) for f in body}:
            incl[name] += n
    ms = 1000.0 / rate
    w(f"wall {wall:.2f} s (under the profiler); {total} samples at {rate} Hz = {total * ms / 1000:.2f} s "
      "of Python execution over all threads (kernel time inside a system call is counted only while its "
      "thread holds the GIL: use perf for the kernel side)")
    w("")
    w("CPU per thread:")
    for t, n in per_thread.most_common():
        tag = " (main: event loop)" if t == main_thread else " (worker: to_thread/executor)"
        w(f"  {n * ms / 1000:7.2f} s  {100 * n / total:5.1f}%  {t}{tag}")
    w("")
    w("CPU by biomaj layer (innermost biomaj frame of each sample), main thread then workers:")
    merged = collections.Counter()
    for (t, owner), n in by_layer.items():
        merged[("main" if t == main_thread else "workers", owner)] += n
    for (t, owner), n in sorted(merged.items(), key=lambda kv: (kv[0][0] != "main", -kv[1]))[: top * 2]:
        w(f"  {n * ms / 1000:7.2f} s  {100 * n / total:5.1f}%  [{t}] {owner}")
    w("")
    w(f"Top {top} self time (all threads):")
    for name, n in self_t.most_common(top):
        w(f"  {n * ms / 1000:7.2f} s  {100 * n / total:5.1f}%  {name}")
    w("")
    w(f"Top {top} inclusive time (all threads):")
    for name, n in incl.most_common(top + 10)[: top]:
        w(f"  {n * ms / 1000:7.2f} s  {100 * n / total:5.1f}%  {name}")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", choices=("big", "small", "many"))
    ap.add_argument("proto", choices=("http", "ftp"))
    ap.add_argument("--rate", type=int, default=250, help="samples per second (default 250)")
    ap.add_argument("--all-waits", action="store_true",
                    help="also count threads waiting for the GIL (default: py-spy --gil, only the thread running Python)")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"))
    ap.add_argument("--match", action="store_true", help="many: profile match_files instead of list()")
    ap.add_argument("--analyse", metavar="RAW", help="only analyse an earlier raw file (needs --wall)")
    ap.add_argument("--wall", type=float, default=0.0)
    ap.add_argument("extra", nargs="*", help="more biomaj_mirror.py options (after --)")
    a = ap.parse_args(argv)
    if a.analyse:
        print(analyse(Path(a.analyse), a.wall, a.rate, a.top))
        return 0
    pyspy = Path(a.python).with_name("py-spy")
    if not pyspy.exists():
        raise SystemExit(f"no {pyspy}: {a.python} -m pip install py-spy")
    hp = HTTP if a.proto == "http" else FTP
    out_dir = ROOT / "out" / "profile"
    subprocess.run(["rm", "-rf", str(out_dir)], check=False)
    if a.data == "many":
        cmd = [a.python, str(BENCH / "biomaj_mirror.py"), "list", a.proto, hp, "/many/", *(["--match"] if a.match else [])]
    else:
        cmd = [a.python, str(BENCH / "biomaj_mirror.py"), "mirror", a.proto, hp, f"/{a.data}/", str(out_dir / a.data)]
    cmd += a.extra
    prof = ROOT / "profile"
    prof.mkdir(parents=True, exist_ok=True)
    raw = prof / f"{a.data}-{a.proto}{'-match' if a.match else ''}.txt"
    t0 = time.perf_counter()
    opts = ["--nonblocking"] + ([] if a.all_waits else ["--gil"])
    p = subprocess.run([str(pyspy), "record", "-r", str(a.rate), "--threads", *opts, "--format", "raw", "-o", str(raw), "--", *cmd],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    subprocess.run(["rm", "-rf", str(out_dir)], check=False)
    result = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    print("run:", " ".join(cmd))
    print("result:", result[-1] if result else p.stdout[-500:] + p.stderr[-500:])
    print(analyse(raw, wall, a.rate, a.top))
    print(f"\nraw stacks: {raw}")
    return 0 if p.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
