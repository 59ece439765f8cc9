"""HTTP/1.1 pipelining of small files (biomaj/protocols/http_pipeline.py, Fetcher.fetch_many):
real servers on 127.0.0.1, the aiohttp test server with its faults and a raw HTTP/1.1 server
that shows what pipelining changes on the wire (requests waiting while an answer is pending,
connections closed every N answers, answers without a length, redirects)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from biomaj.download.engine import ClientPool, FetchFailed, Fetcher, FetchItem, FetchResult, FetchSettings
from biomaj.download.limits import HostBudget
from biomaj.download.retry import RetryPolicy
from biomaj.protocols.base import RemoteConfig, RemoteEntry
from tests.servers import http_server
from tests.servers.faults import Faults

FAST_RETRY = RetryPolicy.parse("stop_after_attempt(4)", "wait_none")


def make_tree(root: Path, count: int, size: int = 3000) -> dict[str, bytes]:
    files = {}
    for i in range(count):
        name = f"d{i % 3}/f{i:03d}.dat"
        data = hashlib.sha256(str(i).encode()).digest() * (size // 32) + bytes([i % 256]) * (i % 7)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        files[name] = data
    return files


async def fetch_all(config: RemoteConfig, names: dict[str, int | None], offline: Path, *, per_host: int = 2,
                    **settings) -> dict[str, FetchResult | BaseException]:
    """Fetcher.fetch_many over ``names`` (name -> listed size, None: unknown with a size hint)."""
    pool = ClientPool(HostBudget(per_host))
    fetcher = Fetcher(pool, FetchSettings(**{"retry": FAST_RETRY, **settings}))
    items = [FetchItem(RemoteEntry(name, size, None, size_hint=size if size is not None else 4096),
                       offline / name) for name, size in names.items()]
    results: dict[str, FetchResult | BaseException] = {}

    async def done(index, result):
        assert items[index].entry.path not in results, "each file is told once"
        results[items[index].entry.path] = result

    try:
        await fetcher.fetch_many(config, items, done)
    finally:
        await pool.close()
    assert set(results) == set(names)
    return results


def on_disk(offline: Path) -> dict[str, bytes]:
    return {str(p.relative_to(offline)): p.read_bytes() for p in offline.rglob("*") if p.is_file()}


# The aiohttp test server and its faults ----------------------------------------------------------


@pytest.fixture
async def served(tmp_path):
    tree = tmp_path / "tree"
    files = make_tree(tree, 40)
    faults = Faults()
    server = await http_server.start(tree, faults, protocol="http")
    try:
        yield server, files
    finally:
        await server.close()


async def test_a_batch_arrives_whole_over_few_connections(served, tmp_path):
    server, files = served
    results = await fetch_all(server.config, {n: len(d) for n, d in files.items()}, tmp_path / "off")
    assert on_disk(tmp_path / "off") == files
    assert all(isinstance(r, FetchResult) and r.transferred == len(files[n]) for n, r in results.items())
    assert server.faults.logins <= 2  # per_host connections, not one per file
    assert set(server.faults.transfers.values()) == {1}


async def test_https_batches_are_pipelined_too(tmp_path):
    files = make_tree(tmp_path / "tree", 12)
    server = await http_server.start(tmp_path / "tree", Faults(), protocol="https")
    try:
        await fetch_all(server.config, {n: len(d) for n, d in files.items()}, tmp_path / "off", per_host=1)
        assert server.faults.logins == 1
        untrusted = replace(server.config, options={})  # the test CA not given: refused, said so
        results = await fetch_all(untrusted, {n: len(d) for n, d in files.items()}, tmp_path / "off2", per_host=1)
        assert all(isinstance(r, FetchFailed) and "certificate" in str(r) for r in results.values())
    finally:
        await server.close()
    assert on_disk(tmp_path / "off") == files


async def test_a_connection_cut_mid_body_loses_nothing(served, tmp_path):
    server, files = served
    cut = "d1/f010.dat"
    server.faults.drop_after[cut] = 1000
    results = await fetch_all(server.config, {n: len(d) for n, d in files.items()}, tmp_path / "off")
    assert on_disk(tmp_path / "off") == files
    assert all(isinstance(r, FetchResult) for r in results.values())
    assert server.faults.transfers[cut] == 2  # asked again, the rest of the pipeline too, once
    assert max(server.faults.transfers.values()) <= 2


async def test_a_server_error_is_retried_and_not_found_is_final(served, tmp_path):
    server, files = served
    server.faults.transient_errors["d0/f003.dat"] = 2
    names = {n: len(d) for n, d in files.items()} | {"d0/missing.dat": 100}
    results = await fetch_all(server.config, names, tmp_path / "off")
    assert isinstance(results["d0/f003.dat"], FetchResult)
    assert server.faults.transfers["d0/f003.dat"] == 3
    missing = results.pop("d0/missing.dat")
    assert isinstance(missing, FetchFailed) and not missing.retryable and "404" in str(missing)
    assert on_disk(tmp_path / "off") == files


async def test_a_silent_server_hits_the_read_timeout_then_the_file_arrives(served, tmp_path):
    server, files = served
    server.faults.stall["d2/f005.dat"] = 5.0
    config = replace(server.config, read_timeout=0.5)
    results = await fetch_all(config, {n: len(d) for n, d in files.items()}, tmp_path / "off")
    assert all(isinstance(r, FetchResult) for r in results.values())
    assert on_disk(tmp_path / "off") == files


async def test_files_of_unknown_size_use_their_hint_and_arrive(served, tmp_path):
    server, files = served
    results = await fetch_all(server.config, dict.fromkeys(files), tmp_path / "off")
    assert on_disk(tmp_path / "off") == files
    assert all(r.size == len(files[n]) for n, r in results.items())


# A raw HTTP/1.1 server: what happens on the wire --------------------------------------------------


@dataclass
class Wire:
    """A raw HTTP/1.1 server's settings and observations."""

    files: dict[str, bytes]
    answers_per_connection: int = 0  # 0: unlimited; N: "Connection: close" on the Nth answer
    no_length: bool = False  # close-delimited bodies (no Content-Length)
    redirects: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # before each answer
    connections: int = 0
    requests: list[str] = field(default_factory=list)
    waiting_while_answering: int = 0  # requests already received when an answer was written


async def start_wire(wire: Wire):
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        wire.connections += 1
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1].decode()
                wire.requests.append(target)
                if wire.delay:
                    await asyncio.sleep(wire.delay)
                if b"\r\n\r\n" in reader._buffer:  # noqa: SLF001 - the next request is here already
                    wire.waiting_while_answering += 1
                answered += 1
                last = wire.answers_per_connection and answered >= wire.answers_per_connection
                name = target.lstrip("/")
                if name in wire.redirects:
                    status, body, extra = "302 Found", b"", f"Location: {wire.redirects[name]}\r\n"
                elif name in wire.files:
                    status, body, extra = "200 OK", wire.files[name], ""
                else:
                    status, body, extra = "404 Not Found", b"no", ""
                if wire.no_length:
                    writer.write(f"HTTP/1.1 {status}\r\n{extra}Connection: close\r\n\r\n".encode() + body)
                    await writer.drain()
                    break
                close = "Connection: close\r\n" if last else ""
                writer.write(f"HTTP/1.1 {status}\r\n{extra}{close}Content-Length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
                if last:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, RemoteConfig(protocol="http", host="127.0.0.1", port=port, root="/", connect_timeout=5,
                                read_timeout=5)


@pytest.fixture
async def wire():
    servers = []

    async def start(**settings):
        files = {f"f{i:02d}.dat": os.urandom(500 + i) for i in range(30)}
        state = Wire(files, **settings)
        server, config = await start_wire(state)
        servers.append(server)
        return state, config

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_requests_are_sent_ahead_of_the_answers(wire, tmp_path):
    state, config = await wire(delay=0.005)
    await fetch_all(config, {n: len(d) for n, d in state.files.items()}, tmp_path / "off", per_host=1)
    assert on_disk(tmp_path / "off") == state.files
    assert state.connections == 1
    assert state.waiting_while_answering >= len(state.files) // 2


async def test_http_pipelining_false_asks_one_at_a_time(wire, tmp_path):
    state, config = await wire(delay=0.005)
    config = replace(config, options={"http_pipelining": "false"})
    await fetch_all(config, {n: len(d) for n, d in state.files.items()}, tmp_path / "off", per_host=1)
    assert on_disk(tmp_path / "off") == state.files
    assert state.waiting_while_answering == 0


async def test_a_server_closing_every_few_answers_gets_every_file_once(wire, tmp_path):
    state, config = await wire(answers_per_connection=7)
    await fetch_all(config, {n: len(d) for n, d in state.files.items()}, tmp_path / "off", per_host=1)
    assert on_disk(tmp_path / "off") == state.files
    assert sorted(state.requests) == sorted(f"/{n}" for n in state.files)  # nothing asked twice
    assert state.connections == -(-len(state.files) // 7)


async def test_answers_without_a_length_fall_back_to_one_request_each(wire, tmp_path):
    state, config = await wire(no_length=True)
    results = await fetch_all(config, {n: len(d) for n, d in state.files.items()}, tmp_path / "off")
    assert on_disk(tmp_path / "off") == state.files
    assert all(isinstance(r, FetchResult) for r in results.values())


async def test_a_redirect_is_followed_on_its_own(wire, tmp_path):
    state, config = await wire()
    state.redirects["f03.dat"] = "/f04.dat"
    names = {n: len(d) for n, d in state.files.items()} | {"f03.dat": len(state.files["f04.dat"])}
    results = await fetch_all(config, names, tmp_path / "off")
    assert (tmp_path / "off" / "f03.dat").read_bytes() == state.files["f04.dat"]
    assert isinstance(results["f03.dat"], FetchResult)


async def test_a_redirect_refused_by_the_bank_fails_that_file_only(wire, tmp_path):
    state, config = await wire()
    state.redirects["f03.dat"] = "/f04.dat"
    config = replace(config, options={"allow_redirections": "false"})
    names = {n: len(d) for n, d in state.files.items()}
    results = await fetch_all(config, names, tmp_path / "off")
    failed = results.pop("f03.dat")
    assert isinstance(failed, FetchFailed) and "allow_redirections" in str(failed)
    assert all(isinstance(r, FetchResult) for r in results.values())


# Small files: written whole, straight to their name ----------------------------------------------


async def test_a_small_file_cut_for_good_leaves_nothing_under_its_name(served, tmp_path):
    server, files = served
    name = "d1/f004.dat"
    server.faults.drop_after[name] = 100
    once = RetryPolicy.parse("stop_after_attempt(1)", "wait_none")
    results = await fetch_all(server.config, {name: len(files[name])}, tmp_path / "off", retry=once)
    assert isinstance(results[name], FetchFailed) and "cut short" in str(results[name])
    assert not (tmp_path / "off" / name).exists()
    assert list((tmp_path / "off").rglob("*.biomaj-part")) == []


async def test_a_part_file_the_server_does_not_resume_is_replaced_by_the_whole_file(tmp_path):
    files = make_tree(tmp_path / "tree", 3)
    server = await http_server.start(tmp_path / "tree", Faults(), protocol="http", ignore_range=True)
    try:
        name = "d0/f000.dat"
        part = tmp_path / "off" / (name + ".biomaj-part")
        part.parent.mkdir(parents=True)
        part.write_bytes(files[name][:1000])
        pool = ClientPool(HostBudget(1))
        try:
            result = await Fetcher(pool, FetchSettings(retry=FAST_RETRY)).fetch(
                server.config, RemoteEntry(name, len(files[name]), None), tmp_path / "off" / name)
        finally:
            await pool.close()
    finally:
        await server.close()
    assert result.transferred == len(files[name])
    assert (tmp_path / "off" / name).read_bytes() == files[name]
    assert not part.exists()


async def test_a_file_over_inline_max_still_goes_through_its_part_file(served, tmp_path):
    server, files = served
    name = "d2/f002.dat"
    server.faults.drop_after[name] = 1000
    server.faults.stall[name] = 0.0
    results = await fetch_all(server.config, {name: len(files[name])}, tmp_path / "off", inline_max=100)
    assert isinstance(results[name], FetchResult)
    assert results[name].resumed_from == 0 and results[name].attempts == 2
    assert server.faults.transfers[name] == 2
    assert (tmp_path / "off" / name).read_bytes() == files[name]


async def test_a_link_under_the_file_name_is_never_written_through(served, tmp_path):
    server, files = served
    name = "d0/f000.dat"
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not biomaj's")
    dest = tmp_path / "off" / name
    dest.parent.mkdir(parents=True)
    dest.symlink_to(outside)  # planted after the path checks
    results = await fetch_all(server.config, {name: len(files[name])}, tmp_path / "off")
    assert isinstance(results[name], OSError)
    assert outside.read_bytes() == b"not biomaj's"
