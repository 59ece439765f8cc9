"""Publishing releases to a bucket (publish.s3), as a user runs it: real `biomaj ctl` commands on
the example bank of `biomaj init` (protocol=local), against moto's S3 server (the tests' stand-in
for AWS, with signatures checked: the `s3_auth` fixture), inspected with boto3."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

PART = 8 * 1024 * 1024
# No AWS credentials or profiles of the machine: only what a test gives
ENV = {k: v for k, v in os.environ.items() if k not in ("BIOMAJ_CONFIG", "BIOMAJ_DEBUG") and not k.startswith("AWS_")}
ENV.update(AWS_SHARED_CREDENTIALS_FILE="/nonexistent/credentials", AWS_CONFIG_FILE="/nonexistent/config")


def _ctl(root: Path, biomaj_cmd: list[str], *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*biomaj_cmd, "-c", str(root / "config.yml"), "ctl", *args], capture_output=True,
                            text=True, env=ENV, timeout=300)
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _publish_to(root: Path, s3, bucket: str, *, secret: str | None = None, **keys: str) -> None:
    conf = root / "conf" / "example.properties"
    lines = [f"publish.s3={s3.endpoint}/{bucket}/mirror",
             f"publish.s3.credentials={s3.access_key}:{secret or s3.secret_key}",
             *(f"{key.replace('_', '.')}={value}" for key, value in keys.items())]
    conf.write_text(conf.read_text() + "\n".join(lines) + "\n")


def _new_release(root: Path, number: int) -> None:
    (root / "example-remote" / "release.txt").write_text(f"Release {number}\n")


def _etag(data: bytes) -> str:
    """S3's ETag of an object uploaded as biomaj does: one PUT up to 8 MiB, 8 MiB parts above."""
    if len(data) <= PART:
        return f'"{hashlib.md5(data).hexdigest()}"'
    parts = [hashlib.md5(data[i:i + PART]).digest() for i in range(0, len(data), PART)]
    return f'"{hashlib.md5(b"".join(parts)).hexdigest()}-{len(parts)}"'


def _local(release_dir: Path) -> dict[str, Path]:
    return {str(p.relative_to(release_dir)): p for p in release_dir.rglob("*") if p.is_file() and not p.is_symlink()}


def _assert_mirrored(s3, bucket: str, release_dir: Path) -> None:
    """Every file of the release in the bucket, with its size and ETag, and nothing more."""
    prefix = f"mirror/example/{release_dir.name}/"
    objects = s3.objects(bucket, prefix)
    local = _local(release_dir)
    assert sorted(objects) == sorted(prefix + name for name in local)
    for name, path in local.items():
        data = path.read_bytes()
        assert objects[prefix + name] == (len(data), _etag(data)), name


def _marker(s3, bucket: str) -> str | None:
    try:
        return s3.get(bucket, "mirror/example/current").decode()
    except s3.client.exceptions.NoSuchKey:
        return None


def _status(root: Path, biomaj_cmd: list[str]) -> dict:
    return json.loads(_ctl(root, biomaj_cmd, "status", "example", "--json").stdout)


def test_releases_go_to_the_bucket_verified_and_the_marker_names_the_published_one(
        biomaj_root, biomaj_cmd, s3_auth, bucket_name):
    s3_auth.make_bucket(bucket_name)
    big = os.urandom(PART + 12345)  # a multipart upload of two parts
    (biomaj_root / "example-remote" / "example-big.fasta").write_bytes(big)
    _publish_to(biomaj_root, s3_auth, bucket_name)
    data = biomaj_root / "data" / "example"

    followed = _ctl(biomaj_root, biomaj_cmd, "update", "example", "--follow")
    assert re.search(r"(?m)^\[example\] upload to the bucket: 5/5 files, 8\.\d MiB of 8\.\d MiB$", followed.stderr)
    _assert_mirrored(s3_auth, bucket_name, data / "example_1")
    assert "mirror/example/example_1/ro-crate-metadata.json" in s3_auth.objects(bucket_name)
    assert _marker(s3_auth, bucket_name) == "example_1\n"
    head = s3_auth.head(bucket_name, "mirror/example/example_1/flat/example-big.fasta")
    assert head["Metadata"]["sha256"] == hashlib.sha256(big).hexdigest()  # the provenance file's digest
    url = f"s3://127.0.0.1:{s3_auth.port}/{bucket_name}/mirror/example/example_1/"
    shown = _status(biomaj_root, biomaj_cmd)["buckets"]
    assert [(r["Release"], r["Bucket"], r["Complete"], r["Current"]) for r in shown] == [("1", url, "yes", "yes")]
    assert url in _ctl(biomaj_root, biomaj_cmd, "status", "example").stdout

    _new_release(biomaj_root, 2)
    _ctl(biomaj_root, biomaj_cmd, "update", "example")
    assert _marker(s3_auth, bucket_name) == "example_2\n"
    _assert_mirrored(s3_auth, bucket_name, data / "example_2")
    assert s3_auth.objects(bucket_name, "mirror/example/example_1/")  # keep.old.version=1 keeps it
    shown = {r["Release"]: r["Current"] for r in _status(biomaj_root, biomaj_cmd)["buckets"]}
    assert shown == {"1": "no", "2": "yes"}

    _new_release(biomaj_root, 3)
    _ctl(biomaj_root, biomaj_cmd, "update", "example")  # keep.old.version=1 removes release 1, here and there
    assert _marker(s3_auth, bucket_name) == "example_3\n"
    assert not (data / "example_1").exists() and s3_auth.objects(bucket_name, "mirror/example/example_1/") == {}

    _ctl(biomaj_root, biomaj_cmd, "publish", "example", "--release", "2")
    assert _marker(s3_auth, bucket_name) == "example_2\n"
    _ctl(biomaj_root, biomaj_cmd, "unpublish", "example")
    assert _marker(s3_auth, bucket_name) is None
    assert s3_auth.objects(bucket_name, "mirror/example/example_2/")  # the objects stay
    assert {r["Release"]: r["Current"] for r in _status(biomaj_root, biomaj_cmd)["buckets"]} == {"2": "no", "3": "no"}
    _ctl(biomaj_root, biomaj_cmd, "publish", "example", "--release", "3")
    _ctl(biomaj_root, biomaj_cmd, "remove", "example", "--release", "2")
    assert s3_auth.objects(bucket_name, "mirror/example/example_2/") == {}
    assert _marker(s3_auth, bucket_name) == "example_3\n"
    _assert_mirrored(s3_auth, bucket_name, data / "example_3")


def test_wrong_credentials_fail_the_update_with_the_cause_and_no_secret(biomaj_root, biomaj_cmd, s3_auth, bucket_name):
    s3_auth.make_bucket(bucket_name)
    conf = biomaj_root / "conf" / "example.properties"
    conf.write_text(conf.read_text().replace("keep.old.version=1", "keep.old.version=0"))
    _publish_to(biomaj_root, s3_auth, bucket_name)
    _ctl(biomaj_root, biomaj_cmd, "update", "example")
    wrong = "not-the-secret-" + "x" * 20
    conf.write_text(conf.read_text().replace(s3_auth.secret_key, wrong))
    _new_release(biomaj_root, 2)
    result = _ctl(biomaj_root, biomaj_cmd, "update", "example", ok=False)
    assert result.returncode == 1
    error = next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    url = f"s3://127.0.0.1:{s3_auth.port}/{bucket_name}/mirror/"
    assert error == (f"error: update of example failed: publish:publish_s3: bank example: the store refused the "
                     "signature of the access key from publish.s3.credentials: its secret is wrong "
                     f"publishing to {url} (403 SignatureDoesNotMatch: The request signature we calculated does not "
                     "match the signature you provided. Check your key and signing method.); fix publish.s3.credentials; "
                     "release 2 stays published here; rerun `biomaj ctl update example` to finish it")
    logs = "".join(p.read_text() for p in (biomaj_root / "log").rglob("*.log"))
    for text in (result.stdout, result.stderr, logs, (biomaj_root / "db" / "biomaj.sqlite").read_bytes().decode("latin-1")):
        assert wrong not in text and s3_auth.access_key not in text
    # the release is done and published here; the bucket still serves release 1, whole
    data = biomaj_root / "data" / "example"
    assert os.readlink(data / "current") == "example_2" and "Release: 2" in (data / "RELEASE.txt").read_text()
    status = _status(biomaj_root, biomaj_cmd)
    assert status["bank"][0]["Published release"] == "2"
    assert {r["Release"]: (r["Complete"], r["Current"]) for r in status["buckets"]} == {"1": ("yes", "yes"),
                                                                                        "2": ("no", "no")}
    assert _marker(s3_auth, bucket_name) == "example_1\n"
    _assert_mirrored(s3_auth, bucket_name, data / "example_1")  # keep.old.version=0 spares what the marker names

    conf.write_text(conf.read_text().replace(wrong, s3_auth.secret_key))
    _ctl(biomaj_root, biomaj_cmd, "update", "example")  # nothing new upstream: the bucket catches up
    _assert_mirrored(s3_auth, bucket_name, data / "example_2")
    assert _marker(s3_auth, bucket_name) == "example_2\n"
    status = _status(biomaj_root, biomaj_cmd)
    assert {r["Release"]: (r["Complete"], r["Current"]) for r in status["buckets"]} == {"1": ("yes", "no"),
                                                                                        "2": ("yes", "yes")}


def test_an_update_with_nothing_new_brings_a_lagging_bucket_up_to_date(biomaj_root, biomaj_cmd, s3_auth, bucket_name):
    _ctl(biomaj_root, biomaj_cmd, "update", "example")  # no publish.s3 yet
    s3_auth.make_bucket(bucket_name)
    _publish_to(biomaj_root, s3_auth, bucket_name)
    result = _ctl(biomaj_root, biomaj_cmd, "update", "example")
    assert "no need to update" in result.stdout + result.stderr
    _assert_mirrored(s3_auth, bucket_name, biomaj_root / "data" / "example" / "example_1")
    assert _marker(s3_auth, bucket_name) == "example_1\n"
    s3_auth.client.delete_object(Bucket=bucket_name, Key="mirror/example/example_1/flat/release.txt")
    s3_auth.client.delete_object(Bucket=bucket_name, Key="mirror/example/current")
    _ctl(biomaj_root, biomaj_cmd, "update", "example")  # the record says complete: the marker is checked
    assert _marker(s3_auth, bucket_name) == "example_1\n"
    _assert_mirrored(s3_auth, bucket_name, biomaj_root / "data" / "example" / "example_1")


def test_check_refuses_bad_publish_settings_without_repeating_the_secret(biomaj_root, biomaj_cmd):
    conf = biomaj_root / "conf" / "example.properties"
    base = conf.read_text()
    for lines, expected in (
            (["publish.s3=http://127.0.0.1:9000"], "publish.s3='http://127.0.0.1:9000': expected endpoint/bucket/prefix"),
            (["publish.s3=s3://Bad_Bucket!/x"], "is not a bucket name"),
            (["publish.s3=s3://bkt/x", "publish.s3.credentials=onlyakeysecretpart"], "publish.s3.credentials must be KEY:SECRET"),
            (["publish.s3=s3://bkt/x", "publish.s3.addressing=sideways"], "publish.s3.addressing='sideways': expected auto, path"),
            (["publish.s3=s3://bkt/../x"], "'.' and '..' are not allowed")):
        conf.write_text(base + "\n".join(lines) + "\n")
        result = _ctl(biomaj_root, biomaj_cmd, "check", "example", ok=False)
        assert result.returncode != 0 and expected in result.stdout + result.stderr, result.stdout + result.stderr
        assert "onlyakeysecretpart" not in result.stdout + result.stderr


# --- SIGKILL mid-upload, then a rerun --------------------------------------------------------------


class _Reader(threading.Thread):
    """A reader of the bucket as a consumer would read it: the marker, then the listing of the
    directory it names; every snapshot is kept, to be checked against the finished releases."""

    def __init__(self, s3, bucket: str):
        super().__init__(daemon=True)
        self.s3, self.bucket = s3, bucket
        self.snapshots: list[tuple[str, dict[str, int]]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        import boto3
        from botocore.config import Config

        client = boto3.client("s3", endpoint_url=self.s3.endpoint, aws_access_key_id=self.s3.access_key,
                              aws_secret_access_key=self.s3.secret_key, region_name="us-east-1",
                              config=Config(s3={"addressing_style": "path"}))
        try:
            while not self.stop.is_set():
                try:
                    named = client.get_object(Bucket=self.bucket, Key="mirror/example/current")["Body"].read().decode().strip()
                except client.exceptions.NoSuchKey:
                    named = None
                if named:
                    listed: dict[str, int] = {}
                    for page in client.get_paginator("list_objects_v2").paginate(
                            Bucket=self.bucket, Prefix=f"mirror/example/{named}/"):
                        listed.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
                    self.snapshots.append((named, listed))
                time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def test_a_sigkill_mid_upload_then_a_rerun_finishes_it_and_the_marker_never_names_a_half_release(
        biomaj_root, biomaj_cmd, s3_auth, bucket_name):
    s3_auth.make_bucket(bucket_name)
    config = biomaj_root / "config.yml"
    config.write_text(re.sub(r"(?m)^  per_host: \d+$", "  per_host: 1", config.read_text()))  # one upload at once
    _publish_to(biomaj_root, s3_auth, bucket_name)
    _ctl(biomaj_root, biomaj_cmd, "update", "example")
    reader = _Reader(s3_auth, bucket_name)
    reader.start()
    remote = biomaj_root / "example-remote"
    for i in range(800):
        (remote / f"example-{i:03}.fasta").write_bytes(b">s%d\n" % i + os.urandom(16 * 1024))
    _new_release(biomaj_root, 2)
    update = subprocess.Popen([*biomaj_cmd, "-c", str(config), "ctl", "update", "example"], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and update.poll() is None:
            if len(s3_auth.objects(bucket_name, "mirror/example/example_2/")) >= 20:
                break
            time.sleep(0.02)
        assert update.poll() is None, "the update ended before its upload could be killed"
        update.send_signal(signal.SIGKILL)
        update.wait(30)
    finally:
        if update.poll() is None:
            update.kill()
            update.wait()
    data = biomaj_root / "data" / "example"
    local = _local(data / "example_2")
    sent = s3_auth.objects(bucket_name, "mirror/example/example_2/")
    assert 0 < len(sent) < len(local), "killed mid-upload"
    assert _marker(s3_auth, bucket_name) == "example_1\n"

    locked = _ctl(biomaj_root, biomaj_cmd, "update", "example", ok=False)  # the dead run's lock is reported
    assert locked.returncode == 1 and "biomaj ctl unlock example" in locked.stderr
    _ctl(biomaj_root, biomaj_cmd, "unlock", "example")
    _ctl(biomaj_root, biomaj_cmd, "update", "example")
    reader.stop.set()
    reader.join(30)
    assert reader.error is None

    _assert_mirrored(s3_auth, bucket_name, data / "example_2")
    assert _marker(s3_auth, bucket_name) == "example_2\n"
    log = sorted((biomaj_root / "log" / "example").glob("*/example.log"))[-1].read_text()
    uploaded = re.search(r"publish_s3:\S+: (\d+) files \(.*\) verified, (\d+) uploaded now", log)
    assert uploaded and int(uploaded.group(1)) == len(local) and int(uploaded.group(2)) < len(local) - 10
    finished = {name: {f"mirror/example/{name}/{rel}": p.stat().st_size for rel, p in _local(data / name).items()}
                for name in ("example_1", "example_2")}
    seen = {named for named, _ in reader.snapshots}
    assert seen == {"example_1", "example_2"}, seen
    for named, listed in reader.snapshots:
        assert listed == finished[named], f"the marker named {named} while it was incomplete"
