"""A real S3 API server on 127.0.0.1 for the bucket tests: moto's server mode, a stand-in for AWS.

moto (``moto[server]``) implements the S3 REST API over HTTP (ListObjectsV2, ranged GET,
multipart upload, bulk delete, SigV4 signatures). It runs in its own process (it is a threaded
WSGI server: in the test's process it would share the event loop's GIL-bound thread)::

    server = MotoS3(auth=True)       # started on a free port; server.endpoint, .access_key, .secret_key
    server.make_bucket("bank-data")
    server.put("bank-data", "blast/db.tar.gz", data)
    server.objects("bank-data", "blast/")   # {key: (size, etag)}, read with boto3, not with biomaj's code
    server.stop()

Without ``auth`` every signed request is accepted whatever its key, and unsigned ones read what a
bucket policy opens to anyone (``make_bucket(name, public=True)``: a public bucket). With ``auth`` moto
checks every signature against an IAM user made at start (its key is ``access_key``/
``secret_key``): a wrong secret gets 403 SignatureDoesNotMatch, an unknown key 403
InvalidAccessKeyId. moto 5 answers an unsigned request with auth on by crashing (500: it reads the
Authorization header unconditionally); AWS answers 403 AccessDenied to it, and so does the small
WSGI layer in front of moto here (the only thing this module adds to moto's behaviour).

``python -m tests.servers.s3_server [--auth]`` runs the server alone and prints one JSON line
(port, key, secret) when it listens.

For the protocol conformance suite, :func:`start` serves a tree like the other server modules: the
tree is uploaded into a new bucket of one moto process shared by the test session (:func:`shared`),
and a small aiohttp reverse proxy in front of it forwards every request unchanged (the Host header
too: a signature covers it) and injects the faults of :class:`~tests.servers.faults.Faults` on
object GETs. The tree stays the source of truth: files a test writes or changes in it are uploaded
before the next request is forwarded.
"""

from __future__ import annotations

import asyncio
import atexit
import html
import json
import os
import subprocess
import sys
import uuid
import weakref
from pathlib import Path

from biomaj.protocols.base import RemoteConfig
from tests.servers.faults import Faults, RateCap, RunningServer

PROJECT = Path(__file__).resolve().parents[2]
ACCESS_DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                 b"<Message>Access Denied</Message></Error>")


class MotoS3:
    """moto's S3 server in a child process, and boto3 helpers to arrange and inspect buckets."""

    def __init__(self, *, auth: bool = False):
        self.auth = auth
        env = dict(os.environ, PYTHONPATH=str(PROJECT), AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.servers.s3_server", *(["--auth"] if auth else [])],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=str(PROJECT))
        line = self.process.stdout.readline()
        if not line:
            self.process.kill()
            raise RuntimeError("moto's S3 server did not start (is moto[server] installed? make install)")
        info = json.loads(line)
        self.port: int = info["port"]
        self.access_key: str = info["access_key"]
        self.secret_key: str = info["secret_key"]
        self._client = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def server(self) -> str:
        """The bank's ``server=`` value for this endpoint."""
        return self.endpoint

    @property
    def client(self):
        """A boto3 S3 client signed with the server's key (the tests' own view of the buckets)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key, region_name="us-east-1",
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        return self._client

    def make_bucket(self, name: str, *, public: bool = False) -> str:
        """A new bucket; ``public``: anyone may list it and read its objects (a bucket policy with
        ``Principal: *``, as public data buckets have), on a server without ``auth`` only."""
        self.client.create_bucket(Bucket=name)
        if public:
            self.client.put_bucket_policy(Bucket=name, Policy=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject", "s3:ListBucket"],
                               "Resource": [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"]}]}))
        return name

    def put(self, bucket: str, key: str, data: bytes) -> str:
        """Store one object; its ETag."""
        return self.client.put_object(Bucket=bucket, Key=key, Body=data)["ETag"]

    def get(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def objects(self, bucket: str, prefix: str = "") -> dict[str, tuple[int, str]]:
        """Every object under ``prefix``: key -> (size, ETag)."""
        found: dict[str, tuple[int, str]] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = (item["Size"], item["ETag"])
        return found

    def head(self, bucket: str, key: str) -> dict:
        return self.client.head_object(Bucket=bucket, Key=key)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> MotoS3:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# The conformance server: a bucket behind a fault-injecting proxy ----------------------------------

_SHARED: MotoS3 | None = None
BLOCK = 256 * 1024
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te", "trailer"}


def shared() -> MotoS3:
    """One moto process (without auth) for the whole test session, started on first use and
    stopped when the tests end (a process per test would cost ~0.8 s each)."""
    global _SHARED
    if _SHARED is None or _SHARED.process.poll() is not None:
        _SHARED = MotoS3()
        atexit.register(_SHARED.stop)
    return _SHARED


class _TreeMirror:
    """Keeps a bucket equal to a local tree: files new or changed since the last look (size and
    mtime) are uploaded, files gone are deleted."""

    def __init__(self, moto: MotoS3, bucket: str, tree: Path):
        self.moto, self.bucket, self.tree = moto, bucket, tree
        self._known: dict[str, tuple[int, int]] = {}
        self._lock = asyncio.Lock()

    async def sync(self) -> None:
        async with self._lock:
            now = {}
            for path in self.tree.rglob("*"):
                if path.is_file():
                    st = path.stat()
                    now[path.relative_to(self.tree).as_posix()] = (st.st_size, st.st_mtime_ns)
            changed = [key for key, facts in now.items() if self._known.get(key) != facts]
            gone = [key for key in self._known if key not in now]
            if changed or gone:
                await asyncio.to_thread(self._apply, changed, gone)
            self._known = now

    def _apply(self, changed: list[str], gone: list[str]) -> None:
        for key in changed:
            self.moto.put(self.bucket, key, (self.tree / key).read_bytes())
        if gone:
            self.moto.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in gone]})

    def empty(self) -> None:
        keys = list(self.moto.objects(self.bucket))
        for start in range(0, len(keys), 1000):
            self.moto.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})
        self.moto.client.delete_bucket(Bucket=self.bucket)


def _s3_error(status: int, code: str, message: str, extra: str = ""):
    from aiohttp import web

    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>{extra}</Error>'
    return web.Response(status=status, text=body, content_type="application/xml")


def _evil_contents(names: list[str]) -> str:
    return "".join(f"<Contents><Key>{html.escape(name)}</Key><LastModified>2020-09-13T12:26:40.000Z</LastModified>"
                   f'<ETag>"{"0" * 32}"</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>'
                   for name in names)


async def _blocks(content, size: int, *, flip: bool = False):
    """The body in blocks of exactly ``size`` bytes (the last one shorter), as a file server
    sends them: a fault "after the first block" comes after a whole block. ``flip``: the first
    byte inverted (a body that no longer matches its ETag)."""
    buffer = bytearray()
    async for data in content.iter_any():
        buffer += data
        if flip and buffer:
            buffer[0] ^= 0xFF
            flip = False
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


async def start(tree: Path, faults: Faults, *, protocol: str = "s3", corrupt: set[str] | None = None,
                region: str | None = None, partial_as_200: bool = False, first_byte_delay: float = 0.0,
                moved_to: str | None = None) -> RunningServer:
    """Serve `tree` from a bucket of the shared moto server, through a proxy on 127.0.0.1 (a free
    port) honouring `faults`. ``corrupt``: keys whose GET bodies get their first byte flipped (a
    body that does not match its ETag). ``region``: the bucket is in that region, and a request
    signed for another one gets AWS's answer (400 AuthorizationHeaderMalformed naming the region:
    moto does not check regions). ``partial_as_200``: a ranged GET is answered 200 with the range's
    bytes and its Content-Range, as rclone's ``serve s3`` does. ``first_byte_delay``: seconds before
    each object GET is answered (moto itself reads a whole object before its first byte, whatever
    the range). ``moved_to``: every request is answered as AWS answers one sent to the wrong regional
    endpoint: 301 PermanentRedirect, the bucket's region in ``x-amz-bucket-region`` and its endpoint
    in the body, no Location. ``RunningServer.seen``: (method, path and query) of each request; ``.ranges``: (key, Range header)
    of each object GET."""
    import aiohttp
    from aiohttp import web

    from tests.servers.http_server import write_body

    moto = shared()
    bucket = f"conformance-{uuid.uuid4().hex[:16]}"
    await asyncio.to_thread(moto.make_bucket, bucket)
    mirror = _TreeMirror(moto, bucket, Path(tree).resolve())
    await mirror.sync()
    session = aiohttp.ClientSession(auto_decompress=False, connector=aiohttp.TCPConnector(limit=0))
    connections: weakref.WeakSet = weakref.WeakSet()
    seen: list[tuple[str, str]] = []
    ranges: list[tuple[str, str | None]] = []  # (key, Range header) of each object GET
    corrupt = corrupt if corrupt is not None else set()

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append((request.method, request.path_qs))
        if request.transport is not None and request.transport not in connections:
            connections.add(request.transport)
            faults.logins += 1
        await mirror.sync()
        if moved_to is not None:
            response = _s3_error(301, "PermanentRedirect", "The bucket you are attempting to access must be addressed "
                                 "using the specified endpoint. Please send all future requests to this endpoint.",
                                 f"<Endpoint>{bucket}.s3.{moved_to}.amazonaws.com</Endpoint><Bucket>{bucket}</Bucket>")
            response.headers["x-amz-bucket-region"] = moved_to
            return response
        signed_for = request.headers.get("Authorization", "").partition("/")[2].split("/")[1:2]
        if region is not None and signed_for and signed_for[0] != region:
            return _s3_error(400, "AuthorizationHeaderMalformed", f"The authorization header is malformed; the region "
                             f"'{signed_for[0]}' is wrong; expecting '{region}'", f"<Region>{region}</Region>")
        _, _, key = request.path.lstrip("/").partition("/")
        if request.method == "GET" and key:
            ranges.append((key, request.headers.get("Range")))
            faults.transfer_started(key)
            try:
                if faults.take(faults.throttle, key):
                    return _s3_error(503, "SlowDown", "Please reduce your request rate.")
                if faults.take(faults.transient_errors, key):
                    return _s3_error(500, "InternalError", "We encountered an internal error. Please try again.")
                if faults.take(faults.not_found, key):
                    return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
                await asyncio.sleep(first_byte_delay)
                return await forward(request, key)
            finally:
                faults.transfer_ended()
        return await forward(request, None)

    async def forward(request: web.Request, key: str | None) -> web.StreamResponse:
        headers = {name: value for name, value in request.headers.items() if name.lower() not in _HOP}
        body = await request.read()
        async with session.request(request.method, moto.endpoint + request.raw_path, headers=headers,
                                   data=body or None, allow_redirects=False) as upstream:
            out_headers = {name: value for name, value in upstream.headers.items() if name.lower() not in _HOP}
            listing = request.method == "GET" and key is None and "list-type" in request.query
            if listing and faults.evil_names and not request.query.get("prefix") and upstream.status == 200:
                text = (await upstream.read()).decode()
                text = text.replace("</ListBucketResult>", _evil_contents(faults.evil_names) + "</ListBucketResult>")
                return web.Response(status=200, body=text.encode(), headers=out_headers)
            status = 200 if partial_as_200 and upstream.status == 206 else upstream.status
            response = web.StreamResponse(status=status, headers=out_headers)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            if request.method == "HEAD":
                await response.write_eof()
                return response
            drop = faults.drop_after.pop(key, None) if key else None
            stall = faults.stall.pop(key, None) if key else None
            cap = RateCap(faults.rate if key else 0)
            blocks = _blocks(upstream.content, cap.block(BLOCK), flip=key in corrupt and upstream.status in (200, 206))
            try:
                return await write_body(request, response, blocks, cap=cap, drop=drop, stall=stall)
            except aiohttp.ClientError:  # moto's side failed: the client sees a cut
                return response

    app = web.Application(client_max_size=1024 ** 3)
    app.router.add_route("*", "/{path:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    async def stop() -> None:
        await runner.cleanup()
        await session.close()
        await asyncio.to_thread(mirror.empty)

    config = RemoteConfig(protocol="s3", host="127.0.0.1", port=port, root=f"{bucket}/", user=moto.access_key,
                          password=moto.secret_key, connect_timeout=10.0,
                          options={"s3.endpoint": f"http://127.0.0.1:{port}"})
    server = RunningServer(config=config, faults=faults, stop=stop)
    server.seen = seen  # type: ignore[attr-defined]
    server.ranges = ranges  # type: ignore[attr-defined]
    server.bucket = bucket  # type: ignore[attr-defined]
    server.moto = moto  # type: ignore[attr-defined]
    return server


# The server process ------------------------------------------------------------------------------


def _deny_unsigned(app):
    """AWS's answer to an unsigned request when authentication is on: 403 AccessDenied."""

    def middleware(environ, start_response):
        query = environ.get("QUERY_STRING", "")
        signed = "HTTP_AUTHORIZATION" in environ or "X-Amz-Signature=" in query
        if not signed and not environ.get("PATH_INFO", "").startswith("/moto-api"):
            start_response("403 Forbidden", [("Content-Type", "application/xml"),
                                             ("Content-Length", str(len(ACCESS_DENIED)))])
            return [ACCESS_DENIED]
        return app(environ, start_response)

    return middleware


def _serve(auth: bool) -> None:
    import threading

    import boto3
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.moto_server.threaded_moto_server import MotoRequestHandler
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, _deny_unsigned(app) if auth else app, threaded=True,
                         request_handler=MotoRequestHandler)
    port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    key, secret = "test", "test"
    if auth:
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, aws_access_key_id="setup", aws_secret_access_key="setup",
                           region_name="us-east-1")
        iam.create_user(UserName="biomaj-test")
        made = iam.create_access_key(UserName="biomaj-test")["AccessKey"]
        iam.put_user_policy(UserName="biomaj-test", PolicyName="s3-all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key, secret = made["AccessKeyId"], made["SecretAccessKey"]
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from now on every request is authenticated
        ActionAuthenticatorMixin.request_count = 0
    print(json.dumps({"port": port, "access_key": key, "secret_key": secret}), flush=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    _serve("--auth" in sys.argv[1:])
