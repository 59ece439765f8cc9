"""workflow/bucket_upload.py: a release directory copied into a bucket of moto's S3 server (the
tests' stand-in for AWS), verified by ETag, resumed from its journal and the bucket's listing."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from biomaj import buckets
from biomaj.workflow import bucket_upload
from biomaj.workflow.engine import Cancelled

MiB = 1024 * 1024


def _etag(data: bytes, part: int = 8 * MiB) -> str:
    if len(data) <= part:
        return f'"{hashlib.md5(data).hexdigest()}"'
    digests = [hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part)]
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'


def test_parts_are_8_mib_or_big_enough_for_10000():
    assert bucket_upload.part_size(1) == 8 * MiB
    assert bucket_upload.part_size(80_000 * MiB) == 8 * MiB
    huge = 200 * 1024 ** 3
    part = bucket_upload.part_size(huge)
    assert part % MiB == 0 and -(-huge // part) <= 10_000 and part == 21 * MiB


@pytest.fixture
def release(tmp_path) -> Path:
    root = tmp_path / "alu_1"
    (root / "flat" / "sub").mkdir(parents=True)
    (root / "flat" / "small.fa").write_bytes(b">a\nACGT\n")
    (root / "flat" / "sub" / "empty.txt").write_bytes(b"")
    (root / "flat" / "big.fa").write_bytes(os.urandom(17 * MiB + 5))  # three parts
    (root / "flat" / "link.fa").symlink_to("small.fa")  # an object store has no links: not uploaded
    return root


def _store(s3, bucket: str):
    access = buckets.BucketAccess(s3.endpoint, bucket)
    return access, buckets.open_store(access, buckets.Credentials(s3.access_key, s3.secret_key))


def _expected(release: Path, prefix: str) -> dict[str, tuple[int, str]]:
    return {prefix + str(p.relative_to(release)): (p.stat().st_size, _etag(p.read_bytes()))
            for p in release.rglob("*") if p.is_file() and not p.is_symlink()}


async def test_a_release_is_mirrored_verified_and_stale_objects_pruned(s3_auth, bucket_name, release, tmp_path):
    s3_auth.make_bucket(bucket_name)
    s3_auth.put(bucket_name, "m/alu/alu_1/flat/gone.fa", b"of an older release of the same name")
    s3_auth.put(bucket_name, "m/alu/alu_10/keep.fa", b"another release: not under the prefix")
    access, store = _store(s3_auth, bucket_name)
    journal = bucket_upload.Journal(tmp_path / "cache" / "journal.jsonl")
    seen = []

    async def progress(state):
        seen.append((state.files_done, state.bytes_done))

    state = await bucket_upload.upload_release(store, access, release, "m/alu/alu_1/", journal=journal,
                                               progress=progress)
    assert s3_auth.objects(bucket_name, "m/alu/alu_1/") == _expected(release, "m/alu/alu_1/")
    assert s3_auth.objects(bucket_name, "m/alu/alu_10/")  # untouched
    assert (state.uploaded, state.removed, state.files_total) == (3, 1, 3)
    assert seen[-1] == (3, state.bytes_total) and len(journal.load()) == 3


async def test_a_rerun_sends_only_what_the_bucket_lacks_or_holds_wrong(s3_auth, bucket_name, release, tmp_path):
    s3_auth.make_bucket(bucket_name)
    access, store = _store(s3_auth, bucket_name)
    journal = bucket_upload.Journal(tmp_path / "journal.jsonl")
    await bucket_upload.upload_release(store, access, release, "p/", journal=journal)
    s3_auth.client.delete_object(Bucket=bucket_name, Key="p/flat/small.fa")  # lost
    s3_auth.put(bucket_name, "p/flat/sub/empty.txt", b"")  # the same, but not in the journal (a kill before its line)
    lines = [line for line in journal.path.read_text().splitlines() if "empty.txt" not in line]
    journal.path.write_text("\n".join(lines) + "\n{\"key\": \"torn")  # and a line torn by the kill
    big = (release / "flat" / "big.fa").read_bytes()
    s3_auth.put(bucket_name, "p/flat/big.fa", big[::-1])  # same size, other content: its ETag tells

    state = await bucket_upload.upload_release(store, access, release, "p/", journal=journal)
    assert state.uploaded == 2  # small.fa and big.fa; empty.txt was found right by its ETag
    assert s3_auth.objects(bucket_name, "p/") == _expected(release, "p/")
    assert set(journal.load()) == {"p/flat/small.fa", "p/flat/big.fa", "p/flat/sub/empty.txt"}

    again = await bucket_upload.upload_release(store, access, release, "p/", journal=journal)
    assert again.uploaded == 0 and again.files_done == 3


async def test_a_cancel_stops_before_the_next_object(s3_auth, bucket_name, release, tmp_path):
    s3_auth.make_bucket(bucket_name)
    access, store = _store(s3_auth, bucket_name)
    cancelled = asyncio.Event()
    cancelled.set()
    with pytest.raises(Cancelled):
        await bucket_upload.upload_release(store, access, release, "p/", journal=bucket_upload.Journal(tmp_path / "j"),
                                           cancelled=cancelled)
    assert s3_auth.objects(bucket_name, "p/") == {}


async def test_a_refused_upload_reads_back_the_status_and_code(s3_auth, bucket_name, release, tmp_path):
    s3_auth.make_bucket(bucket_name)
    access = buckets.BucketAccess(s3_auth.endpoint, bucket_name)
    store = buckets.open_store(access, buckets.Credentials(s3_auth.access_key, "wrong-secret"))
    with pytest.raises(bucket_upload.UploadFailed) as caught:
        await bucket_upload.upload_release(store, access, release, "p/", journal=bucket_upload.Journal(tmp_path / "j"))
    assert (caught.value.failure.status, caught.value.failure.code) == (403, "SignatureDoesNotMatch")
    assert "wrong-secret" not in str(caught.value)
