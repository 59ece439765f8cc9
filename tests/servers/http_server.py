"""A real HTTP(S) server (aiohttp) over a tree, read-only, with every fault of Faults for real.

Directories are served as index pages (``style``: Apache 2.4 FancyIndexing by default, or
``apache22``, ``htmltable``, ``nginx``, ``plain``); files with HEAD, Range (206/416),
Last-Modified and ETag (304 to a matching ``If-None-Match`` on GET and HEAD), for GET and POST
alike. ``/__echo__`` answers with the request it got as JSON (method, query, form, a few
headers), for the direct GET/POST tests. Options for test_http.py: ``auth=(user, password)`` (HTTP
basic), ``ignore_range`` (answer 200 to ranged requests), ``head=False`` (405 to HEAD). For
``protocol="https"`` a CA and a certificate for 127.0.0.1 are made at start; the CA file is the
config's ``options["ssl_server_cert"]``.

Requests seen are recorded in ``RunningServer.seen`` (method, path, query, headers).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import html
import shutil
import ssl
import tempfile
import time
import weakref
from email.utils import formatdate
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from biomaj.protocols.base import RemoteConfig
from tests.servers.faults import Faults, RateCap, RunningServer

STYLES = ("apache24", "apache22", "htmltable", "nginx", "plain")
ECHO = "/__echo__"
BLOCK = 256 * 1024
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


async def start(
    tree: Path,
    faults: Faults,
    *,
    protocol: str,
    style: str = "apache24",
    auth: tuple[str, str] | None = None,
    ignore_range: bool = False,
    head: bool = True,
) -> RunningServer:
    """Serve `tree` on 127.0.0.1 (a free port) over http or https."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}")
    tree = Path(tree).resolve()
    seen: list[dict] = []
    connections: weakref.WeakSet = weakref.WeakSet()

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append({"method": request.method, "path": request.path, "query": dict(request.query),
                     "headers": dict(request.headers)})
        transport = request.transport
        if transport is not None and transport not in connections:
            connections.add(transport)
            faults.logins += 1
        if auth is not None and not _authorized(request, auth):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="biomaj"'})
        if request.path == ECHO:
            form = dict(await request.post()) if request.method == "POST" else {}
            body = {"method": request.method, "query": dict(request.query), "form": form,
                    "content_type": request.headers.get("Content-Type")}
            return web.json_response(body)
        parts = [p for p in request.path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            return web.Response(status=404)
        target = tree.joinpath(*parts)
        if target.is_dir():
            if not request.path.endswith("/"):
                raise web.HTTPMovedPermanently(request.path + "/")
            page = _index(target, request.path, style, faults.evil_names if not parts else [])
            return web.Response(text=page, content_type="text/html", charset="utf-8")
        if not target.is_file():
            return web.Response(status=404, text="not found")
        if request.method not in ("GET", "HEAD", "POST"):
            return web.Response(status=405, headers={"Allow": "GET, HEAD, POST"})
        return await _serve_file(request, target, "/".join(parts), faults, ignore_range, head)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    workdir = Path(tempfile.mkdtemp(prefix="biomaj-http-"))
    options: dict[str, str] = {}
    context = None
    if protocol in ("https", "directhttps"):
        ca_file, cert_file, key_file = make_certificates(workdir)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        options["ssl_server_cert"] = str(ca_file)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]

    async def stop() -> None:
        await runner.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)

    config = RemoteConfig(
        protocol=protocol, host="127.0.0.1", port=port, root="/", options=options,
        user=auth[0] if auth else None, password=auth[1] if auth else None, connect_timeout=10.0,
    )
    server = RunningServer(config=config, faults=faults, stop=stop)
    server.seen = seen  # type: ignore[attr-defined]
    return server


def _authorized(request: web.Request, auth: tuple[str, str]) -> bool:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return False
    return (user, password) == auth


# Files -------------------------------------------------------------------------------------------


async def _serve_file(request: web.Request, path: Path, key: str, faults: Faults,
                      ignore_range: bool, head: bool) -> web.StreamResponse:
    st = path.stat()
    size = st.st_size
    headers = {
        "Last-Modified": formatdate(st.st_mtime, usegmt=True),
        "ETag": f'"{st.st_ino:x}-{size:x}-{st.st_mtime_ns:x}"',
        "Accept-Ranges": "none" if ignore_range else "bytes",
        "Content-Type": "application/octet-stream",
    }
    if request.method == "HEAD" and not head:
        return web.Response(status=405, headers={"Allow": "GET, POST"})
    match = [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",") if tag.strip()]
    if request.method != "POST" and (headers["ETag"] in match or "*" in match):  # RFC 9110 13.1.2
        return web.Response(status=304, headers={"ETag": headers["ETag"], "Last-Modified": headers["Last-Modified"]})
    if request.method == "HEAD":
        response = web.StreamResponse(headers=headers)
        response.content_length = size
        await response.prepare(request)
        await response.write_eof()
        return response

    faults.transfer_started(key)
    try:
        if faults.take(faults.throttle, key):
            return web.Response(status=429, headers={"Retry-After": "0"}, text="slow down")
        if faults.take(faults.transient_errors, key):
            return web.Response(status=503, text="try again later")
        if faults.take(faults.not_found, key):
            return web.Response(status=404, text="not found")
        start, status = 0, 200
        wanted = request.headers.get("Range", "")
        if wanted.startswith("bytes=") and not ignore_range:
            first, _, last = wanted[6:].partition("-")
            if first.isdigit() and not last:
                start = int(first)
                if start >= size:
                    return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
                status = 206
                headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
            elif first.isdigit() and last.isdigit():  # bytes=a-b (stat's one-byte probe)
                start, end = int(first), min(int(last), size - 1)
                if start >= size:
                    return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
                size = end + 1
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = size - start
        await response.prepare(request)
        drop = faults.drop_after.pop(key, None)
        stall = faults.stall.pop(key, None)
        cap = RateCap(faults.rate)
        return await write_body(request, response, _file_blocks(path, start, size, cap.block(BLOCK)),
                                cap=cap, drop=drop, stall=stall)
    finally:
        faults.transfer_ended()


async def _file_blocks(path: Path, start: int, end: int, block: int) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        source.seek(start)
        remaining = end - start
        while remaining:
            data = source.read(min(block, remaining))
            if not data:
                return
            remaining -= len(data)
            yield data


async def write_body(request: web.Request, response: web.StreamResponse, blocks: AsyncIterator[bytes], *,
                     cap: RateCap, drop: int | None = None, stall: float | None = None) -> web.StreamResponse:
    """Send ``blocks`` as the body of a prepared ``response`` at ``cap``'s pace, with the faults of a
    transfer: the connection cut after ``drop`` bytes, ``stall`` seconds of silence after the first
    block. Stops when the client leaves (a split range taken over by another stream, a timeout)."""
    sent = 0
    try:
        async for block in blocks:
            await cap.pace(len(block))
            if request.transport is None or request.transport.is_closing():
                break  # the client left
            if drop is not None and sent + len(block) >= drop:
                await response.write(block[: drop - sent])
                request.transport.abort()  # a cut connection, mid-body
                return response
            await response.write(block)
            sent += len(block)
            if stall:
                await _silence(request, stall)
                stall = None
        await response.write_eof()
    except ConnectionResetError:  # the client hung up (timeout, cancel, left early)
        pass
    return response


async def _silence(request: web.Request, seconds: float) -> None:
    """Say nothing for `seconds`, or until the client hangs up."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(0.02)


# Index pages -------------------------------------------------------------------------------------


def _index(directory: Path, url_path: str, style: str, evil_names: list[str]) -> str:
    rows = []
    for child in sorted(directory.iterdir(), key=lambda p: p.name):
        st = child.stat()
        is_dir = child.is_dir()
        rows.append((quote(child.name) + ("/" if is_dir else ""), html.escape(child.name) + ("/" if is_dir else ""),
                     st.st_mtime, None if is_dir else st.st_size))
    for name in evil_names:  # raw hrefs, as a hostile server would write them
        rows.append((html.escape(name, quote=True), html.escape(name), time.time(), 12))
    title = url_path.rstrip("/") or "/"
    parent = url_path.rstrip("/").rsplit("/", 1)[0] + "/" if url_path != "/" else None
    return _RENDER[style](title, parent, rows)


def _date(mtime: float, style: str) -> str:
    t = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc)
    if style in ("apache22", "nginx"):
        return f"{t.day:02d}-{_MONTHS[t.month - 1]}-{t.year} {t.hour:02d}:{t.minute:02d}"
    return f"{t.year}-{t.month:02d}-{t.day:02d} {t.hour:02d}:{t.minute:02d}"


def apache_size(size: int | None) -> str:
    """Apache's apr_strfsize: ``  0 ``, `` 42 ``, ``9.8K``, ``512K``, ``3.0M``."""
    if size is None:
        return "  - "
    if size < 973:
        return f"{size:3d} "
    units = "KMGTPE"
    unit = 0
    while True:
        remain, size = size & 1023, size >> 10
        if size >= 973:
            unit += 1
            continue
        if size < 9 or (size == 9 and remain < 973):
            tenth = (remain * 5 + 256) // 512
            if tenth >= 10:
                size, tenth = size + 1, 0
            return f"{size}.{tenth}{units[unit]}"
        if remain >= 512:
            size += 1
        return f"{size:3d}{units[unit]}"


def _apache_pre(title, parent, rows, style):
    doctype = ('<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">' if style == "apache22" else
               '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN" "http://www.w3.org/TR/html4/strict.dtd">')
    back = "[DIR]" if style == "apache22" else "[PARENTDIR]"
    out = [f"{doctype}\n<html>\n <head>\n  <title>Index of {title}</title>\n </head>\n <body>\n<h1>Index of {title}</h1>\n",
           '<pre><img src="/icons/blank.gif" alt="Icon "> <a href="?C=N;O=D">Name</a>                    '
           '<a href="?C=M;O=A">Last modified</a>      <a href="?C=S;O=A">Size</a>  <a href="?C=D;O=A">Description</a><hr>']
    if parent:
        out.append(f'<img src="/icons/back.gif" alt="{back}"> <a href="{parent}">Parent Directory</a>                             -   \n')
    for href, text, mtime, size in rows:
        alt, icon = ("[DIR]", "folder") if size is None else ("[   ]", "unknown")
        out.append(f'<img src="/icons/{icon}.gif" alt="{alt}"> <a href="{href}">{text}</a>{" " * max(1, 24 - len(text))}'
                   f'{_date(mtime, style)}  {apache_size(size)} \n')
    out.append("<hr></pre>\n</body></html>\n")
    return "".join(out)


def _htmltable(title, parent, rows):
    out = [f'<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN" "http://www.w3.org/TR/html4/strict.dtd">\n<html>\n'
           f" <head>\n  <title>Index of {title}</title>\n </head>\n <body>\n<h1>Index of {title}</h1>\n  <table>\n"
           '   <tr><th valign="top"><img src="/icons/blank.gif" alt="[ICO]"></th><th><a href="?C=N;O=D">Name</a></th>'
           '<th><a href="?C=M;O=A">Last modified</a></th><th><a href="?C=S;O=A">Size</a></th><th><a href="?C=D;O=A">Description</a></th></tr>\n'
           '   <tr><th colspan="5"><hr></th></tr>\n']
    if parent:
        out.append(f'<tr><td valign="top"><img src="/icons/back.gif" alt="[PARENTDIR]"></td><td><a href="{parent}">Parent Directory</a></td>'
                   '<td>&nbsp;</td><td align="right">  - </td><td>&nbsp;</td></tr>\n')
    for href, text, mtime, size in rows:
        alt = "[DIR]" if size is None else "[   ]"
        out.append(f'<tr><td valign="top"><img src="/icons/unknown.gif" alt="{alt}"></td><td><a href="{href}">{text}</a></td>'
                   f'<td align="right">{_date(mtime, "apache24")}  </td><td align="right">{apache_size(size)}</td><td>&nbsp;</td></tr>\n')
    out.append('   <tr><th colspan="5"><hr></th></tr>\n</table>\n</body></html>\n')
    return "".join(out)


def _nginx(title, parent, rows):
    out = [f"<html>\r\n<head><title>Index of {title}</title></head>\r\n<body>\r\n<h1>Index of {title}</h1><hr><pre>"
           '<a href="../">../</a>\r\n']
    for href, text, mtime, size in rows:
        out.append(f'<a href="{href}">{text}</a>{" " * max(1, 51 - len(text))}{_date(mtime, "nginx")}'
                   f'{"-" if size is None else size:>20}\r\n')
    out.append("</pre><hr></body>\r\n</html>\r\n")
    return "".join(out)


def _plain(title, parent, rows):
    items = "".join(f'<li><a href="{href}">{text}</a></li>\n' for href, text, _m, _s in rows)
    return (f'<!DOCTYPE HTML>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Directory listing for {title}</title>\n'
            f"</head>\n<body>\n<h1>Directory listing for {title}</h1>\n<hr>\n<ul>\n{items}</ul>\n<hr>\n</body>\n</html>\n")


_RENDER = {
    "apache24": lambda t, p, r: _apache_pre(t, p, r, "apache24"),
    "apache22": lambda t, p, r: _apache_pre(t, p, r, "apache22"),
    "htmltable": _htmltable,
    "nginx": _nginx,
    "plain": _plain,
}


# TLS ---------------------------------------------------------------------------------------------


def make_certificates(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A throw-away CA and a certificate for `host` signed by it: (ca.pem, cert.pem, key.pem)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "biomaj test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_file, cert_file, key_file
