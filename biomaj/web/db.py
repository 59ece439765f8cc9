"""`/db/<bank>/...`: the files of the banks' production releases over HTTP, read-only, with the REST
API's visibility rules, in the URL layout of BioMAJ 3's `/db` (there an nginx serving data.dir, whose
`dir.version` is usually the bank's name)::

    /db/                                the banks the requester may see that have a production release
    /db/<bank>/                         current/ (the published release, if any) and the directory of
                                        every production release (<bank>_<release>) the store records
    /db/<bank>/current/<path>           a file or directory of the published release
    /db/<bank>/<bank>_<release>/<path>  a file or directory of that production release

Rules, shared with the forward authentication of `/api/daemon/expose` (:func:`parse_db_path`,
:func:`release_entry`, :func:`db_viewer`, :func:`exposed`) and, for the tree itself, with the FTP view
(the transport-independent part lives in :mod:`biomaj.published`):

* Only production releases recorded in the store are reachable, at the directory the store records
  (``data_dir/dir_version/prod_dir``); ``current`` is the production of the session the store says is
  published, never whatever the ``current`` symlink points to. Pending and offline directories,
  ``RELEASE.txt`` and anything else under data.dir are not served.
* A URL path is a list of plain names: a ``.`` or ``..`` segment (raw or percent-encoded), a NUL, a
  backslash or a hidden name (starting with ``.``) is refused before any file system access.
  Consecutive slashes count as one, as in nginx and Apache.
* The resolved path must lie inside the resolved release directory: a symlink leading out of it is
  neither followed nor listed. A refused or missing path is a 404 either way (nothing tells them apart).
* A directory is an HTML index in Apache 2.2's FancyIndexing layout (sizes in bytes, dates in UTC as
  ``DD-Mon-YYYY HH:MM``), which BioMAJ's http protocol reads with no ``http.parse.*`` setting and BioMAJ 3
  with its default regexps: a bank with ``protocol=http`` mirrors another server's release as is. A
  directory asked without its trailing ``/`` is redirected (301), so that relative links work.
* A file is aiohttp's FileResponse: Content-Length, Last-Modified, If-Modified-Since (304), one Range
  (206, 416 when unsatisfiable), HEAD. Always the file's own bytes: no ``.gz`` sibling is served in its
  place when the client accepts gzip (aiohttp's static-file negotiation is turned off).
* Who: as the REST API (``Authorization: APIKEY <key>`` or ``X-API-KEY``), plus Basic ``login:apikey``
  (the key must be the login's), which is what a BioMAJ bank's ``server.credentials`` sends: the owner
  of a private bank can mirror it. ``expose=0`` (or false) in global.properties turns `/db` off (404).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import html
import logging
import re
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from biomaj.published import (
    CURRENT, Refused, Row, bank_rows, directory_rows, exposed, locate, plain_name, published_entry, release_dir,
    release_entry, release_rows, split_names,
)
from biomaj.reports import Viewer

from .context import USERS_KEY, identity_of, node_of, viewer_of
from .errors import ApiError
from .registry import Api

log = logging.getLogger(__name__)

api = Api()
TAG = "db"
PREFIX = "/db"
CHALLENGE = {"WWW-Authenticate": 'Basic realm="biomaj", APIKEY realm="biomaj"'}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# --- which bank, release and file a URL designates ---------------------------------------------------


@dataclass(frozen=True)
class DbPath:
    """What a `/db` URL path designates: nothing more (``/db``), a bank's directory (``release`` None),
    or ``parts`` inside a release directory (``current`` or a production's ``prod_dir``)."""

    bank: str | None
    release: str | None = None
    parts: tuple[str, ...] = ()
    directory: bool = False  # the URL ends with "/"

    @property
    def names(self) -> list[str]:
        return [n for n in (self.bank, self.release, *self.parts) if n is not None]

    def url(self, directory: bool | None = None) -> str:
        """The canonical (percent-encoded) URL path of the same target."""
        path = PREFIX + "/" + "/".join(quote(n.encode("utf-8", "surrogateescape"), safe="") for n in self.names)
        directory = self.directory if directory is None else directory
        return path.rstrip("/") + "/" if directory else path.rstrip("/") or PREFIX

    @property
    def title(self) -> str:
        """The decoded path of a directory, as an index page names it."""
        return "/".join([PREFIX, *self.names]) + "/"


def parse_db_path(path: str) -> DbPath:
    """The target of a URL path (already percent-decoded, as aiohttp's ``request.path`` or
    ``unquote(urlsplit(uri).path)``): :class:`Refused` unless it is ``/db`` followed by plain names."""
    if path != PREFIX and not path.startswith(PREFIX + "/"):
        raise Refused(f"{path[:200]!r} is not under {PREFIX}/")
    names = split_names(path[len(PREFIX):])
    return DbPath(bank=names[0] if names else None, release=names[1] if len(names) > 1 else None,
                  parts=tuple(names[2:]), directory=path.endswith("/"))


# --- who asks ----------------------------------------------------------------------------------------


class BadCredentials(ValueError):
    """Basic credentials that name nobody, or a key that is not the login's."""


async def basic_identity(request: web.Request):
    """The user of ``Authorization: Basic base64(login:apikey)``, None without Basic credentials;
    :class:`BadCredentials` when the key is unknown or not the login's (BioMAJ 3's W31)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        login, _, key = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise BadCredentials("bad Basic credentials: base64 of login:apikey expected") from None
    users = request.app[USERS_KEY]
    who = await users.by_api_key(key) if users is not None and key else None
    if who is None or who.name != login:
        raise BadCredentials("wrong login or API key")
    return who


async def db_viewer(request: web.Request) -> tuple[Viewer, bool]:
    """(the requester as the reports see it, whether authenticated), by API key or Basic login:apikey."""
    viewer = viewer_of(request)
    if identity_of(request) is not None:
        return viewer, True
    who = await basic_identity(request)
    if who is None:
        return viewer, False
    return Viewer(who.name, viewer.admins | ({who.name} if who.admin else set())), True


async def _visible(request: web.Request, name: str) -> dict[str, Any]:
    """The bank's summary if the requester may see it. Nothing tells an unknown bank from a private
    one: anonymous requests get the same 401 challenge for both (mirror clients send their
    credentials only after one), authenticated ones the same 404."""
    found = await node_of(request).store.list_banks([name])
    try:
        viewer, authenticated = await db_viewer(request)
    except BadCredentials as exc:
        raise ApiError(401, str(exc), CHALLENGE) from None
    if found and viewer.can_see(found[0]):
        return found[0]
    if not authenticated:
        raise ApiError(401, f"bank {name}: no such bank, or a private bank: authenticate as its owner "
                            "(APIKEY <key>, or Basic login:apikey)", CHALLENGE)
    raise ApiError(404, f"bank {name}: no such bank with a record, or a private bank (only its owner and the "
                        "admins see it)")


# --- the index page ----------------------------------------------------------------------------------


def apache_date(epoch: float) -> str:
    """``DD-Mon-YYYY HH:MM`` in UTC, whatever the locale."""
    t = time.gmtime(epoch)
    return f"{t.tm_mday:02d}-{MONTHS[t.tm_mon - 1]}-{t.tm_year:04d} {t.tm_hour:02d}:{t.tm_min:02d}"


def index_page(url_path: str, rows: Iterable[Row], parent: bool = True) -> str:
    """An Apache 2.2 FancyIndexing page (``<pre>`` layout): one line per entry, the icon's ``alt``
    telling directories (``[DIR]``) from files (``[   ]``), then the link, the date and the size in
    bytes. BioMAJ 3's default ``http.parse.dir.line``/``http.parse.file.line`` need the ``<img>``; the
    style sheet hides it in browsers (there is no icon to show)."""
    title = html.escape(_CONTROL.sub("?", url_path))
    lines = ['<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">', "<html>", " <head>",
             f"  <title>Index of {title}</title>", "  <style>img{display:none}</style>", " </head>", " <body>",
             f"<h1>Index of {title}</h1>", f"<pre>      Name{' ' * 46}Last modified      Size",
             "<hr>"]
    if parent:
        lines.append('<img src="data:," alt="[PARENTDIR]"> <a href="../">Parent Directory</a>')
    for row in rows:
        href = quote(row.name.encode("utf-8"), safe="") + ("/" if row.is_dir else "")
        text = html.escape(_CONTROL.sub("?", row.name)) + ("/" if row.is_dir else "")
        pad = " " * max(1, 50 - len(row.name) - row.is_dir)
        size = "-" if row.is_dir else str(row.size)
        alt = "[DIR]" if row.is_dir else "[   ]"
        lines.append(f'<img src="data:," alt="{alt}"> <a href="{href}">{text}</a>{pad}'
                     f"{apache_date(row.mtime)}  {size:>5}")
    lines += ["<hr></pre>", "</body></html>", ""]
    return "\n".join(lines)


def _index_response(url_path: str, rows: list[Row], parent: bool = True) -> web.Response:
    response = web.Response(text=index_page(url_path, rows, parent), content_type="text/html", charset="utf-8")
    response.enable_compression()  # only when the client accepts it (BioMAJ's http protocol asks for gzip)
    return response


class StoredFileResponse(web.FileResponse):
    """A file's own bytes: aiohttp would otherwise send ``x.gz`` (with Content-Encoding) in place of
    ``x`` to a client accepting gzip, which is not what a mirror asked for."""

    def _get_file_path_stat_encoding(self, accept_encoding: str):
        return super()._get_file_path_stat_encoding("")


# --- the routes --------------------------------------------------------------------------------------


def _route(path: str, pattern: str, **doc: Any):
    """A GET (and HEAD) route whose router ``pattern`` spans directories (aiohttp's ``{path:...}``),
    which the OpenAPI template ``path`` cannot say."""
    return api.route("GET", path, access="public", tag=TAG, pattern=pattern, head=True, **doc)


def _not_found(target: DbPath) -> ApiError:
    return ApiError(404, f"{target.url()} not found")


async def _serve(request: web.Request) -> web.StreamResponse:
    node = node_of(request)
    if not exposed(node.config):
        raise ApiError(404, "/db is turned off on this server (expose=0 in global.properties)")
    try:
        target = parse_db_path(request.path)
    except Refused as exc:
        raise ApiError(404, f"not found: {exc}") from None
    if target.bank is None:
        return await _banks_index(request, target)
    doc = await _visible(request, target.bank)
    if not target.directory and (target.release is None or not target.parts):
        raise web.HTTPMovedPermanently(target.url(directory=True))  # a bank or release directory
    if target.release is None:
        rows = await asyncio.to_thread(release_rows, doc)
        return _index_response(target.title, rows)
    entry = release_entry(doc, target.release)
    directory = release_dir(entry) if entry is not None else None
    if directory is None:
        raise ApiError(404, f"bank {target.bank} has no published release" if target.release == CURRENT
                       else f"bank {target.bank} has no production release in {target.release}")
    try:
        path, info, root = await asyncio.to_thread(locate, directory, target.parts)
    except FileNotFoundError:
        raise _not_found(target) from None
    if stat.S_ISDIR(info.st_mode):
        if not target.directory:
            raise web.HTTPMovedPermanently(target.url(directory=True))
        try:
            rows = await asyncio.to_thread(directory_rows, path, root)
        except OSError:
            raise _not_found(target) from None
        return _index_response(target.title, rows)
    if target.directory:  # "file/"
        raise _not_found(target)
    return StoredFileResponse(path)


async def _banks_index(request: web.Request, target: DbPath) -> web.StreamResponse:
    if not target.directory:
        raise web.HTTPMovedPermanently(PREFIX + "/")
    try:
        viewer, _ = await db_viewer(request)
    except BadCredentials as exc:
        raise ApiError(401, str(exc), CHALLENGE) from None
    rows = bank_rows(await node_of(request).store.list_banks(), viewer)
    return _index_response(PREFIX + "/", rows, parent=False)


@_route("/db/", pattern="/db{slash:/?}", summary="An HTML index of the banks the requester may see that have a "
        "production release (`/db` redirects here)", content_type="text/html",
        responses={200: "an index page", 301: "/db redirects to /db/"})
async def db_banks(request: web.Request) -> web.StreamResponse:
    return await _serve(request)


@_route("/db/{bank}/{path}", pattern="/db/{bank}{path:(?:/.*)?}",
        summary="A file of a bank's production release, or an HTML index of a directory: `{path}` is "
        "`current/...` (the published release) or `<bank>_<release>/...`, empty for the list of releases; "
        "Range, If-Modified-Since and HEAD as for static files", content_type="application/octet-stream",
        responses={200: "a file, or an HTML index of a directory", 206: "the requested range of a file",
                   301: "a directory asked without its trailing /", 304: "not modified since If-Modified-Since",
                   401: "anonymous: a private or unknown bank (authenticate: APIKEY, or Basic login:apikey)",
                   404: "a private bank of another user, or an unknown one"})
async def db_files(request: web.Request) -> web.StreamResponse:
    return await _serve(request)


__all__ = ["CURRENT", "BadCredentials", "DbPath", "Refused", "Row", "api", "basic_identity", "db_viewer", "exposed",
           "parse_db_path", "plain_name", "published_entry", "release_dir", "release_entry"]
