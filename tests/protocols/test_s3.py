"""protocol=s3 against moto's S3 server (tests/servers/s3_server.py, the stand-in for AWS): the
listing (pages of 1,000 keys, one request per sub-directory, folder markers), matching, the ETag as
an MD5 (and a multipart one that is not), credentials right and wrong, private and public buckets,
and keys that would climb out. Resume after a cut connection, retries, throttling and split
transfers run in the shared conformance suite (test_*_conformance.py, parametrised with s3)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
from dataclasses import replace

import obstore
import pytest

from biomaj.buckets import BucketAccess, Credentials, open_store
from biomaj.download.engine import PART_SUFFIX, ClientPool, FetchFailed, Fetcher, FetchSettings
from biomaj.download.matching import match_files
from biomaj.download.paths import safe_join
from biomaj.download.retry import RetryPolicy
from biomaj.protocols import open_protocol
from biomaj.protocols.base import FatalError, RemoteConfig, RemoteNotFound, Unreachable, UnsafePath
from tests.servers import s3_server
from tests.servers.faults import Faults

ONE_TRY = RetryPolicy.parse("stop_after_attempt(1)", "wait_none")


def bank(endpoint: str, bucket: str, prefix: str = "", key: str | None = None, secret: str | None = None,
         **options: str) -> RemoteConfig:
    """The RemoteConfig of a bank with server=endpoint, remote.dir=bucket/prefix/."""
    return RemoteConfig(protocol="s3", host="127.0.0.1", port=int(endpoint.rsplit(":", 1)[1]),
                        root=f"{bucket}/{prefix}", user=key, password=secret,
                        options={"s3.endpoint": endpoint, **options}, connect_timeout=10.0)


@pytest.fixture
def no_aws_env(monkeypatch, tmp_path):
    """No AWS credentials anywhere: what a machine without them has."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


async def put_many(endpoint: str, bucket: str, keys: list[str], data: bytes = b"x") -> None:
    store = open_store(BucketAccess(endpoint, bucket), Credentials("test", "test"))
    gate = asyncio.Semaphore(32)

    async def put(key: str) -> None:
        async with gate:
            await obstore.put_async(store, key, data)

    await asyncio.gather(*(put(key) for key in keys))


async def listing(client, path: str = "") -> dict:
    return {entry.path: entry async for entry in client.list(path)}


# --- listing ---------------------------------------------------------------------------------------


async def test_listing_pages_over_1000_keys_and_skips_a_sub_directory_in_one_request(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    server = await s3_server.start(tree, Faults())
    try:
        files = [f"data/f{i:04d}.txt" for i in range(1050)]
        deep = [f"data/big/k{i:04d}" for i in range(1050)] + ["data/small/one", "data/small/two/three"]
        await put_many(server.moto.endpoint, server.bucket, files + deep)
        server.seen.clear()
        async with open_protocol(replace(server.config, root=f"{server.bucket}/data/")) as client:
            streamed = client.list()
            first = await anext(streamed)  # streamed: the first entry comes with the first page
            requests_for_first = len(server.seen)
            await streamed.aclose()
            server.seen.clear()
            entries = await listing(client)
            small = await listing(client, "small")
    finally:
        await server.close()
    assert (first.path, first.is_dir, requests_for_first) == ("big", True, 1)
    assert {p for p, e in entries.items() if e.is_dir} == {"big", "small"}
    assert sorted(p for p, e in entries.items() if not e.is_dir) == sorted(f.removeprefix("data/") for f in files)
    assert set(small) == {"small/one", "small/two"} and small["small/two"].is_dir
    lists = [query for method, query in server.seen if "list-type=2" in query]
    # "big/" comes first: its keys fill the first page, so the second request starts after them,
    # reads 1,000 files, the third the 50 others and "small/"; then one request lists "small".
    assert len(lists) == 4, lists
    assert sum("start-after=data%2Fbig%2F" in query and "continuation-token" not in query for query in lists) == 1


async def test_folder_markers_are_not_files(s3_open, bucket_name):
    s3_open.make_bucket(bucket_name)
    for key, data in (("db/", b""), ("db/a.fa", b">a\n"), ("db/sub/", b""), ("db/sub/b.fa", b">b\n"),
                      ("db/empty.txt", b""), ("db/z.txt", b"z")):
        s3_open.put(bucket_name, key, data)
    config = bank(s3_open.endpoint, bucket_name, "db/", "test", "test")
    async with open_protocol(config) as client:
        top = await listing(client)
        sub = await listing(client, "sub")
        with pytest.raises(RemoteNotFound, match="no such folder"):
            await listing(client, "missing")
    assert {p: e.is_dir for p, e in top.items()} == {"a.fa": False, "sub": True, "empty.txt": False, "z.txt": False}
    assert top["empty.txt"].size == 0
    assert set(sub) == {"sub/b.fa"}


async def test_entries_carry_size_date_etag_and_md5(s3_open, bucket_name):
    s3_open.make_bucket(bucket_name)
    etag = s3_open.put(bucket_name, "a.fa", b">a\nACGT\n")
    head = s3_open.head(bucket_name, "a.fa")
    async with open_protocol(bank(s3_open.endpoint, bucket_name, key="test", secret="test")) as client:
        listed = (await listing(client))["a.fa"]
        stat = await client.stat("a.fa")
    for entry in (listed, stat):
        assert entry.size == 8 and entry.etag == etag and entry.hash == etag
        assert entry.checksum == "md5:" + hashlib.md5(b">a\nACGT\n").hexdigest()
        assert entry.mtime == head["LastModified"].timestamp()


# --- matching and download ---------------------------------------------------------------------------


async def test_remote_files_patterns_select_keys_as_for_other_protocols(s3_open, bucket_name, tmp_path):
    s3_open.make_bucket(bucket_name)
    for key in ("mirror/release.txt", "mirror/blast/nt.00.tar.gz", "mirror/blast/nt.01.tar.gz",
                "mirror/blast/nt.json", "mirror/other/deep/x.txt", "elsewhere/y.txt"):
        s3_open.put(bucket_name, key, key.encode())
    config = bank(s3_open.endpoint, bucket_name, "mirror/", "test", "test")
    async with open_protocol(config) as client:
        tars = await match_files(client, r"^blast/nt\.\d+\.tar\.gz$")
        grouped = await match_files(client, r"^(blast)/(nt\.json)$")
        everything = await match_files(client, "**/*")
    assert sorted(m.save_as for m in tars) == ["blast/nt.00.tar.gz", "blast/nt.01.tar.gz"]
    assert [m.save_as for m in grouped] == ["blast/nt.json"]
    assert sorted(m.save_as for m in everything) == [
        "blast/nt.00.tar.gz", "blast/nt.01.tar.gz", "blast/nt.json", "other/deep/x.txt", "release.txt"]
    pool = ClientPool()
    try:
        fetcher = Fetcher(pool, FetchSettings(retry=ONE_TRY))
        for m in everything:
            await fetcher.fetch(config, m.entry, safe_join(tmp_path, m.save_as), checksum=m.entry.checksum)
    finally:
        await pool.close()
    assert (tmp_path / "other" / "deep" / "x.txt").read_bytes() == b"mirror/other/deep/x.txt"


async def test_a_range_at_the_end_is_complete_and_past_it_starts_again(s3_open, bucket_name):
    """S3 answers 416 to a range past the object's end: a part that is whole already, or a
    shorter object than the part (it changed): read from 0 again."""
    s3_open.make_bucket(bucket_name)
    s3_open.put(bucket_name, "a.fa", b"0123456789")
    async with open_protocol(bank(s3_open.endpoint, bucket_name, key="test", secret="test")) as client:
        async with client.open("a.fa", 10) as stream:
            assert (stream.offset, stream.size, [bytes(c) async for c in stream]) == (10, 10, [])
        async with client.open("a.fa", 12) as stream:
            assert (stream.offset, b"".join([bytes(c) async for c in stream])) == (0, b"0123456789")


async def test_a_body_that_does_not_match_its_etag_is_refused(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.fasta").write_bytes(b">a\n" + b"ACGT" * 5000)
    server = await s3_server.start(tree, Faults(), corrupt={"a.fasta"})
    pool = ClientPool()
    try:
        async with open_protocol(server.config) as client:
            entry = await client.stat("a.fasta")
        fetcher = Fetcher(pool, FetchSettings(retry=ONE_TRY))
        with pytest.raises(FetchFailed, match="md5") as failure:
            await fetcher.fetch(server.config, entry, tmp_path / "out" / "a.fasta", checksum=entry.checksum)
    finally:
        await pool.close()
        await server.close()
    assert failure.value.got_checksum and failure.value.got_checksum != entry.checksum
    assert not (tmp_path / "out" / "a.fasta").exists()


async def test_a_multipart_etag_is_not_taken_for_an_md5(s3_open, bucket_name, tmp_path):
    s3_open.make_bucket(bucket_name)
    data = hashlib.sha256(b"seed").digest() * (11 * 1024 * 1024 // 32)  # 11 MiB: three parts of 5 MiB
    store = open_store(BucketAccess(s3_open.endpoint, bucket_name), Credentials("test", "test"))
    await obstore.put_async(store, "big.bin", data, use_multipart=True, chunk_size=5 * 1024 * 1024)
    config = bank(s3_open.endpoint, bucket_name, key="test", secret="test")
    async with open_protocol(config) as client:
        entry = (await listing(client))["big.bin"]
    assert entry.etag.strip('"').endswith("-3") and entry.checksum is None
    assert entry.etag.strip('"').split("-")[0] != hashlib.md5(data).hexdigest()
    pool = ClientPool()
    try:
        result = await Fetcher(pool, FetchSettings(retry=ONE_TRY)).fetch(config, entry, tmp_path / "big.bin",
                                                                         checksum=entry.checksum)
    finally:
        await pool.close()
    assert (tmp_path / "big.bin").read_bytes() == data and not result.skipped


async def split_fetch(tmp_path, seed: bytes, mib: int, faults: Faults | None = None, **server_options):
    """Fetch one object of ``mib`` MiB made of ``seed``'s sha256 with splits allowed from 1 MiB;
    check its bytes and return the server (``.ranges``: the GETs it answered)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    data = hashlib.sha256(seed).digest() * (mib * 1024 * 1024 // 32)
    (tree / "big.bin").write_bytes(data)
    server = await s3_server.start(tree, faults or Faults(), **server_options)
    pool = ClientPool()
    try:
        async with open_protocol(server.config) as client:
            entry = await client.stat("big.bin")
        settings = FetchSettings(retry=ONE_TRY, split_min_size=1024 * 1024)
        await Fetcher(pool, settings).fetch(server.config, entry, tmp_path / "out" / "big.bin")
    finally:
        await pool.close()
        await server.close()
    assert (tmp_path / "out" / "big.bin").read_bytes() == data
    return server


async def test_a_big_object_starts_as_equal_ranges_at_once(tmp_path):
    """S3 serves ranges cheaply and caps each connection: the ranges open at once, as rclone's do,
    with no whole-object GET first (Features.split_start)."""
    from biomaj.protocols.s3 import S3Protocol

    count = S3Protocol.features.split_start
    assert count > 1
    server = await split_fetch(tmp_path, b"four", 12)
    first = sorted(header for key, header in server.ranges[:count] if key == "big.bin")
    part = 12 * 1024 * 1024 // count
    expected = [f"bytes={i * part}-{(i + 1) * part - 1}" for i in range(count - 1)] + [f"bytes={(count - 1) * part}-"]
    assert first == sorted(expected)  # the last range runs to the end
    assert all(header is not None for _, header in server.ranges)


async def test_a_slow_first_byte_keeps_a_range_from_being_split(tmp_path):
    """A new range costs the wait for the server's answer: a range is split only when its second
    half outlasts twice the slowest answer seen. On a server that answers each GET after 1 s (moto
    reads the whole object first) at 4 MiB/s a connection, the two starting ranges of 12 MiB are
    not split (a third GET would save less than it waits)."""
    server = await split_fetch(tmp_path, b"slow", 24, Faults(rate=4 * 1024 * 1024), first_byte_delay=1.0)
    assert [key for key, _ in server.ranges] == ["big.bin", "big.bin"], server.ranges  # no third GET


async def test_a_server_answering_ranges_with_200_is_read_whole(tmp_path, caplog):
    """rclone's ``serve s3`` answers a ranged GET with 200 and the range's bytes; obstore refuses
    such an answer. The object is then fetched whole over one connection, a split and a resume
    included, with one warning that says why."""
    tree = tmp_path / "tree"
    tree.mkdir()
    data = hashlib.sha256(b"whole").digest() * (12 * 1024 * 1024 // 32)
    (tree / "big.bin").write_bytes(data)
    (tree / "more.bin").write_bytes(data[::-1])
    server = await s3_server.start(tree, Faults(), partial_as_200=True)
    pool = ClientPool()
    out = tmp_path / "out"
    try:
        async with open_protocol(server.config) as client:
            entries = {name: await client.stat(name) for name in ("big.bin", "more.bin")}
        settings = FetchSettings(retry=ONE_TRY, split_min_size=1024 * 1024)
        await Fetcher(pool, settings).fetch(server.config, entries["big.bin"], out / "big.bin")
        part = out / ("more.bin" + PART_SUFFIX)  # an interrupted earlier run left half of it
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(data[::-1][: len(data) // 2])
        await Fetcher(pool, FetchSettings(retry=ONE_TRY)).fetch(server.config, entries["more.bin"], out / "more.bin")
    finally:
        await pool.close()
        await server.close()
    assert (out / "big.bin").read_bytes() == data
    assert (out / "more.bin").read_bytes() == data[::-1]
    assert [r.getMessage() for r in caplog.records if "instead of 206" in r.getMessage()]
    whole = [key for key, header in server.ranges if header is None]
    assert "big.bin" in whole and "more.bin" in whole


async def test_a_fast_transfer_ends_without_splitting_its_last_mebibytes(tmp_path):
    """On a fast link a range is split again only when its second half keeps a stream busy
    (split.STEAL_SECONDS): the object comes in the ranges it started with, no tail of small GETs
    (on moto each GET reads the whole object)."""
    from biomaj.protocols.s3 import S3Protocol

    server = await split_fetch(tmp_path, b"tail", 32)
    assert len(server.ranges) == S3Protocol.features.split_start, server.ranges


# --- credentials and access ----------------------------------------------------------------------


async def test_a_private_bucket_is_refused_without_credentials_and_read_with_them(s3_auth, bucket_name, no_aws_env):
    s3_auth.make_bucket(bucket_name)
    s3_auth.put(bucket_name, "db/a.fa", b">a\n")
    anonymous = bank(s3_auth.endpoint, bucket_name, "db/")
    async with open_protocol(anonymous) as client:
        with pytest.raises(FatalError) as refused:
            await listing(client)
    message = str(refused.value)
    assert message.startswith(f"s3://127.0.0.1:{s3_auth.port}/{bucket_name}/db/: access denied: the bucket is private")
    assert "server.credentials=KEY:SECRET" in message and "AWS_ACCESS_KEY_ID" in message
    signed = bank(s3_auth.endpoint, bucket_name, "db/", s3_auth.access_key, s3_auth.secret_key)
    async with open_protocol(signed) as client:
        assert set(await listing(client)) == {"a.fa"}
        async with client.open("a.fa") as stream:
            assert b"".join([bytes(chunk) async for chunk in stream]) == b">a\n"


@pytest.mark.parametrize("which", ["wrong secret", "unknown key"])
async def test_wrong_credentials_name_where_the_key_came_from_never_the_key_or_secret(s3_auth, bucket_name, which, no_aws_env):
    s3_auth.make_bucket(bucket_name)
    s3_auth.put(bucket_name, "a.fa", b">a\n")
    key, secret = ((s3_auth.access_key, "not-the-secret-0123456789") if which == "wrong secret"
                   else ("AKIAUNKNOWNKEY000000", s3_auth.secret_key))
    async with open_protocol(bank(s3_auth.endpoint, bucket_name, key=key, secret=secret)) as client:
        with pytest.raises(FatalError) as listed:
            await listing(client)
        with pytest.raises(FatalError) as read:
            async with client.open("a.fa") as stream:
                async for _ in stream:
                    pass
    for error in (listed.value, read.value):
        text = str(error)
        assert "the access key from server.credentials" in text, text
        assert secret not in text and key not in text
    expected = "its secret is wrong" if which == "wrong secret" else "is unknown to"
    assert expected in str(listed.value)


async def test_credentials_come_from_the_aws_variables_and_profiles(s3_auth, bucket_name, no_aws_env, monkeypatch,
                                                                    tmp_path):
    s3_auth.make_bucket(bucket_name)
    s3_auth.put(bucket_name, "a.fa", b">a\n")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_auth.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_auth.secret_key)
    async with open_protocol(bank(s3_auth.endpoint, bucket_name)) as client:
        assert set(await listing(client)) == {"a.fa"}
    (tmp_path / "no-credentials").write_text(f"[stale]\naws_access_key_id = {s3_auth.access_key}\n"
                                             "aws_secret_access_key = an-old-secret-0123\n")
    async with open_protocol(bank(s3_auth.endpoint, bucket_name, **{"s3.profile": "stale"})) as client:
        with pytest.raises(FatalError) as refused:
            await listing(client)
    assert "the access key from profile stale" in str(refused.value)
    assert "an-old-secret-0123" not in str(refused.value) and s3_auth.access_key not in str(refused.value)


async def test_a_public_bucket_is_read_anonymously(s3_open, bucket_name, no_aws_env, tmp_path):
    s3_open.make_bucket(bucket_name, public=True)
    s3_open.put(bucket_name, "blast/nt.00.tar.gz", b"volume")
    for config in (bank(s3_open.endpoint, bucket_name, "blast/"),  # no credentials found: unsigned
                   bank(s3_open.endpoint, bucket_name, "blast/", "ignored", "ignored", **{"s3.anonymous": "true"})):
        async with open_protocol(config) as client:
            (matched,) = await match_files(client, r"^nt\.\d+\.tar\.gz$")
        pool = ClientPool()
        try:
            await Fetcher(pool, FetchSettings(retry=ONE_TRY)).fetch(config, matched.entry, tmp_path / "nt.00.tar.gz",
                                                                   checksum=matched.entry.checksum)
        finally:
            await pool.close()
        assert (tmp_path / "nt.00.tar.gz").read_bytes() == b"volume"
        (tmp_path / "nt.00.tar.gz").unlink()


async def test_a_missing_bucket_says_so(s3_open, bucket_name):
    async with open_protocol(bank(s3_open.endpoint, bucket_name, key="test", secret="test")) as client:
        with pytest.raises(RemoteNotFound, match=f"the bucket {bucket_name} does not exist"):
            await listing(client)


async def test_an_unreachable_endpoint_is_named(free_port):
    config = bank(f"http://127.0.0.1:{free_port()}", "some-bucket", key="test", secret="test")
    async with open_protocol(config) as client:
        with pytest.raises(Unreachable, match=r"cannot reach http://127\.0\.0\.1:\d+: connection refused"):
            await listing(client)


@pytest.mark.parametrize("answer", [{"region": "eu-west-3"}, {"moved_to": "eu-west-3"}],
                         ids=["AuthorizationHeaderMalformed", "PermanentRedirect"])
async def test_a_bucket_of_another_region_says_which_region_to_set(tmp_path, answer):
    """AWS's two answers for a bucket of another region: 400 AuthorizationHeaderMalformed naming
    the region (a request signed for the wrong one), and on another region's endpoint 301
    PermanentRedirect without a Location, the region only in x-amz-bucket-region (obstore reads it
    as a redirect it cannot follow). Either fails at once, not after retries, with the region to set."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.fa").write_bytes(b">a\n")
    server = await s3_server.start(tree, Faults(), **answer)
    try:
        async with open_protocol(server.config) as client:
            with pytest.raises(FatalError, match=r"the bucket is in another region .*; set s3\.region=eu-west-3$"):
                await listing(client)
            with pytest.raises(FatalError, match=r"set s3\.region=eu-west-3$"):
                async with client.open("a.fa"):
                    pass
        if "region" in answer:  # signed for the right region, it reads
            config = replace(server.config, options={**server.config.options, "s3.region": "eu-west-3"})
            async with open_protocol(config) as client:
                assert set(await listing(client)) == {"a.fa"}
    finally:
        await server.close()


# --- safety --------------------------------------------------------------------------------------


async def test_a_key_that_climbs_out_is_refused(s3_open, bucket_name, tmp_path):
    s3_open.make_bucket(bucket_name)
    s3_open.put(bucket_name, "d/../../escape.txt", b"out")
    s3_open.put(bucket_name, "d/ok.txt", b"in")
    assert "d/../../escape.txt" in s3_open.objects(bucket_name)  # a real object of that name
    config = bank(s3_open.endpoint, bucket_name, key="test", secret="test")
    offline = tmp_path / "work" / "offline"
    offline.mkdir(parents=True)
    async with open_protocol(config) as client:
        with pytest.raises(UnsafePath, match=r"unsafe remote name .*\.\."):
            await match_files(client, "**/*")
        with pytest.raises(UnsafePath):
            async with client.open("d/../../escape.txt"):
                pass
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


# --- end to end ------------------------------------------------------------------------------------

S3_BANK = """[GENERAL]
db.fullname="A bank read from a private bucket"
db.name=s3bank
db.type=nucleic
db.formats=fasta
dir.version=s3bank
offline.dir.name=offline/s3bank_tmp
protocol=s3
server={endpoint}
remote.dir={bucket}/mirror/
server.credentials={key}:{secret}
remote.files=^release\\.txt$ ^fasta/.*\\.fa$
release.file=^release\\.txt$
release.regexp=Release\\s+(\\d+)
local.files=**/*
keep.old.version=1
"""


def test_ctl_update_mirrors_a_private_bucket_then_finds_nothing_new_and_never_shows_the_secret(
        s3_auth, bucket_name, biomaj_root, biomaj_cmd):
    s3_auth.make_bucket(bucket_name)
    files = {"mirror/release.txt": b"Release 7\n", "mirror/fasta/a.fa": b">a\nACGT\n",
             "mirror/fasta/b.fa": b">b\nTTGA\n" * 1000, "mirror/fasta/notes.txt": b"not wanted"}
    for key, data in files.items():
        s3_auth.put(bucket_name, key, data)
    (biomaj_root / "conf" / "s3bank.properties").write_text(S3_BANK.format(
        endpoint=s3_auth.endpoint, bucket=bucket_name, key=s3_auth.access_key, secret=s3_auth.secret_key))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BIOMAJ_CONFIG", "BIOMAJ_DEBUG"))}

    def ctl(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([*biomaj_cmd, "-c", str(biomaj_root / "config.yml"), "ctl", *args],
                                capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert s3_auth.secret_key not in result.stdout + result.stderr
        return result

    release_dir = biomaj_root / "data" / "s3bank" / "s3bank_7"
    assert ctl("update", "s3bank").stdout.strip() == f"s3bank: release 7 updated in {release_dir}"
    flat = release_dir / "flat"
    assert sorted(str(p.relative_to(flat)) for p in flat.rglob("*") if p.is_file()) == [
        "fasta/a.fa", "fasta/b.fa", "release.txt"]
    assert (flat / "fasta" / "b.fa").read_bytes() == files["mirror/fasta/b.fa"]
    assert ctl("update", "s3bank").stdout.strip() == "s3bank: no need to update, release 7 is current"
    shown = ctl("show", "s3bank", "--json").stdout
    assert [row["Release"] for row in json.loads(shown)] == ["7 (current)"]
    written = [p for p in (biomaj_root / "log").rglob("*") if p.is_file()]
    written += [p for p in release_dir.rglob("*") if p.is_file() and p.suffix in (".json", ".txt")]
    assert any(p.suffix == ".log" for p in written)
    for path in written:
        assert s3_auth.secret_key not in path.read_text(errors="replace"), path
    crate = json.loads((release_dir / "ro-crate-metadata.json").read_text())
    urls = [part.get("url") for part in crate["@graph"] if isinstance(part, dict) and part.get("url")]
    assert f"s3://127.0.0.1:{s3_auth.port}/{bucket_name}/mirror/fasta/a.fa" in urls
