"""S3-compatible buckets: where a bucket is, how to sign for it, and the client that reaches it.

One place for what the ``s3`` protocol (reading a bank from a bucket) and the publish to a bucket
(writing releases to one) share: the endpoint and bucket parsed from a bank's words, credentials
found as the AWS tools find them (never logged, never in a message), the
`obstore <https://developmentseed.org/obstore/>`_ client built from them, and an obstore error
read back into an HTTP status and S3 error code. obstore is imported on first use only.

Credentials, first found wins: the bank's own (``KEY:SECRET``), the named profile
(``s3.profile``), ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``), the
profile named by ``AWS_PROFILE`` or ``default`` in the shared credentials file
(``AWS_SHARED_CREDENTIALS_FILE``, else ``~/.aws/credentials``), else anonymous (unsigned
requests: public buckets). Instance metadata (EC2/ECS roles) is never asked for: on a machine
outside AWS it means seconds of timeouts before every first request.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping
from urllib.parse import urlsplit

from biomaj.errors import ConfigError

if TYPE_CHECKING:
    from obstore.store import S3Store

AWS_ENDPOINT = "s3.amazonaws.com"
DEFAULT_REGION = "us-east-1"
Addressing = Literal["auto", "path", "virtual"]

# S3 bucket names: 3-63 characters, lower case, digits, dots and hyphens (GCS allows "_" too)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
_AWS_REGION_HOST = re.compile(r"^s3[.-]([a-z0-9-]+)\.amazonaws\.com$")


@dataclass(frozen=True)
class Credentials:
    """An access key, its secret and an optional session token; secrets never in repr()."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    source: str = ""  # where they were found, for messages: "server.credentials", "profile prod" ...


@dataclass(frozen=True)
class BucketAccess:
    """One bucket on one endpoint and the settings to reach it (no secret: see :func:`credentials`)."""

    endpoint: str  # scheme://host[:port], no path
    bucket: str
    prefix: str = ""  # key prefix inside the bucket, no leading or trailing "/"
    region: str | None = None
    addressing: Addressing = "auto"
    profile: str | None = None  # a profile of the AWS shared credentials/config files
    anonymous: bool = False  # never sign, even when credentials are found

    @property
    def url(self) -> str:
        """``s3://`` form for messages and records: endpoint host, bucket and prefix, no secret."""
        host = urlsplit(self.endpoint).netloc
        return f"s3://{host}/{self.bucket}/{self.prefix + '/' if self.prefix else ''}"

    @property
    def address(self) -> str:
        """``host:port`` of the endpoint (the port made explicit): its key in the host budget."""
        parts = urlsplit(self.endpoint)
        return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"

    def key_url(self, key: str) -> str:
        """``s3://host/bucket/key`` of one object (or prefix) of the bucket, for messages and records."""
        return f"s3://{urlsplit(self.endpoint).netloc}/{self.bucket}/{key}"

    @property
    def virtual_hosted(self) -> bool:
        """Bucket in the host name (AWS's and GCS's own endpoints) rather than in the path
        (MinIO, Ceph and most S3-compatible stores, which have no wildcard DNS)."""
        if self.addressing != "auto":
            return self.addressing == "virtual"
        host = urlsplit(self.endpoint).hostname or ""
        return (host.endswith(".amazonaws.com") or host == "storage.googleapis.com") and "." not in self.bucket

    @property
    def bucket_http_url(self) -> str:
        """The bucket's own HTTP(S) URL on the endpoint (in the host name when virtual-hosted)."""
        parts = urlsplit(self.endpoint)
        if self.virtual_hosted:
            return f"{parts.scheme}://{self.bucket}.{parts.netloc}/"
        return f"{parts.scheme}://{parts.netloc}/{self.bucket}"

    def with_prefix(self, prefix: str) -> BucketAccess:
        return replace(self, prefix=prefix.strip("/"))


def endpoint_url(server: str, key: str = "server") -> str:
    """``scheme://host[:port]`` of an S3 endpoint written ``host``, ``host:port`` or as a URL
    (``http://127.0.0.1:9000``); https when no scheme is given. ConfigError for anything else."""
    server = server.strip().rstrip("/")
    if not server:
        raise ConfigError(f"{key} is not set: expected an S3 endpoint such as {AWS_ENDPOINT} or http://host:port")
    text = server if "://" in server else f"https://{server}"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"{key}={server!r}: not a valid endpoint ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
        raise ConfigError(f"{key}={server!r}: expected an S3 endpoint, http(s)://host[:port] or host[:port], "
                          "without a path (the bucket goes in remote.dir)")
    if parts.username or parts.password:
        raise ConfigError(f"{key}: credentials do not go in the endpoint; use server.credentials=KEY:SECRET")
    return f"{parts.scheme}://{parts.netloc}"


def check_bucket(bucket: str, key: str) -> str:
    """``bucket`` when it is a valid bucket name; ConfigError otherwise."""
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(f"{key}: {bucket!r} is not a bucket name (3-63 lower-case letters, digits, '.', '-', '_')")
    return bucket


def split_bucket_path(path: str, key: str) -> tuple[str, str]:
    """``bucket/some/prefix/`` -> (bucket, ``some/prefix``); a ``..`` component is refused."""
    if any(c.isspace() for c in path.strip()):
        raise ConfigError(f"{key}={path.strip()!r}: a bucket path has no spaces (a comment after the value? "
                          "bank files take comments on lines of their own)")
    parts = [p for p in path.strip().strip("/").split("/") if p]
    if not parts:
        raise ConfigError(f"{key} is empty: expected bucket/prefix/")
    if ".." in parts or "." in parts:
        raise ConfigError(f"{key}={path!r}: '.' and '..' are not allowed in a bucket path")
    return check_bucket(parts[0], key), "/".join(parts[1:])


def parse_target(value: str, key: str = "publish.s3") -> tuple[str, str, str]:
    """A bucket written as one string -> (endpoint URL, bucket, prefix).

    ``s3://bucket/prefix`` (AWS), ``host[:port]/bucket/prefix`` (https) or
    ``http(s)://host[:port]/bucket/prefix``."""
    value = value.strip()
    if value.startswith("s3://"):
        bucket, prefix = split_bucket_path(value[5:], key)
        return f"https://{AWS_ENDPOINT}", bucket, prefix
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "https", value
    host, slash, path = rest.partition("/")
    if not slash:
        raise ConfigError(f"{key}={value!r}: expected endpoint/bucket/prefix (s3://bucket/prefix for AWS)")
    bucket, prefix = split_bucket_path(path, key)
    return endpoint_url(f"{scheme}://{host}", key), bucket, prefix


#: the bank keys of a bucket besides server= and remote.dir= (none of them is a secret)
BANK_KEYS = ("s3.region", "s3.addressing", "s3.profile", "s3.anonymous")
ADDRESSING = ("auto", "path", "virtual")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


def bank_access(server: str, path: str, settings: Mapping[str, str | None], *, prefix: str = "") -> BucketAccess:
    """The bucket a bank reads: ``server=`` an endpoint, ``remote.dir=bucket/prefix/`` and the
    :data:`BANK_KEYS` in ``settings`` (key -> value). ConfigError naming the key for a bad value."""
    bucket, key_prefix = split_bucket_path(path, f"{prefix}remote.dir")
    return access_of(endpoint_url(server, f"{prefix}server"), bucket, key_prefix, settings, keys=f"{prefix}s3.")


def access_of(endpoint: str, bucket: str, key_prefix: str, settings: Mapping[str, str | None], *,
              keys: str = "s3.") -> BucketAccess:
    """A bucket with the settings ``<keys>region``, ``addressing``, ``profile`` and ``anonymous``
    read from ``settings`` (``s3.*`` for a bank's remote, ``publish.s3.*`` for its publish target).
    ConfigError naming the key for a bad value."""
    addressing = (settings.get(f"{keys}addressing") or "auto").strip().lower()
    if addressing not in ADDRESSING:
        raise ConfigError(f"{keys}addressing={addressing!r}: expected auto, path (bucket in the path: MinIO, "
                          "Ceph) or virtual (bucket in the host name: AWS, GCS)")
    anonymous = (settings.get(f"{keys}anonymous") or "").strip().lower()
    if anonymous not in _TRUE + _FALSE:
        raise ConfigError(f"{keys}anonymous={anonymous!r}: expected true (unsigned requests, public buckets) "
                          "or false")
    region = (settings.get(f"{keys}region") or "").strip() or None
    if region is not None and not re.fullmatch(r"[a-z0-9-]{1,40}", region):
        raise ConfigError(f"{keys}region={region!r}: expected a region name such as us-east-1 or eu-west-3")
    return BucketAccess(endpoint, bucket, key_prefix, region=region,
                        addressing=addressing,  # type: ignore[arg-type]
                        profile=(settings.get(f"{keys}profile") or "").strip() or None, anonymous=anonymous in _TRUE)


def region_for(access: BucketAccess, environ: Mapping[str, str] | None = None) -> str:
    """The region to sign for: the bank's, the profile's, ``AWS_REGION``/``AWS_DEFAULT_REGION``,
    the one in an AWS endpoint's name (``s3.eu-west-3.amazonaws.com``), else us-east-1."""
    env = os.environ if environ is None else environ
    if access.region:
        return access.region
    profile = access.profile or env.get("AWS_PROFILE")
    if profile:
        region = _profile_section(_aws_file(env, "AWS_CONFIG_FILE", "config"), profile, config=True).get("region")
        if region:
            return region
    if env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"):
        return env.get("AWS_REGION") or env["AWS_DEFAULT_REGION"]
    match = _AWS_REGION_HOST.match(urlsplit(access.endpoint).hostname or "")
    return match.group(1) if match else DEFAULT_REGION


def credentials(access: BucketAccess, given: tuple[str | None, str | None] = (None, None), *,
                source: str = "server.credentials", environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials to sign with (see the module's docstring for the order), None for
    anonymous requests. ``given``: the bank's own ``(key, secret)``. ConfigError when a profile
    named in the bank file does not exist."""
    env = os.environ if environ is None else environ
    if access.anonymous:
        return None
    key, secret = given
    if key and secret:
        return Credentials(key, secret, source=source)
    if access.profile:
        found = _from_profile(env, access.profile)
        if found is None:
            raise ConfigError(f"s3.profile={access.profile}: no such profile with an access key in "
                              f"{_aws_file(env, 'AWS_SHARED_CREDENTIALS_FILE', 'credentials')} or "
                              f"{_aws_file(env, 'AWS_CONFIG_FILE', 'config')}")
        return found
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN"),
                           source="AWS_ACCESS_KEY_ID")
    return _from_profile(env, env.get("AWS_PROFILE") or "default")


def _aws_file(env: Mapping[str, str], variable: str, name: str) -> Path:
    if env.get(variable):
        return Path(env[variable]).expanduser()
    return Path(env.get("HOME") or Path.home()) / ".aws" / name


def _profile_section(path: Path, profile: str, *, config: bool = False) -> dict[str, str]:
    parser = configparser.RawConfigParser()
    try:
        parser.read(path)
    except (OSError, configparser.Error):
        return {}
    # the config file names its sections "profile NAME" (but "default"), the credentials file "NAME"
    for section in ((f"profile {profile}", profile) if config else (profile,)):
        if parser.has_section(section):
            return dict(parser.items(section))
    return {}


def _from_profile(env: Mapping[str, str], profile: str) -> Credentials | None:
    for path, config in ((_aws_file(env, "AWS_SHARED_CREDENTIALS_FILE", "credentials"), False),
                         (_aws_file(env, "AWS_CONFIG_FILE", "config"), True)):
        section = _profile_section(path, profile, config=config)
        if section.get("aws_access_key_id") and section.get("aws_secret_access_key"):
            return Credentials(section["aws_access_key_id"], section["aws_secret_access_key"],
                               section.get("aws_session_token"), source=f"profile {profile}")
    return None


def open_store(access: BucketAccess, creds: Credentials | None, *, connect_timeout: float = 60.0,
               environ: Mapping[str, str] | None = None, pool_idle: float = 30.0) -> S3Store:
    """An obstore client for ``access.bucket`` (not connected yet).

    obstore's own retries are off (biomaj's retry policy decides, with its backoff and its host
    budget) and so is its total request timeout (a 200 GB object takes hours: readers watch for
    silence instead). The AWS_* variables obstore would read itself are not consulted: every
    setting comes from here, so an ``AWS_ENDPOINT_URL`` meant for another tool changes nothing."""
    from obstore.store import S3Store

    endpoint = access.endpoint
    if access.virtual_hosted:
        scheme, _, host = endpoint.partition("://")
        endpoint = f"{scheme}://{access.bucket}.{host}"
    config: dict[str, Any] = {
        "region": region_for(access, environ),
        "endpoint": endpoint,
        "virtual_hosted_style_request": access.virtual_hosted,
    }
    if creds is None:
        config["skip_signature"] = True
    else:
        config["access_key_id"] = creds.access_key
        config["secret_access_key"] = creds.secret_key
        if creds.token:
            config["session_token"] = creds.token
    client = {
        "allow_http": endpoint.startswith("http://"),
        "connect_timeout": timedelta(seconds=connect_timeout),
        "timeout": timedelta(days=365),
        "pool_idle_timeout": timedelta(seconds=pool_idle),
        "http1_only": True,
    }
    retry = {"max_retries": 0, "retry_timeout": timedelta(seconds=1), "backoff": {}}
    return S3Store(access.bucket, config=config, client_options=client, retry_config=retry)


# Errors ------------------------------------------------------------------------------------------

_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_MESSAGE = re.compile(r"<Message>([^<]{1,300})</Message>")
_REGION = re.compile(r"<Region>([^<]{1,40})</Region>")
_NO_LOCATION = "redirect without location"  # obstore's words for a 301 PermanentRedirect


@dataclass(frozen=True)
class Failure:
    """What an obstore error says, read back: the HTTP status (None when no answer came), the S3
    error code (``NoSuchKey``, ``AccessDenied``, ``SignatureDoesNotMatch`` ...), its message, and
    for a connection that failed, why."""

    status: int | None
    code: str | None
    message: str
    connection: str | None = None  # "connection refused", "unknown host", "timed out" ...
    region: str | None = None  # a PermanentRedirect's region (AWS: the bucket is in another region)

    @property
    def text(self) -> str:
        """One line for a log or an error: ``403 AccessDenied: Access Denied``."""
        if self.connection:
            return self.connection
        head = " ".join(str(x) for x in (self.status, self.code) if x)
        return f"{head}: {self.message}" if head and self.message else head or self.message


def read_failure(exc: BaseException) -> Failure:
    """The status, S3 code and message of an obstore error (they come as text; obstore 0.12 has no
    structured fields for them). Never returns the request's signature or credentials: only the
    status line and the S3 ``<Code>``/``<Message>`` are kept."""
    text = str(exc)
    if _NO_LOCATION in text.lower():  # AWS's answer on the wrong regional endpoint, seen by obstore
        return Failure(301, "PermanentRedirect", "the endpoint redirects the requests for this bucket")
    status = _STATUS.search(text)
    code, message, region = _CODE.search(text), _MESSAGE.search(text), _REGION.search(text)
    if status is None:
        lowered = text.lower()
        for needle, reason in (("connection refused", "connection refused"), ("dns error", "unknown host"),
                               ("failed to lookup address", "unknown host"), ("timed out", "no answer (timed out)"),
                               ("connection reset", "connection reset"), ("connection closed", "connection closed"),
                               ("tls", "TLS handshake failed"), ("certificate", "TLS certificate not trusted")):
            if needle in lowered:
                return Failure(None, None, reason, connection=reason)
        first = text.split("\n", 1)[0]
        return Failure(None, None, re.sub(r"https?://\S+", "<url>", first)[:300])
    return Failure(int(status.group(1)), code.group(1) if code else None,
                   message.group(1) if message else _reason(int(status.group(1))),
                   region=region.group(1) if region else None)


async def bucket_region(access: BucketAccess, *, timeout: float = 10.0) -> str | None:
    """The region the store says the bucket is in: the ``x-amz-bucket-region`` header of an
    unsigned HEAD of the bucket, which AWS sends even with a refusal or a redirect (how the AWS
    tools find a bucket's region); None when no answer says it."""
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.head(access.bucket_http_url, allow_redirects=False) as response:
                region = response.headers.get("x-amz-bucket-region", "").strip()
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None
    return region if re.fullmatch(r"[a-z0-9-]{1,40}", region) else None


async def located(failure: Failure, access: BucketAccess) -> Failure:
    """``failure`` with the bucket's region, asked for (:func:`bucket_region`) when the store
    redirected the request elsewhere without naming it (AWS's 301 PermanentRedirect)."""
    if failure.code != "PermanentRedirect" or failure.region:
        return failure
    return replace(failure, region=await bucket_region(access))


@dataclass(frozen=True)
class Keys:
    """The bank keys a fix names, on the side that failed: a remote read or a publish target."""

    credentials: str
    region: str
    profile: str
    bucket: str
    right: str  # what the key must be allowed to do


READ_KEYS = Keys("server.credentials", "s3.region", "s3.profile", "remote.dir", "read it")
PUBLISH_KEYS = Keys("publish.s3.credentials", "publish.s3.region", "publish.s3.profile", "publish.s3",
                    "write to it")


def diagnose(failure: Failure, access: BucketAccess, creds: Credentials | None, keys: Keys) -> tuple[str, str] | None:
    """(cause, fix) of a refusal by the store: a wrong or unknown key, a private bucket, a missing
    bucket, another region; None for any other failure. The cause says where the key came from,
    never the key id or the secret (credentials are never logged: the key id is half of them)."""
    code, status = failure.code, failure.status
    key = f"the access key from {creds.source}" if creds is not None else ""
    if creds is not None and code == "SignatureDoesNotMatch":
        return f"the store refused the signature of {key}: its secret is wrong", f"fix {creds.source}"
    if creds is not None and code == "InvalidAccessKeyId":
        return f"{key} is unknown to {access.endpoint}", f"fix {creds.source}"
    if status == 403 or code == "AccessDenied":
        if creds is None:
            return ("access denied: the bucket is private and no credentials were found",
                    f"set {keys.credentials}=KEY:SECRET, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or {keys.profile}")
        return (f"access denied to {key}: a wrong secret or a key without the right to {keys.right}",
                f"check {creds.source}")
    if code == "NoSuchBucket":
        return f"the bucket {access.bucket} does not exist on {access.endpoint}", f"create it or fix {keys.bucket}"
    if status == 301 or code in ("PermanentRedirect", "AuthorizationHeaderMalformed") or failure.region:
        return "the bucket is in another region", f"set {keys.region}={failure.region or '<the bucket region>'}"
    return None


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


# ETags -------------------------------------------------------------------------------------------

_MD5_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')
_MULTIPART_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})-(\d+)"?$')


def etag_md5(etag: str | None) -> str | None:
    """The MD5 an ETag is, for an object uploaded in one PUT (``"<32 hex>"``); None for a
    multipart ETag (``"<32 hex>-<parts>"``, an MD5 of the parts' MD5s, not of the content) and for
    anything else (an SSE-KMS object's ETag is not its MD5 either: a mismatch is then only a
    warning, see :func:`etag_is_content_md5`)."""
    match = _MD5_ETAG.match(etag or "")
    return match.group(1).lower() if match else None


def multipart_parts(etag: str | None) -> int | None:
    """The number of parts of a multipart ETag, None for any other ETag."""
    match = _MULTIPART_ETAG.match(etag or "")
    return int(match.group(2)) if match else None


def multipart_etag(part_md5s: list[bytes]) -> str:
    """The ETag S3 gives an object uploaded in these parts (their binary MD5 digests, in order)."""
    return f'"{hashlib.md5(b"".join(part_md5s)).hexdigest()}-{len(part_md5s)}"'  # noqa: S324 - S3's own scheme
