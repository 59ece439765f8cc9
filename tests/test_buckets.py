"""biomaj/buckets.py: bucket addresses, credentials found as the AWS tools find them, the client,
and obstore's errors read back, against moto's S3 server (tests/servers/s3_server.py)."""

from __future__ import annotations

import hashlib

import obstore
import pytest

from biomaj import buckets
from biomaj.errors import ConfigError


def test_targets_parse_into_endpoint_bucket_and_prefix():
    assert buckets.parse_target("s3://my-bank/mirror/") == ("https://s3.amazonaws.com", "my-bank", "mirror")
    assert buckets.parse_target("http://127.0.0.1:9000/banks/a/b") == ("http://127.0.0.1:9000", "banks", "a/b")
    assert buckets.parse_target("minio.example.org/banks") == ("https://minio.example.org", "banks", "")
    for bad in ("s3://", "http://host", "host/../x", "host/Bad_Bucket!/x", "ftp://host/bkt", "http://u:p@host/bkt",
                "http://127.0.0.1:9000/banks/mirror      # or s3://bucket/prefix for AWS"):
        with pytest.raises(ConfigError):
            buckets.parse_target(bad)


def test_endpoints_default_to_https_and_refuse_paths_and_passwords():
    assert buckets.endpoint_url("s3.amazonaws.com") == "https://s3.amazonaws.com"
    assert buckets.endpoint_url("http://127.0.0.1:9000/") == "http://127.0.0.1:9000"
    for bad in ("", "http://host/bucket", "http://host:99999", "http://key:secret@host"):
        with pytest.raises(ConfigError) as caught:
            buckets.endpoint_url(bad)
        assert "secret" not in str(caught.value) or "server.credentials" in str(caught.value)


def test_addressing_is_virtual_on_aws_and_gcs_path_elsewhere():
    assert buckets.BucketAccess("https://s3.amazonaws.com", "ncbi-blast-databases").virtual_hosted
    assert buckets.BucketAccess("https://storage.googleapis.com", "gcp-public").virtual_hosted
    assert not buckets.BucketAccess("https://s3.amazonaws.com", "dotted.name").virtual_hosted  # TLS wildcard
    assert not buckets.BucketAccess("http://127.0.0.1:9000", "local").virtual_hosted
    assert buckets.BucketAccess("http://127.0.0.1:9000", "local", addressing="virtual").virtual_hosted


def test_credentials_come_from_the_bank_then_env_then_profiles(tmp_path):
    access = buckets.BucketAccess("https://s3.amazonaws.com", "bkt")
    (tmp_path / "credentials").write_text("[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n"
                                          "[prod]\naws_access_key_id = PROD\naws_secret_access_key = prodsecret\n")
    (tmp_path / "config").write_text("[profile prod]\nregion = eu-west-3\n")
    files = {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"), "AWS_CONFIG_FILE": str(tmp_path / "config")}
    env = {**files, "AWS_ACCESS_KEY_ID": "ENV", "AWS_SECRET_ACCESS_KEY": "envsecret"}
    assert buckets.credentials(access, ("BANK", "banksecret"), environ=env).access_key == "BANK"
    assert buckets.credentials(access, environ=env).access_key == "ENV"
    assert buckets.credentials(access, environ=files).access_key == "DEF"
    assert buckets.credentials(access, environ={**files, "AWS_PROFILE": "prod"}).access_key == "PROD"
    named = buckets.BucketAccess("https://s3.amazonaws.com", "bkt", profile="prod")
    found = buckets.credentials(named, environ=env)
    assert (found.access_key, found.source) == ("PROD", "profile prod")
    assert "prodsecret" not in repr(found)
    assert buckets.region_for(named, environ=files) == "eu-west-3"
    assert buckets.credentials(buckets.BucketAccess("https://x", "bkt", anonymous=True), ("K", "S"), environ=env) is None
    assert buckets.credentials(access, environ={"HOME": str(tmp_path / "nohome")}) is None  # anonymous
    with pytest.raises(ConfigError, match="no such profile"):
        buckets.credentials(buckets.BucketAccess("https://x", "bkt", profile="nope"), environ=files)


def test_region_from_the_endpoint_name():
    assert buckets.region_for(buckets.BucketAccess("https://s3.eu-west-3.amazonaws.com", "b"), environ={}) == "eu-west-3"
    assert buckets.region_for(buckets.BucketAccess("http://127.0.0.1:9000", "b"), environ={}) == "us-east-1"
    assert buckets.region_for(buckets.BucketAccess("http://x", "b"), environ={"AWS_REGION": "ap-south-1"}) == "ap-south-1"


def test_etags_tell_an_md5_from_a_multipart_upload():
    data = b"x" * 100
    assert buckets.etag_md5(f'"{hashlib.md5(data).hexdigest()}"') == hashlib.md5(data).hexdigest()
    parts = [hashlib.md5(b"a").digest(), hashlib.md5(b"b").digest()]
    multipart = buckets.multipart_etag(parts)
    assert buckets.etag_md5(multipart) is None and buckets.multipart_parts(multipart) == 2


async def test_a_signed_client_reads_and_failures_read_back(s3_auth, bucket_name):
    s3_auth.make_bucket(bucket_name)
    etag = s3_auth.put(bucket_name, "d/x.txt", b"hello")
    access = buckets.BucketAccess(s3_auth.endpoint, bucket_name)
    good = buckets.open_store(access, buckets.Credentials(s3_auth.access_key, s3_auth.secret_key))
    got = await obstore.get_async(good, "d/x.txt")
    assert bytes(await got.bytes_async()) == b"hello" and got.meta["e_tag"] == etag

    async def failure(store, path="d/x.txt") -> buckets.Failure:
        with pytest.raises(Exception) as caught:
            await obstore.get_async(store, path)
        return buckets.read_failure(caught.value)

    assert (await failure(good, "d/none")).status == 404
    anonymous = await failure(buckets.open_store(access, None))
    assert (anonymous.status, anonymous.code) == (403, "AccessDenied")
    wrong = await failure(buckets.open_store(access, buckets.Credentials(s3_auth.access_key, "wrong-secret")))
    assert (wrong.status, wrong.code) == (403, "SignatureDoesNotMatch")
    assert "wrong-secret" not in wrong.text
    refused = await failure(buckets.open_store(buckets.BucketAccess("http://127.0.0.1:1", "bkt"), None))
    assert refused.connection == "connection refused" and refused.status is None


async def test_anonymous_reads_a_public_bucket_only(s3_open, bucket_name):
    s3_open.make_bucket(bucket_name, public=True)
    s3_open.make_bucket(bucket_name + "-p")
    for name in (bucket_name, bucket_name + "-p"):
        s3_open.put(name, "x", b"1")
    public = buckets.open_store(buckets.BucketAccess(s3_open.endpoint, bucket_name), None)
    assert bytes(await (await obstore.get_async(public, "x")).bytes_async()) == b"1"
    private = buckets.open_store(buckets.BucketAccess(s3_open.endpoint, bucket_name + "-p"), None)
    with pytest.raises(Exception) as caught:
        await obstore.get_async(private, "x")
    assert buckets.read_failure(caught.value).status == 403
