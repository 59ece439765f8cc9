"""HTTP specifics: index pages captured from real servers (golden files), auth, proxy, TLS,
direct GET/POST, Range corner cases, error mapping and a 100,000-entry listing."""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import json
import os
import ssl
import threading
import tracemalloc
from calendar import timegm
from dataclasses import replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from biomaj.protocols import open_protocol, protocol_class
from biomaj.protocols.base import FatalError, HttpParse, RemoteNotFound, RetryableError, Throttled
from biomaj.protocols.html_index import (
    BIOMAJ_DIR_LINE,
    BIOMAJ_FILE_LINE,
    IndexParser,
    LineSplitter,
    parse_index,
    parse_size,
)
from biomaj.protocols.http import DirectHttpProtocol, HttpProtocol, parse_http_date
from tests.protocols.conftest import MTIME, build_tree
from tests.servers import http_server
from tests.servers.faults import Faults

LISTINGS = Path(__file__).parent / "listings"
BASE = "http://127.0.0.1/pub/"


def _ts(text: str) -> float:
    fields = [int(x) for x in text.replace("-", " ").replace(":", " ").split()]
    return float(timegm((*fields, *([0] * (6 - len(fields))), 0, 0, 0)))


def _parsed(name: str, base: str = BASE, http_parse: HttpParse | None = None):
    text = (LISTINGS / name).read_text(encoding="utf-8")
    return [(e.name, e.is_dir, e.size, e.mtime) for e in parse_index(text, base, http_parse)]


# The captured tree: a.fasta 10000 B, big.bin 3145745 B, empty.txt 0 B, medium.bin 524288 B,
# "my file.txt" 42 B, small.txt 1234 B, sub1/ (b.fasta.gz 99 B).
APACHE = [
    ("a.fasta", False, None, _ts("2019-12-31 23:59")),
    ("big.bin", False, None, _ts("2023-03-07 17:45")),
    ("empty.txt", False, 0, _ts("2020-09-13 12:26")),
    ("medium.bin", False, None, _ts("2022-06-15 08:30")),
    ("my file.txt", False, 42, _ts("2020-02-29 10:00")),
    ("small.txt", False, None, _ts("2021-01-02 03:04")),
    ("sub1", True, None, _ts("2024-11-05 14:15")),
]


# Golden files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("listing", ["apache22-fancy.html", "apache24-fancy.html", "apache24-htmltable.html"])
def test_apache_listings(listing):
    assert _parsed(listing) == APACHE


def test_apache24_sub_directory_skips_the_absolute_parent_link():
    assert _parsed("apache24-fancy-subdir.html", "http://127.0.0.1/pub/sub1/") == [
        ("b.fasta.gz", False, 99, _ts("2024-11-05 14:15")),
    ]


def test_nginx_autoindex_has_exact_sizes():
    assert _parsed("nginx-autoindex.html") == [
        ("sub1", True, None, _ts("2024-11-05 14:15")),
        ("a.fasta", False, 10000, _ts("2019-12-31 23:59")),
        ("big.bin", False, 3145745, _ts("2023-03-07 17:45")),
        ("empty.txt", False, 0, _ts("2020-09-13 12:26")),
        ("medium.bin", False, 524288, _ts("2022-06-15 08:30")),
        ("my file.txt", False, 42, _ts("2020-02-29 10:00")),
        ("small.txt", False, 1234, _ts("2021-01-02 03:04")),
    ]


def test_lighttpd_dirlisting_has_seconds_and_approximate_sizes():
    assert _parsed("lighttpd-dirlisting.html") == [
        ("sub1", True, None, _ts("2024-11-05 14:15:00")),
        ("a.fasta", False, None, _ts("2019-12-31 23:59:00")),
        ("big.bin", False, None, _ts("2023-03-07 17:45:12")),
        ("empty.txt", False, None, _ts("2020-09-13 12:26:40")),
        ("medium.bin", False, None, _ts("2022-06-15 08:30:00")),
        ("my file.txt", False, None, _ts("2020-02-29 10:00:00")),
        ("small.txt", False, None, _ts("2021-01-02 03:04:05")),
    ]


def test_python_http_server_gives_names_only():
    assert _parsed("python-http-server.html") == [
        (name, name == "sub1", None, None)
        for name in ("a.fasta", "big.bin", "empty.txt", "medium.bin", "my file.txt", "small.txt", "sub1")
    ]


def test_hash_is_biomaj3s_md5_of_name_date_and_size():
    entries = {e.name: e for e in parse_index((LISTINGS / "apache22-fancy.html").read_text(), BASE)}
    # curl.py: md5(name + date group + str(humanfriendly.parse_size(size group)))
    assert entries["a.fasta"].hash == hashlib.md5(b"a.fasta31-Dec-2019 23:599800").hexdigest()
    assert entries["empty.txt"].hash == hashlib.md5(b"empty.txt13-Sep-2020 12:260").hexdigest()
    assert entries["sub1"].hash is None


def test_biomaj_default_regexps_behave_as_in_biomaj3():
    # BioMAJ 3's stock file regexp only knows alt="[   ]": the [TXT] files are not seen.
    parse = HttpParse(dir_line=BIOMAJ_DIR_LINE, file_line=BIOMAJ_FILE_LINE)
    assert _parsed("apache22-fancy.html", http_parse=parse) == [  # page order, not dirs first
        ("a.fasta", False, None, _ts("2019-12-31 23:59")),
        ("big.bin", False, None, _ts("2023-03-07 17:45")),
        ("medium.bin", False, None, _ts("2022-06-15 08:30")),
        ("sub1", True, None, _ts("2024-11-05 14:15")),
    ]


def test_bank_regexps_with_date_format_and_absent_groups():
    parse = HttpParse(
        dir_line=r'<a href="([^"]+)/">[^<]*</a>\s+(\S+ \S+)',
        file_line=r'<a href="([^"/]+)">[^<]*</a>\s+(\d\d-\w{3}-\d{4} \d\d:\d\d)\s+(\d+)',
        file_date_format="%%d-%%b-%%Y %%H:%%M",
    )
    entries = _parsed("nginx-autoindex.html", http_parse=parse)
    assert entries[0] == ("sub1", True, None, _ts("2024-11-05 14:15"))
    assert ("my file.txt", False, 42, _ts("2020-02-29 10:00")) in entries
    assert len(entries) == 7
    no_date_no_size = replace(parse, file_date=-1, file_size=-1)
    index = {e.name: e for e in parse_index((LISTINGS / "nginx-autoindex.html").read_text(), BASE, no_date_no_size)}
    assert (index["a.fasta"].size, index["a.fasta"].mtime, index["a.fasta"].hash) == (None, None, None)


def test_bad_group_number_is_a_configuration_error():
    parse = HttpParse(dir_line=r'<a href="([^"]+)/">', file_line=r'<a href="([^"/]+)">', dir_date=5)
    with pytest.raises(FatalError, match="no group 5"):
        _parsed("nginx-autoindex.html", http_parse=parse)


def test_links_that_are_not_children_are_skipped():
    page = "\n".join([
        '<a href="?C=N;O=D">Name</a> <a href="#top">top</a> <a href="mailto:x@y.org">mail</a>',
        '<a href="../">Parent</a> <a href="/">root</a> <a href="../escape.txt">e</a> <a href="..">dd</a>',
        '<a href="/etc/passwd">p</a> <a href="http://other.org/pub/x.gz">o</a> <a href="sub/deeper.gz">d</a>',
        '<a href="%2e%2e/x">enc</a> <a href="a%2Fb">slash</a> <a href="javascript:void(0)">js</a>',
        '<a href="/pub/abs.gz">abs</a> <a href="http://127.0.0.1/pub/full.gz">full</a>',
        "<a href='single%20quoted.txt'>s</a> <A HREF=bare.txt>b</A> <a href=\"amp&amp;name.txt\">a</a>",
        '<a href="./dot.txt">dot</a> <a href="q.txt?download=1">q</a>',
    ])
    names = [e.name for e in parse_index(page, BASE)]
    assert names == ["abs.gz", "full.gz", "single quoted.txt", "bare.txt", "amp&name.txt", "dot.txt", "q.txt"]


def test_icon_link_and_name_link_make_one_entry():
    page = ('<a href="x.gz"><img src="/i.gif" alt="[   ]"></a> <a href="x.gz">x.gz</a>  2020-01-02 03:04  120\n'
            '<a href="x.gz">again</a>\n')
    assert [(e.name, e.size, e.mtime) for e in parse_index(page, BASE)] == [("x.gz", 120, _ts("2020-01-02 03:04"))]


def test_table_rows_over_several_lines():
    page = "<table>\n<tr>\n <td><a href='f.txt'>f.txt</a></td>\n <td>2021-05-06 07:08</td>\n <td>77</td>\n</tr>\n</table>"
    assert [(e.name, e.size, e.mtime) for e in parse_index(page, BASE)] == [("f.txt", 77, _ts("2021-05-06 07:08"))]


def test_sizes_and_http_dates():
    assert parse_size("1234") == (1234, 1234)
    assert parse_size(" 9.8K ") == (None, 9800)
    assert parse_size("12M") == (None, 12_000_000)
    assert parse_size("-") == (None, 0)
    moment = _ts("1994-11-06 08:49:37")
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == moment
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == moment
    assert parse_http_date("Sun Nov  6 08:49:37 1994") == moment
    assert parse_http_date("yesterday") is None


def test_line_splitter_cuts_a_page_without_newlines():
    row = '<tr><td><a href="f{0}.txt">f{0}.txt</a></td><td>2020-01-01 00:00</td><td>{0}</td></tr>'
    page = "<table>" + "".join(row.format(i) for i in range(5000)) + "</table>"
    splitter = LineSplitter("utf-8")
    parser = IndexParser(BASE)
    entries, longest = [], 0
    data = page.encode()
    for i in range(0, len(data), 7000):
        for line in splitter.feed(data[i:i + 7000]):
            longest = max(longest, len(line))
            entries += parser.feed(line)
    for line in splitter.feed(b"", final=True):
        entries += parser.feed(line)
    entries += parser.close()
    assert [(e.name, e.size) for e in entries] == [(f"f{i}.txt", i) for i in range(5000)]
    assert longest < 2 * LineSplitter.MAX_LINE


# Against the test server ---------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "remote"
    root.mkdir()
    return root, build_tree(root)


@pytest.fixture
async def serve(tree):
    """Start tests/servers/http_server.py over `tree`; stopped at teardown."""
    servers = []

    async def start(protocol="http", **options):
        servers.append(await http_server.start(tree[0], Faults(), protocol=protocol, **options))
        return servers[-1]

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def odd():
    """Start a one-off aiohttp app from {route: handler} on 127.0.0.1; gives its port."""
    runners = []

    async def start(routes, ssl_context=None):
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_route("*", path, handler)
        runners.append(web.AppRunner(app, access_log=None))
        await runners[-1].setup()
        await web.TCPSite(runners[-1], "127.0.0.1", 0, ssl_context=ssl_context).start()
        return runners[-1].addresses[0][1]

    yield start
    for runner in runners:
        await runner.cleanup()


async def _read(client, path, offset=0):
    async with client.open(path, offset) as stream:
        data = b"".join([chunk async for chunk in stream])
    return stream, data


def test_registry():
    assert protocol_class("http") is HttpProtocol and protocol_class("https") is HttpProtocol
    assert protocol_class("directhttp") is DirectHttpProtocol and protocol_class("directhttps") is DirectHttpProtocol
    assert not DirectHttpProtocol.features.can_list and HttpProtocol.features.mtime_precision == 60


@pytest.mark.parametrize("style", http_server.STYLES)
async def test_every_index_style_lists_the_tree(tree, style, serve):
    server = await serve(style=style)
    async with open_protocol(server.config) as client:
        root = {e.path: e async for e in client.list()}
        sub = {e.path: e async for e in client.list("sub1")}
    assert set(root) == {"release.txt", "a.fasta", "big.bin", "empty.txt", "sub1", "sub2"}
    assert root["sub1"].is_dir and not root["a.fasta"].is_dir
    assert set(sub) == {"sub1/b.fasta.gz", "sub1/deep"}
    if style != "plain":
        assert root["empty.txt"].size == 0 and root["a.fasta"].mtime == 1_600_000_000 - 40  # minutes only
    if style == "nginx":
        assert root["big.bin"].size == 3 * 1024 * 1024 + 17


async def test_one_connection_serves_many_requests(tree, serve):
    server = await serve()
    async with open_protocol(server.config) as client:
        [e async for e in client.list()]
        for path in ("a.fasta", "release.txt", "sub1/b.fasta.gz"):
            await client.stat(path)
            await _read(client, path)
    assert server.faults.logins == 1


async def test_names_with_spaces_and_percent_signs(tree, serve):
    root, _ = tree
    (root / "my file %41.txt").write_bytes(b"spaced")
    server = await serve()
    async with open_protocol(server.config) as client:
        names = {e.path async for e in client.list()}
        _, data = await _read(client, "my file %41.txt")
        entry = await client.stat("my file %41.txt")
    assert "my file %41.txt" in names
    assert data == b"spaced" and entry.size == 6


async def test_basic_auth_is_sent_and_checked(tree, serve):
    server = await serve(auth=("reader", "s3cret:pw"))
    async with open_protocol(server.config) as client:
        assert len([e async for e in client.list()]) == 6
        _, data = await _read(client, "a.fasta")
    assert data == tree[1]["a.fasta"]
    assert server.seen[0]["headers"]["Authorization"] == "Basic " + base64.b64encode(b"reader:s3cret:pw").decode()
    async with open_protocol(replace(server.config, password="wrong")) as client:
        with pytest.raises(FatalError, match="HTTP 401") as failure:
            await client.stat("a.fasta")
    assert "wrong" not in str(failure.value) and "reader" not in str(failure.value)


def _forward_proxy(credentials: str):
    """A tiny forward proxy (absolute-form requests) that checks Proxy-Authorization."""
    seen: list[str] = []
    expected = "Basic " + base64.b64encode(credentials.encode()).decode()
    hop = {"proxy-authorization", "connection", "keep-alive", "host", "content-length", "transfer-encoding"}

    async def forward(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Proxy-Authorization") != expected:
            return web.Response(status=407, headers={"Proxy-Authenticate": 'Basic realm="proxy"'})
        target = request.raw_path
        assert target.startswith("http://"), target  # absolute-form: this really is a proxy request
        seen.append(target)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop}
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.request(request.method, URL(target, encoded=True), headers=headers,
                                       data=await request.read(), allow_redirects=False) as upstream:
                body = await upstream.read()
                keep = {k: v for k, v in upstream.headers.items() if k.lower() not in hop | {"content-encoding"}}
                return web.Response(status=upstream.status, body=body, headers=keep)

    return {"/{tail:.*}": forward}, seen


async def test_requests_go_through_the_proxy_with_its_credentials(tree, serve, odd):
    server = await serve()
    routes, seen = _forward_proxy("puser:ppass")
    proxy = f"http://127.0.0.1:{await odd(routes)}"
    config = replace(server.config, host="localhost", proxy=proxy, proxy_auth="puser:ppass")
    async with open_protocol(config) as client:
        names = {e.path async for e in client.list("sub1")}
        _, data = await _read(client, "a.fasta")
    assert names == {"sub1/b.fasta.gz", "sub1/deep"}
    assert data == tree[1]["a.fasta"]
    port = server.config.port
    assert seen == [f"http://localhost:{port}/sub1/", f"http://localhost:{port}/a.fasta"]
    async with open_protocol(replace(config, proxy_auth="puser:bad")) as client:
        with pytest.raises(FatalError, match="407") as failure:
            await _read(client, "a.fasta")
    assert "bad" not in str(failure.value) and "puser" not in str(failure.value)


async def test_https_with_the_wrong_ca_fails(tree, tmp_path, serve):
    server = await serve(protocol="https")
    other = tmp_path / "other-ca"
    other.mkdir()
    wrong_ca, _, _ = http_server.make_certificates(other)
    async with open_protocol(server.config) as client:
        assert (await client.stat("a.fasta")).size == 10_000
    async with open_protocol(replace(server.config, options={"ssl_server_cert": str(wrong_ca)})) as client:
        with pytest.raises(FatalError, match="certificate"):
            await client.stat("a.fasta")
    async with open_protocol(replace(server.config, options={})) as client:  # system CAs only
        with pytest.raises(FatalError):
            await client.stat("a.fasta")
    async with open_protocol(replace(server.config, options={"ssl_verifypeer": "0"})) as client:
        assert (await client.stat("a.fasta")).size == 10_000
    missing = {"ssl_server_cert": str(tmp_path / "nope.pem")}
    with pytest.raises(FatalError, match="ssl_server_cert"):
        async with open_protocol(replace(server.config, options=missing)) as client:
            await client.stat("a.fasta")


async def test_https_host_check_can_be_skipped_alone(tmp_path, odd):
    # A certificate for 127.0.0.2 served on 127.0.0.1: the chain is good, the name is not.
    ca, cert, key = http_server.make_certificates(tmp_path, host="127.0.0.2")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def hello(request):
        return web.Response(body=b"hello")

    port = await odd({"/hello.txt": hello}, ssl_context=context)
    config = _config(port, protocol="https", options={"ssl_server_cert": str(ca)})
    async with open_protocol(config) as client:
        with pytest.raises(FatalError, match="certificate"):
            await client.stat("hello.txt")
    async with open_protocol(replace(config, options={**config.options, "ssl_verifyhost": "0"})) as client:
        assert (await client.stat("hello.txt")).size == 5


async def test_direct_get_sends_params_as_query(tree, serve):
    server = await serve()
    config = replace(server.config, protocol="directhttp", direct_file="__echo__",
                     params={"db": "uniprot", "q": "a b&c"})
    async with open_protocol(config) as client:
        _, data = await _read(client, "__echo__")
    assert json.loads(data) == {"method": "GET", "query": {"db": "uniprot", "q": "a b&c"}, "form": {},
                                "content_type": None}


async def test_direct_post_sends_params_as_form_and_skips_head(tree, serve):
    server = await serve()
    config = replace(server.config, protocol="directhttp", direct_file="__echo__", method="POST",
                     params={"format": "fasta", "ids": "P1,P2"})
    async with open_protocol(config) as client:
        listed = [e async for e in client.list()]
        assert server.seen == []
        _, data = await _read(client, listed[0].path)
    assert [(e.path, e.size, e.mtime) for e in listed] == [("__echo__", None, None)]
    answer = json.loads(data)
    assert answer["method"] == "POST" and answer["form"] == {"format": "fasta", "ids": "P1,P2"}
    assert answer["content_type"] == "application/x-www-form-urlencoded"


async def test_direct_get_lists_its_one_file_with_head(tree, serve):
    server = await serve()
    config = replace(server.config, protocol="directhttp", root="/sub1/deep", direct_file="c.txt")
    async with open_protocol(config) as client:
        listed = [e async for e in client.list()]
        _, data = await _read(client, "c.txt")
        with pytest.raises(RemoteNotFound):
            [e async for e in client.list("elsewhere")]
    assert [(e.path, e.size, e.mtime) for e in listed] == [("c.txt", 1234, 1_600_000_000)]
    assert data == tree[1]["sub1/deep/c.txt"]
    assert [r["method"] for r in server.seen] == ["HEAD", "GET"]


async def test_direct_file_may_carry_a_query_string(tree, serve):
    server = await serve()
    config = replace(server.config, protocol="directhttp", direct_file="__echo__?format=tab&x=%2F",
                     params={"extra": "1"})
    async with open_protocol(config) as client:
        _, data = await _read(client, config.direct_file)
    assert json.loads(data)["query"] == {"format": "tab", "x": "/", "extra": "1"}


async def test_range_at_the_end_gives_an_empty_stream(tree, serve):
    server = await serve()
    size = len(tree[1]["a.fasta"])
    async with open_protocol(server.config) as client:
        stream, data = await _read(client, "a.fasta", offset=size)
        assert (stream.offset, stream.size, data) == (size, size, b"")
        # past the end: the file shrank, start again from 0
        stream, data = await _read(client, "a.fasta", offset=size + 5)
        assert (stream.offset, data) == (0, tree[1]["a.fasta"])
        # the session is still usable
        stream, data = await _read(client, "a.fasta", offset=10)
        assert (stream.offset, stream.size, data) == (10, size, tree[1]["a.fasta"][10:])


async def test_server_ignoring_range_restarts_at_zero(tree, serve):
    server = await serve(ignore_range=True)
    async with open_protocol(server.config) as client:
        stream, data = await _read(client, "big.bin", offset=1_000_000)
    assert stream.offset == 0 and data == tree[1]["big.bin"]


async def test_head_refused_falls_back_to_a_one_byte_get(tree, serve):
    server = await serve(head=False)
    async with open_protocol(server.config) as client:
        entry = await client.stat("sub1/deep/c.txt")
        empty = await client.stat("empty.txt")
    assert (entry.size, entry.mtime) == (1234, 1_600_000_000) and entry.hash
    assert empty.size == 0


@pytest.mark.parametrize("head", [True, False])
async def test_stat_gives_size_date_and_etag_and_asks_again_with_if_none_match(tree, serve, head):
    """stat(): Content-Length, Last-Modified, ETag (verbatim, for the next update); stat_since()
    sends the ETag as If-None-Match: a 304 gives the known entry back, a changed file new facts.
    With HEAD refused, the one-byte GET carries the same condition."""
    server = await serve(head=head)
    path = tree[0] / "sub1" / "deep" / "c.txt"
    async with open_protocol(server.config) as client:
        entry = await client.stat("sub1/deep/c.txt")
        again = await client.stat_since("sub1/deep/c.txt", entry)
        path.write_bytes(b"x" * 1300)
        os.utime(path, (MTIME, MTIME))  # same date, new size: the ETag changes
        changed = await client.stat_since("sub1/deep/c.txt", entry)
    assert (entry.size, entry.mtime) == (1234, MTIME)
    assert entry.etag and entry.etag.startswith('"') and entry.hash
    assert again == entry
    assert (changed.size, changed.mtime) == (1300, MTIME) and changed.etag != entry.etag
    method = "HEAD" if head else "GET"  # a refused HEAD is followed by the one-byte GET
    asked = [s["headers"].get("If-None-Match") for s in server.seen if s["method"] == method]
    assert asked == [None, entry.etag, entry.etag]
    assert not any("If-Modified-Since" in s["headers"] for s in server.seen)


async def test_stat_on_pythons_own_http_server(tmp_path):
    """Python's http.server lists names only; its HEAD gives the size and the date, no ETag."""
    (tmp_path / "a.txt").write_bytes(b"hello")
    os.utime(tmp_path / "a.txt", (MTIME, MTIME))
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        async with HttpProtocol(_config(server.server_address[1])) as client:
            listed = [e async for e in client.list()]
            entry = await client.stat("a.txt")
            same = await client.stat_since("a.txt", replace(entry, etag=None))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert [(e.path, e.size, e.mtime) for e in listed] == [("a.txt", None, None)]
    assert (entry.size, entry.mtime, entry.etag) == (5, MTIME, None) and entry.hash
    assert same == entry  # nothing to ask "changed since?" with: a plain HEAD


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


async def test_throttled_carries_retry_after(tree, serve):
    server = await serve()
    server.faults.throttle["a.fasta"] = 1
    server.faults.transient_errors["a.fasta"] = 1
    async with open_protocol(server.config) as client:
        with pytest.raises(Throttled) as throttled:
            await _read(client, "a.fasta")
        assert throttled.value.retry_after == 0.0
        with pytest.raises(Throttled) as unavailable:  # 503 without Retry-After
            await _read(client, "a.fasta")
        assert unavailable.value.retry_after is None
        _, data = await _read(client, "a.fasta")
    assert data == tree[1]["a.fasta"]


async def test_chunks_are_large_but_bounded(tree, serve):
    server = await serve()
    async with open_protocol(server.config) as client:
        async with client.open("big.bin") as stream:
            sizes = [len(chunk) async for chunk in stream]
    assert sum(sizes) == 3 * 1024 * 1024 + 17 and max(sizes) <= 1024 * 1024


# Status codes and odd servers ----------------------------------------------------------------------


@pytest.mark.parametrize(("status", "headers", "error", "retry_after"), [
    (404, {}, RemoteNotFound, None),
    (410, {}, RemoteNotFound, None),
    (401, {}, FatalError, None),
    (403, {}, FatalError, None),
    (400, {}, FatalError, None),
    (429, {"Retry-After": "7"}, Throttled, 7.0),
    (503, {"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"}, Throttled, 0.0),
    (408, {}, RetryableError, None),
    (500, {}, RetryableError, None),
    (502, {}, RetryableError, None),
])
async def test_statuses_map_onto_shared_errors(status, headers, error, retry_after, odd):
    async def answer(request):
        return web.Response(status=status, headers=headers)

    port = await odd({"/{tail:.*}": answer})
    async with HttpProtocol(_config(port)) as client:
        with pytest.raises(error) as failure:
            await _read(client, "x.bin")
        with pytest.raises(error):
            [e async for e in client.list("dir")]
    assert type(failure.value) is error or error is RetryableError
    assert f"HTTP {status}" in str(failure.value)
    if retry_after is not None:
        assert failure.value.retry_after == retry_after


def _config(port, **changes):
    from biomaj.protocols.base import RemoteConfig

    return replace(RemoteConfig(protocol="http", host="127.0.0.1", port=port, connect_timeout=5, read_timeout=5), **changes)


async def test_connection_refused_and_cut_are_retryable(free_port, odd):
    port = free_port()
    async with HttpProtocol(_config(port)) as client:
        with pytest.raises(RetryableError, match=f"^cannot reach http://127.0.0.1:{port}: connection refused$"):
            await client.stat("x")

    async def cut(request):
        request.transport.close()
        return web.Response()

    port = await odd({"/{tail:.*}": cut})
    async with HttpProtocol(_config(port)) as client:
        with pytest.raises(RetryableError) as failure:
            await client.stat("x")
    assert not isinstance(failure.value, Throttled)


async def test_redirects_follow_the_option(odd):
    async def moved(request):
        raise web.HTTPFound("/real.txt")

    async def real(request):
        return web.Response(body=b"here")

    port = await odd({"/moved.txt": moved, "/real.txt": real})
    async with HttpProtocol(_config(port)) as client:
        _, data = await _read(client, "moved.txt")
    assert data == b"here"
    async with HttpProtocol(_config(port, options={"allow_redirections": "false"})) as client:
        with pytest.raises(FatalError, match="allow_redirections"):
            await _read(client, "moved.txt")


async def test_gzip_index_is_inflated_but_gzip_files_are_not(odd):
    page = (LISTINGS / "nginx-autoindex.html").read_bytes()
    packed = gzip.compress(b"ACGT" * 1000)

    async def index(request):
        assert request.headers.get("Accept-Encoding") == "gzip"
        return web.Response(body=gzip.compress(page), headers={"Content-Encoding": "gzip", "Content-Type": "text/html"})

    async def archive(request):
        assert "Accept-Encoding" not in request.headers
        # A common misconfiguration (Apache AddEncoding x-gzip .gz): the archive labelled as encoded.
        return web.Response(body=packed, headers={"Content-Encoding": "gzip"})

    port = await odd({"/pub/": index, "/pub/seq.fa.gz": archive})
    async with HttpProtocol(_config(port, root="/pub")) as client:
        entries = {e.path: e async for e in client.list()}
        _, data = await _read(client, "seq.fa.gz")
    assert entries["a.fasta"].size == 10000 and entries["sub1"].is_dir
    assert data == packed


async def test_close_then_use_is_refused(tree, serve):
    server = await serve()
    client = open_protocol(server.config)
    await client.stat("a.fasta")
    await client.close()
    with pytest.raises(FatalError, match="closed"):
        await client.stat("a.fasta")


# Scale ------------------------------------------------------------------------------------------------

ROWS = 100_000


def _big_index() -> bytes:
    row = '<img src="/icons/unknown.gif" alt="[   ]"> <a href="file_{0:06d}.fasta.gz">file_{0:06d}.fasta.gz</a>      2020-09-13 12:26  {1}  \n'
    head = '<html><body><h1>Index of /big</h1><pre><img src="/icons/blank.gif" alt="Icon "> <a href="?C=N;O=D">Name</a><hr>\n'
    return (head + "".join(row.format(i, "1.2M" if i % 2 else f"{i:4d}") for i in range(ROWS)) + "<hr></pre></body></html>\n").encode()


async def test_a_100000_entry_index_lists_streaming_in_little_memory(odd):
    """Every entry, parsed as the page streams in (speed is measured by bench/download.py, not here)."""
    page = _big_index()

    async def index(request):
        response = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
        response.content_length = len(page)
        await response.prepare(request)
        view = memoryview(page)
        for i in range(0, len(page), 256 * 1024):
            await response.write(view[i:i + 256 * 1024])
        return response

    port = await odd({"/big/": index})
    async with HttpProtocol(_config(port, root="/big")) as client:
        count = 0
        async for entry in client.list():
            count += 1
        assert count == ROWS and entry.path == f"file_{ROWS - 1:06d}.fasta.gz" and entry.size is None

        tracemalloc.start()
        try:
            sizes = 0
            async for entry in client.list():
                sizes += entry.size or 0
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert sizes == sum(i for i in range(0, ROWS, 2))
    assert peak < 50 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    print(f"\n100,000 entries: tracemalloc peak {peak / 1e6:.1f} MB (page {len(page) / 1e6:.1f} MB)")
