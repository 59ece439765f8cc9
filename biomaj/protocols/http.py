"""HTTP and HTTPS: directories listed from their HTML index page, files streamed with Range.

``http``/``https`` list a tree (see :mod:`biomaj.protocols.html_index`); ``directhttp`` /
``directhttps`` fetch one known file (``RemoteConfig.direct_file`` in ``root``) with BioMAJ's
``url.method`` (GET: ``url.params`` as a query string, POST: as a form), which BioMAJ's ``multi``
protocol also uses for each of its files.

One ``aiohttp.ClientSession`` per instance keeps connections alive between requests. An instance
has one connection to the server open at a time, the session's or the pipelined one (switching
closes the other): a client pool counts open clients against the host budget. Nothing is
decompressed on the fly (a ``.gz`` served with ``Content-Encoding: gzip`` stays a ``.gz``), except
index pages, which are asked for gzip-compressed and inflated here.

Options (BioMAJ ``options.*``): ``ssl_verifypeer`` (default true: false disables certificate
checks), ``ssl_verifyhost`` (default true: false skips only the host name check, as curl does),
``ssl_server_cert`` (a CA file to verify with), ``allow_redirections`` (default true),
``http_pipelining`` (default true: the downloader asks for the small files of a batch several at
a time on one connection, see :mod:`biomaj.protocols.http_pipeline`; false: one at a time).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import logging
import re
import ssl
import zlib
from calendar import timegm
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import quote

import aiohttp
from yarl import URL

from biomaj import __version__
from biomaj.protocols.base import (
    unreachable,
    FatalError,
    Features,
    PipelineUnsupported,
    Protocol,
    RemoteConfig,
    RemoteEntry,
    RemoteError,
    RemoteNotFound,
    RemoteStream,
    RetryableError,
    Throttled,
)
from biomaj.protocols.html_index import MONTHS, IndexParser, LineSplitter
from biomaj.protocols.http_pipeline import Answer, Pipeline

log = logging.getLogger(__name__)

# Options -----------------------------------------------------------------------------------------

READ_BUFSIZE = 1024 * 1024  # aiohttp's per-response buffer: fewer pauses of the socket on fast links
CONNECTIONS = 8  # per instance; the downloader keeps one instance per worker and host
MAX_REDIRECTS = 10
_FALSE = ("false", "0", "no", "off")
_PATH_SAFE = "/:@!$&'()*+,;=~"  # RFC 3986 pchar: left as they are in a path
_HEAD_REFUSED = (400, 403, 405, 501)  # HEAD not served: ask for the first byte instead


def _flag(options: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean option; only an explicit false value turns a safe default off."""
    value = options.get(name)
    if value is None or str(value).strip() == "":
        return default
    return str(value).strip().lower() not in _FALSE


# The class ---------------------------------------------------------------------------------------


class HttpProtocol(Protocol):
    """``http`` and ``https``: list HTML index pages, stat with HEAD, open with Range."""

    names = ("http", "https")
    features = Features(can_list=True, resume=True, mtime_precision=60.0, pipelining=True)

    def __init__(self, config: RemoteConfig):
        super().__init__(config)
        self.scheme = "https" if config.protocol.endswith("https") else "http"
        self._session: aiohttp.ClientSession | None = None
        self._pipeline: Pipeline | None = None
        self._closed = False
        host = config.host.split("://", 1)[-1].strip("/")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            if not host:
                raise ValueError("empty")
            self._origin = URL.build(scheme=self.scheme, host=host, port=config.port)
        except ValueError as exc:
            raise FatalError(f"server={config.host!r}: not a valid host name ({exc})") from None
        parts = [p for p in config.root.split("/") if p]
        self._root = "/" + "".join(quote(p, safe=_PATH_SAFE + "%") + "/" for p in parts)
        self._redirects = _flag(config.options, "allow_redirections", True)
        # Authorization as a header: aiohttp drops it on a redirect to another origin.
        self._headers = {"User-Agent": f"biomaj/{__version__}"}
        if config.user:
            self._headers["Authorization"] = _basic_auth(config.user, config.password or "")
        self._proxy, self._proxy_headers = _proxy_settings(config)
        if self._proxy_headers and self.scheme == "http":
            # A plain-http request goes to the proxy itself (absolute-form): its credentials ride
            # along. For https they only go in the CONNECT request (proxy_headers), never inside the tunnel.
            self._headers.update(self._proxy_headers)

    # Connection helpers -------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise FatalError(f"{self.config.protocol}://{self.config.address}: client already closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=CONNECTIONS, ssl=self._ssl_setting())
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.config.connect_timeout, sock_read=self.config.read_timeout
                ),
                headers=self._headers,
                skip_auto_headers=("Accept-Encoding",),  # files come as they are stored
                auto_decompress=False,
                read_bufsize=READ_BUFSIZE,
                trust_env=False,
            )
        return self._session

    def _ssl_setting(self) -> ssl.SSLContext | bool:
        if self.scheme != "https":
            return True
        options = self.config.options
        if not _flag(options, "ssl_verifypeer", True):
            return False
        cafile = options.get("ssl_server_cert") or None
        try:
            context = ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            raise FatalError(f"options.ssl_server_cert={cafile!r}: cannot load it ({exc})") from None
        if not _flag(options, "ssl_verifyhost", True):
            context.check_hostname = False
        return context

    def _url(self, path: str, *, directory: bool = False) -> URL:
        """The URL of ``path`` (relative to the root, URL-decoded as listings give it)."""
        rel = "/".join(p for p in path.split("/") if p)
        text = self._root + quote(rel, safe=_PATH_SAFE)
        if directory and rel:
            text += "/"
        return self._origin.with_path(text, encoded=True)

    def _file_url(self, path: str) -> URL:
        return self._url(path)

    def _transfer(self) -> tuple[str, dict]:
        """Method and extra request arguments of a file transfer (direct protocols: url.method)."""
        return "GET", {}

    async def _request(self, method: str, url: URL, *, ok: tuple[int, ...] = (), **kwargs) -> aiohttp.ClientResponse:
        """Send a request; an error status not in ``ok`` is raised as a RemoteError."""
        if self._pipeline is not None:
            self._pipeline.close()  # one connection per client: the host budget counts clients
        try:
            response = await self._http().request(
                method, url, allow_redirects=self._redirects, max_redirects=MAX_REDIRECTS,
                proxy=self._proxy, proxy_headers=self._proxy_headers, **kwargs,
            )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _translate_error(exc, url) from exc
        if response.status >= 300 and response.status not in ok:
            response.release()
            raise _translate_error(response, url)
        if response.history:
            log.debug("%s was redirected to %s", url, response.url.with_user(None))
        return response

    async def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if self._pipeline is not None:
            self._pipeline.close()
        if session is not None:
            await session.close()

    def _pipelined(self) -> Pipeline:
        if self._closed:
            raise FatalError(f"{self.config.protocol}://{self.config.address}: client already closed")
        if self._proxy or self._transfer()[0] != "GET" or not _flag(self.config.options, "http_pipelining", True):
            raise PipelineUnsupported("one request at a time (a proxy, a POST or http_pipelining=false)")
        if self._pipeline is None:
            setting = self._ssl_setting()
            context = None
            if self.scheme == "https":
                context = setting if isinstance(setting, ssl.SSLContext) else ssl.create_default_context()
                if setting is False:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
            origin = self._origin
            self._pipeline = Pipeline(
                origin.raw_host, origin.port, host_header=_host_header(origin), headers=self._headers,
                ssl_context=context, connect_timeout=self.config.connect_timeout,
                read_timeout=self.config.read_timeout,
            )
        return self._pipeline

    async def open_many(self, paths: list[str]) -> AsyncIterator[tuple[str, RemoteStream | RemoteError]]:
        pipeline = self._pipelined()
        if self._session is not None:  # one connection per client: the host budget counts clients
            session, self._session = self._session, None
            await session.close()
        urls = {}
        for path in paths:
            url = self._file_url(path)
            urls[url.raw_path_qs] = (path, url)
        async for answer in pipeline.get(list(urls)):
            path, url = urls[answer.target]
            if 200 <= answer.status < 300:
                yield path, _PipelinedStream(answer, url)
            elif 300 <= answer.status < 400 and self._redirects:
                yield path, RetryableError(f"{url.with_user(None)}: redirected (followed on its own request)")
            else:
                yield path, _status_error(answer.status, "", answer.headers, str(url.with_user(None)))

    # list / stat / open -------------------------------------------------------------------------

    async def list(self, path: str = "") -> AsyncIterator[RemoteEntry]:
        path = "/".join(p for p in path.split("/") if p)
        url = self._url(path, directory=True)
        response = await self._request("GET", url, headers={"Accept-Encoding": "gzip"})
        prefix = path + "/" if path else ""
        complete = False
        try:
            if response.status != 200:
                raise _translate_error(response, url)
            parser = IndexParser(str(response.url.with_query(None).with_user(None)), self.config.http_parse)
            lines = LineSplitter(response.charset or "utf-8")
            encoding = response.headers.get("Content-Encoding", "identity").lower()
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding in ("gzip", "x-gzip") else None
            async for data in response.content.iter_any():
                if inflate is not None:
                    data = inflate.decompress(data)
                for line in lines.feed(data):
                    for item in parser.feed(line):
                        yield _listed(prefix, item)
            rest = inflate.flush() if inflate is not None else b""
            for line in lines.feed(rest, final=True):
                for item in parser.feed(line):
                    yield _listed(prefix, item)
            for item in parser.close():
                yield _listed(prefix, item)
            complete = True
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _translate_error(exc, url) from exc
        except zlib.error as exc:
            raise RetryableError(f"{url}: corrupt gzip index page ({exc})") from None
        finally:
            if complete:
                response.release()
            else:
                response.close()

    async def stat(self, path: str) -> RemoteEntry:
        return await self._stat(path, None)

    async def stat_since(self, path: str, known: RemoteEntry) -> RemoteEntry:
        """HEAD with ``If-None-Match: <known.etag>``: a 304 gives ``known`` back. Only the ETag is
        sent, never ``If-Modified-Since``: a 304 to a date says "not newer", which a file replaced
        by an older one, or changed within the same second, also gets; a plain HEAD gives the size
        and the date, which the same-file rule compares itself."""
        if not known.etag or self._transfer()[0] != "GET":
            return await self.stat(path)
        return await self._stat(path, known)

    async def _stat(self, path: str, known: RemoteEntry | None) -> RemoteEntry:
        url = self._file_url(path)
        facts = await self._head(url, {"If-None-Match": known.etag} if known is not None and known.etag else {})
        if facts is None:  # 304 Not Modified: what we knew still holds
            return replace(known, path=path)
        size, mtime, modified, etag = facts
        return RemoteEntry(path, size, mtime, hash=_stat_hash(path, modified + (etag or ""), size), etag=etag)

    async def _head(self, url: URL,
                    conditions: dict[str, str]) -> tuple[int | None, float | None, str, str | None] | None:
        """(size, mtime, Last-Modified text, ETag) from HEAD, or from a one-byte GET when HEAD is
        refused; None when ``conditions`` got a 304 (not modified)."""
        response = await self._request("HEAD", url, ok=_HEAD_REFUSED + (304,), headers=conditions)
        if response.status in _HEAD_REFUSED:
            response.release()
            method, kwargs = self._transfer()
            response = await self._request(method, url, ok=(304, 416), headers={"Range": "bytes=0-0", **conditions},
                                           **kwargs)
        try:
            headers = response.headers
            if response.status == 304:
                return None
            if response.status in (206, 416):
                size = _range_total(headers.get("Content-Range"))
            else:
                size = _int(headers.get("Content-Length"))
            modified = headers.get("Last-Modified", "")
            return size, parse_http_date(modified), modified, headers.get("ETag") or None
        finally:
            if response.method == "HEAD" or response.status == 304:
                response.release()
            else:
                response.close()

    @asynccontextmanager
    async def open(self, path: str, offset: int = 0, *, size: int | None = None, end: int | None = None) -> AsyncIterator[RemoteStream]:
        url = self._file_url(path)
        method, kwargs = self._transfer()
        headers = {}
        if end is not None and (size is None or end < size):  # a split transfer's range
            headers["Range"] = f"bytes={offset}-{end - 1}"
        elif offset > 0:
            headers["Range"] = f"bytes={offset}-"
        response = await self._request(method, url, ok=(416,), headers=headers, **kwargs)
        stream = _open_stream(response, url, offset)
        if stream is None:  # 416 before the end: the file changed, start again from 0
            response = await self._request(method, url, **kwargs)
            stream = _open_stream(response, url, 0)
        try:
            yield stream
        finally:
            if stream.finished:
                response.release()
            else:  # left early: the rest of the body is not read, the connection is dropped
                response.close()


class DirectHttpProtocol(HttpProtocol):
    """``directhttp`` and ``directhttps``: one file, ``direct_file`` in ``root``, fetched with
    ``config.method`` and ``config.params``; ``list("")`` gives that file alone."""

    names = ("directhttp", "directhttps")
    features = Features(can_list=False, resume=True, mtime_precision=1.0)

    def _file_url(self, path: str) -> URL:
        # Bank values may be URL-encoded already and may carry a query string: keep both.
        rel, _, query = path.partition("?")
        rel = "/".join(p for p in rel.split("/") if p)
        url = URL.build(
            scheme=self.scheme, host=self._origin.raw_host, port=self._origin.explicit_port,
            path=self._root + quote(rel, safe=_PATH_SAFE + "%"),
            query_string=quote(query, safe=_PATH_SAFE + "%?"), encoded=True,
        )
        if self.config.method.upper() != "POST" and self.config.params:
            url = url.update_query(dict(self.config.params))
        return url

    def _transfer(self) -> tuple[str, dict]:
        if self.config.method.upper() == "POST":
            return "POST", {"data": dict(self.config.params)}
        return "GET", {}

    async def list(self, path: str = "") -> AsyncIterator[RemoteEntry]:
        if path.strip("/"):
            raise RemoteNotFound(f"{self.config.protocol}: no directory to list ({path!r}); one file only")
        yield await self.stat(self.config.direct_file)

    async def stat(self, path: str) -> RemoteEntry:
        if self.config.method.upper() == "POST":
            return RemoteEntry(path)  # a POST answer is only known by asking for it
        return await super().stat(path)


# Streams and headers -----------------------------------------------------------------------------


class _HttpStream(RemoteStream):
    """The body of one response, in the chunks aiohttp received."""

    def __init__(self, response: aiohttp.ClientResponse | None, url: URL, offset: int,
                 size: int | None, mtime: float | None):
        self._response = response
        self._url = url
        self.offset = offset
        self.size = size
        self.mtime = mtime
        self.finished = response is None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._response is None:
            return
        content = self._response.content
        try:
            # Chunks as aiohttp buffered them: the downloader writes lists of chunks at once
            # (writev), so joining them here would only add a copy.
            while chunk := await content.readany():
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _translate_error(exc, self._url) from exc
        self.finished = True


class _PipelinedStream(RemoteStream):
    """The body of one pipelined answer."""

    def __init__(self, answer: Answer, url: URL):
        self._answer = answer
        self.offset = 0
        self.size = _int(answer.headers.get("content-length"))
        self.mtime = parse_http_date(answer.headers.get("last-modified", ""))
        self._url = url

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._answer.body()


def _host_header(origin: URL) -> str:
    host = origin.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    return host if origin.is_default_port() else f"{host}:{origin.port}"


def _open_stream(response: aiohttp.ClientResponse, url: URL, offset: int) -> _HttpStream | None:
    """The stream of a GET/POST answer, or None when a 416 means "start again from 0"."""
    headers = response.headers
    mtime = parse_http_date(headers.get("Last-Modified", ""))
    if response.status == 416:
        total = _range_total(headers.get("Content-Range"))
        response.release()
        if total is not None and total == offset:
            return _HttpStream(None, url, offset, total, mtime)  # already complete
        log.info("%s: range from %d refused (size now %s); starting again", url, offset, total)
        return None
    if response.status == 206:
        found = _CONTENT_RANGE.match(headers.get("Content-Range", ""))
        if not found or int(found[1]) != offset:
            response.close()
            raise RetryableError(f"{url}: asked for bytes {offset}-, got {headers.get('Content-Range')!r}")
        total = None if found[3] == "*" else int(found[3])
        return _HttpStream(response, url, offset, total, mtime)
    size = _int(headers.get("Content-Length"))
    if offset:
        log.debug("%s: Range ignored by the server, whole file sent", url)
    return _HttpStream(response, url, 0, size, mtime)


def _listed(prefix: str, item) -> RemoteEntry:
    return RemoteEntry(prefix + item.name, item.size, item.mtime, is_dir=item.is_dir, hash=item.hash,
                       size_hint=item.size_hint)


def _stat_hash(path: str, stamp: str, size: int | None) -> str | None:
    if not stamp and size is None:
        return None
    name = path.rsplit("/", 1)[-1]
    return hashlib.md5(f"{name}{stamp}{size}".encode("utf-8", "surrogatepass")).hexdigest()


_CONTENT_RANGE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)
# RFC 850 (Sunday, 06-Nov-94 08:49:37 GMT) and asctime (Sun Nov  6 08:49:37 1994)
_IMF_FIXDATE = re.compile(r"\w{3}, (\d\d) (\w{3}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT")
_RFC850 = re.compile(r"\w+,\s*(\d{1,2})-(\w{3})-(\d{2,4})\s+(\d\d):(\d\d):(\d\d)")
_ASCTIME = re.compile(r"\w+\s+(\w{3})\s+(\d{1,2})\s+(\d\d):(\d\d):(\d\d)\s+(\d{4})")


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def _range_total(value: str | None) -> int | None:
    """The total size in ``Content-Range: bytes 0-0/1234`` or ``bytes */1234``."""
    if not value:
        return None
    found = _CONTENT_RANGE.match(value) or _UNSATISFIED_RANGE.match(value)
    if not found or found.group(found.lastindex) == "*":
        return None
    return int(found.group(found.lastindex))


@functools.lru_cache(maxsize=256)  # the files of a tree often share their dates
def parse_http_date(value: str) -> float | None:
    """POSIX seconds of an HTTP date in any of its three formats (RFC 1123, RFC 850, asctime)."""
    value = value.strip()
    if not value:
        return None
    if found := _IMF_FIXDATE.fullmatch(value):  # what servers send: no need for the email parser
        day, mon, year, hh, mm, ss = found.groups()
        fields = (int(year), MONTHS.get(mon.lower()), int(day), int(hh), int(mm), int(ss))
        if fields[1] is not None and _valid(fields):
            return float(timegm((*fields, 0, 0, 0)))
    try:
        parsed = parsedate_to_datetime(value)  # RFC 1123 (and RFC 2822)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    except (TypeError, ValueError, IndexError):
        pass
    if found := _RFC850.match(value):
        day, mon, year, hh, mm, ss = found.groups()
        year = int(year) + (1900 if int(year) >= 70 else 2000) if len(year) == 2 else int(year)
        fields = (year, MONTHS.get(mon.lower()), int(day), int(hh), int(mm), int(ss))
    elif found := _ASCTIME.match(value):
        mon, day, hh, mm, ss, year = found.groups()
        fields = (int(year), MONTHS.get(mon.lower()), int(day), int(hh), int(mm), int(ss))
    else:
        return None
    if fields[1] is None or not _valid(fields):
        return None
    return float(timegm((*fields, 0, 0, 0)))


def _valid(fields: tuple) -> bool:
    try:
        datetime(*fields)
    except ValueError:
        return False
    return True


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from ``Retry-After`` (a number of seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = parse_http_date(value)
    if when is None:
        return None
    return max(0.0, when - datetime.now(timezone.utc).timestamp())


def _basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")


def _proxy_settings(config: RemoteConfig) -> tuple[str | None, dict[str, str] | None]:
    if not config.proxy:
        return None, None
    proxy = config.proxy if "://" in config.proxy else "http://" + config.proxy
    if not proxy.lower().startswith(("http://", "https://")):
        raise FatalError(f"proxy={URL(proxy).with_user(None)}: only http(s) proxies are supported")
    headers = None
    if config.proxy_auth:
        user, _, password = config.proxy_auth.partition(":")
        headers = {"Proxy-Authorization": _basic_auth(user, password)}
    return proxy, headers


# Errors ------------------------------------------------------------------------------------------


def _status_error(status: int, reason: str, headers: Mapping[str, str] | None, where: str,
                  who: str = "") -> RemoteError:
    """The shared error for an HTTP error status (headers: any case-insensitive or lower-case map)."""
    message = f"{where}: {who}HTTP {status} {reason}".rstrip()
    headers = headers if headers is not None else {}

    def header(name: str) -> str | None:
        return headers.get(name) or headers.get(name.lower())

    if status in (404, 410):
        return RemoteNotFound(message)
    if status in (429, 503):
        return Throttled(message, retry_after=_retry_after(header("Retry-After")))
    if status == 408 or status >= 500:
        return RetryableError(message)
    if 300 <= status < 400:
        return FatalError(f"{message}: redirected to {header('Location') or '?'} but allow_redirections is false")
    return FatalError(message)  # 401, 403, 407 (bad credentials or rights) and any other client error


def _translate_error(error: BaseException | aiohttp.ClientResponse, url: URL) -> RemoteError:
    """The shared error for an aiohttp exception or an error response. Messages carry the URL
    without user information and never any credential."""
    where = str(url.with_user(None))
    if isinstance(error, aiohttp.ClientResponse):
        return _status_error(error.status, error.reason or "", error.headers, where)
    if isinstance(error, aiohttp.ClientHttpProxyError):
        return _status_error(error.status, error.message, error.headers, where, "proxy answered ")
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return FatalError(f"{where}: TLS certificate not trusted ({error.certificate_error})")
    if isinstance(error, aiohttp.ClientSSLError):
        return FatalError(f"{where}: TLS failure ({error})")
    if isinstance(error, aiohttp.ClientProxyConnectionError):
        return unreachable(f"the proxy {error.host}:{error.port}", error.os_error)
    if isinstance(error, aiohttp.ClientConnectorError):  # refused, unknown host, no route
        return unreachable(str(url.origin()), error.os_error)
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return unreachable(str(url.origin()), TimeoutError())
    if isinstance(error, (aiohttp.TooManyRedirects, aiohttp.InvalidURL)):
        return FatalError(f"{where}: {type(error).__name__} ({error})")
    if isinstance(error, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return RetryableError(f"{where}: timed out ({type(error).__name__})")
    if isinstance(error, aiohttp.ClientPayloadError):
        return RetryableError(f"{where}: transfer cut short ({error})")
    if isinstance(error, (aiohttp.ClientError, OSError)):
        return RetryableError(f"{where}: connection failed ({type(error).__name__}: {error})")
    return RetryableError(f"{where}: {type(error).__name__}: {error}")
