#!/usr/bin/env bash
# Create the benchmark data sets under $BENCH_ROOT/data (default /tmp/biomaj-bench/data).
# Idempotent and deterministic: the bytes come from a seeded PRNG, so every machine gets the
# same trees, and a tree already in place with the right names and sizes is kept.
#   big/   2 files x 512 MiB
#   small/ 2,000 files x 64 KiB in 20 subdirectories (sub00..sub19, 100 files each)
#   many/  100,000 files x 100 bytes in one flat directory (listing cost only)
#   small20k/ 20,000 files x 64 KiB in 20 subdirectories (1,000 each; not built by default)
# Usage: datasets.sh [--force] [big small many small20k]
set -eu
ROOT="${BENCH_ROOT:-/tmp/biomaj-bench}"
DATA="$ROOT/data"
FORCE=0
if [ "${1:-}" = "--force" ]; then FORCE=1; shift; fi
WHICH="${*:-big small many}"
mkdir -p "$DATA"
chmod 755 "$ROOT" "$DATA"
python3 - "$DATA" "$FORCE" $WHICH <<'PYEOF'
import os, random, shutil, sys, time
data, force, which = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
MiB = 1 << 20

def want(name, files):
    """files: list of (relpath, size). Rebuilds the tree unless it is already complete."""
    root = os.path.join(data, name)
    if not force and os.path.isdir(root):
        n = sum(len(fs) for _, _, fs in os.walk(root))
        if n == len(files) and all(os.path.getsize(os.path.join(root, p)) == s for p, s in files
                                   if os.path.isfile(os.path.join(root, p))) \
                and all(os.path.isfile(os.path.join(root, p)) for p, _ in files):
            print("[datasets] %-6s present (%d files)" % (name, n))
            return
    t = time.time()
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random("biomaj-bench-" + name)
    for p, s in files:
        path = os.path.join(root, p)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            left = s
            while left:
                n = min(left, 4 * MiB)
                f.write(rng.randbytes(n))
                left -= n
        os.chmod(path, 0o644)
    for d, _, _ in os.walk(root):
        os.chmod(d, 0o755)
    print("[datasets] %-6s built: %d files in %.1fs" % (name, len(files), time.time() - t))

SETS = {
    "big": lambda: [("file%d.bin" % i, 512 * MiB) for i in (1, 2)],
    "small": lambda: [("sub%02d/f%04d.dat" % (d, d * 100 + i), 64 * 1024) for d in range(20) for i in range(100)],
    "many": lambda: [("m%06d.txt" % i, 100) for i in range(100_000)],
    "small20k": lambda: [("sub%02d/f%05d.dat" % (d, d * 1000 + i), 64 * 1024) for d in range(20) for i in range(1000)],
}
for name in which:
    want(name, SETS[name]())
PYEOF
sync
du -sh "$DATA"/* 2>/dev/null
