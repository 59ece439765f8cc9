"""workflow/bucket_publish.py: what a user reads when the bucket refuses a release, cause first and
the fix after, never a secret; against moto's S3 server (the tests' stand-in for AWS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from biomaj import buckets
from biomaj.workflow import bucket_publish, bucket_upload


@pytest.fixture
def release(tmp_path) -> Path:
    (tmp_path / "alu_1" / "flat").mkdir(parents=True)
    (tmp_path / "alu_1" / "flat" / "alu.fa").write_bytes(b">alu\nACGT\n")
    return tmp_path / "alu_1"


async def _refusal(access: buckets.BucketAccess, creds, release: Path) -> str:
    with pytest.raises(bucket_upload.UploadFailed) as caught:
        await bucket_upload.upload_release(buckets.open_store(access, creds), access, release, "p/",
                                           journal=bucket_upload.Journal(release.parent / "journal"))
    return await bucket_publish.explain(caught.value, bucket_publish.Target(access, creds), "alu")


async def test_refusals_lead_with_their_cause_and_say_the_fix(s3_auth, bucket_name, release):
    missing = buckets.BucketAccess(s3_auth.endpoint, bucket_name, "mirror")
    url = f"s3://127.0.0.1:{s3_auth.port}/{bucket_name}/mirror/"
    good = buckets.Credentials(s3_auth.access_key, s3_auth.secret_key, source="publish.s3.credentials")
    assert await _refusal(missing, good, release) == (
        f"bank alu: the bucket {bucket_name} does not exist on {s3_auth.endpoint} publishing to {url} (404 "
        "NoSuchBucket: The specified bucket does not exist); create it or fix publish.s3")
    s3_auth.make_bucket(bucket_name)
    assert await _refusal(missing, None, release) == (
        f"bank alu: access denied: the bucket is private and no credentials were found publishing to {url} (403 "
        "AccessDenied: Access Denied); set publish.s3.credentials=KEY:SECRET, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
        "or publish.s3.profile")
    unknown = await _refusal(missing, buckets.Credentials("AKIAUNKNOWNKEY", "some-secret", source="profile prod"),
                             release)
    assert unknown.startswith(f"bank alu: the access key from profile prod is unknown to {s3_auth.endpoint} "
                              "publishing to ")
    assert unknown.endswith("; fix profile prod")
    assert "some-secret" not in unknown and "AKIAUNKNOWNKEY" not in unknown
    nobody = buckets.BucketAccess("http://127.0.0.1:1", "bkt")
    assert await _refusal(nobody, None, release) == (
        "bank alu: cannot reach http://127.0.0.1:1 (connection refused) publishing to s3://127.0.0.1:1/bkt/; "
        "check the endpoint of publish.s3")


async def test_a_bucket_in_another_region_names_the_region_to_set(s3_auth, release, tmp_path):
    """AWS answers a request sent to another region's endpoint with 301 PermanentRedirect, the
    region in a header obstore does not pass on: it is asked for, and the fix names it."""
    from tests.servers import s3_server
    from tests.servers.faults import Faults

    (tmp_path / "tree").mkdir()
    server = await s3_server.start(tmp_path / "tree", Faults(), moved_to="ap-southeast-2")
    try:
        access = buckets.BucketAccess(server.config.options["s3.endpoint"], server.bucket, "mirror")
        creds = buckets.Credentials(s3_auth.access_key, s3_auth.secret_key, source="publish.s3.credentials")
        message = await _refusal(access, creds, release)
    finally:
        await server.close()
    assert message.startswith("bank alu: the bucket is in another region publishing to ")
    assert message.endswith("; set publish.s3.region=ap-southeast-2")
