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
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
