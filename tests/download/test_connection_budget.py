"""One process's connections to a server stay within its host budget, whatever opens them:
listings (the manager's share), pipelined small files, big files one by one, several batches
at once. The server (a real HTTP server behind a front that counts TCP connections) refuses
one more than the budget with a 503: it must never have to."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

from biomaj.download.engine import ClientPool, Fetcher, FetchItem, FetchResult, FetchSettings
from biomaj.download.limits import LISTING_SHARE, HostBudget
from biomaj.download.matching import match_files
from biomaj.download.paths import safe_join
from biomaj.download.retry import RetryPolicy
from biomaj.protocols.base import RemoteEntry
from tests.servers import http_server
from tests.servers.connection_cap import ConnectionCap
from tests.servers.faults import Faults
from tests.servers.scripted_ftp import ScriptedFtp

FAST_RETRY = RetryPolicy.parse("stop_after_attempt(3)", "wait_none")


def make_tree(root: Path) -> dict[str, bytes]:
    files = {}
    for d in range(4):
        for n in range(40):
            files[f"d{d}/small{n:02d}.dat"] = os.urandom(2_000)
        files[f"d{d}/big.dat"] = os.urandom(600_000)  # above inline_max: fetched on its own
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


async def test_listings_and_downloads_share_one_budget_and_never_exceed_it(tmp_path):
    files = make_tree(tmp_path / "tree")
    server = await http_server.start(tmp_path / "tree", Faults(), protocol="http")
    cap = await ConnectionCap(server.config.port, limit=3).start()
    config = replace(server.config, port=cap.port)
    budget = HostBudget(3)
    listing, downloads = ClientPool(budget, share=LISTING_SHARE), ClientPool(budget)
    results: dict[str, FetchResult | BaseException] = {}
    try:
        async def list_again() -> None:
            for _ in range(3):  # another bank's listing while this one downloads
                async with listing.client(config) as client:
                    assert len(await match_files(client, r"^d\d/.*\.dat$")) == len(files)

        async with listing.client(config) as client:
            matched = await match_files(client, r"^d\d/.*\.dat$")
        assert listing.limit(config) == 1  # half of 3, at least 1
        offline = tmp_path / "offline"
        items = [FetchItem(m.entry, safe_join(offline, m.save_as)) for m in matched]
        fetcher = Fetcher(downloads, FetchSettings(retry=FAST_RETRY))

        async def batch(part: list[FetchItem]) -> None:
            async def done(index, result):
                results[part[index].entry.path] = result
            await fetcher.fetch_many(config, part, done)

        batches = [items[n::4] for n in range(4)]  # four download messages at once
        await asyncio.wait_for(asyncio.gather(list_again(), *(batch(b) for b in batches)), 60)
    finally:
        await listing.close()
        await downloads.close()
        await cap.close()
        await server.close()
    failed = {name: r for name, r in results.items() if not isinstance(r, FetchResult)}
    assert not failed
    assert {name: (offline / name).read_bytes() == data for name, data in files.items()} == dict.fromkeys(files, True)
    assert cap.refused == 0 and 1 <= cap.peak <= 3, (cap.peak, cap.refused)
    assert all(r.attempts == 1 for r in results.values())  # nothing was refused, nothing retried


async def test_an_idle_connection_gives_its_slot_to_another_pool_at_once(tmp_path):
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.dat").write_bytes(b"a" * 100)
    server = await http_server.start(tmp_path / "tree", Faults(), protocol="http")
    cap = await ConnectionCap(server.config.port, limit=1).start()
    config = replace(server.config, port=cap.port)
    budget = HostBudget(1)
    first, second = ClientPool(budget, idle_timeout=60), ClientPool(budget, idle_timeout=60)
    try:
        async with first.client(config) as client:
            await client.stat("a.dat")
        assert cap.open == 1  # kept open for the next use, holding the slot
        async with second.try_client(config) as client:  # the idle one is closed for it
            assert client is not None
            await client.stat("a.dat")
        async with first.client(config) as client:
            await client.stat("a.dat")
    finally:
        await first.close()
        await second.close()
        await cap.close()
        await server.close()
    assert (cap.refused, cap.peak, cap.accepted) == (0, 1, 3)


async def test_one_connection_per_client_when_pipelined_and_single_requests_mix(tmp_path):
    """A client that lists (one request at a time) then pipelines, or the reverse, keeps one
    connection: a server counting them sees one per client."""
    make_tree(tmp_path / "tree")
    server = await http_server.start(tmp_path / "tree", Faults(), protocol="http")
    cap = await ConnectionCap(server.config.port, limit=1).start()
    config = replace(server.config, port=cap.port)
    pool = ClientPool(HostBudget(1))
    results: dict[str, FetchResult | BaseException] = {}
    try:
        async with pool.client(config) as client:
            matched = await match_files(client, r"^d0/.*\.dat$")
        items = [FetchItem(m.entry, safe_join(tmp_path / "off", m.save_as)) for m in matched]

        async def done(index, result):
            results[items[index].entry.path] = result

        await Fetcher(pool, FetchSettings(retry=FAST_RETRY)).fetch_many(config, items, done)
        async with pool.client(config) as client:  # and back to single requests
            await client.stat("d0/big.dat")
    finally:
        await pool.close()
        await cap.close()
        await server.close()
    assert all(isinstance(r, FetchResult) for r in results.values()) and len(results) == 41
    assert (cap.refused, cap.peak) == (0, 1)


async def test_a_worker_keeps_its_connection_for_its_next_files(tmp_path):
    """Four batches of one directory each at once, two connections: each of a batch's workers
    keeps its connection from one file to the next instead of queueing behind the other
    batches' workers after each file, so an FTP session changes directory once per batch it
    serves, not for most files (2 connections x 4 batches: at most 8 CWDs; handed round
    after every file, about one per file)."""
    files = {f"dir{d}/f{n}.dat": os.urandom(1_000 + n) for d in range(4) for n in range(6)}
    server = ScriptedFtp(files)
    config = await server.start()
    pool = ClientPool(HostBudget(2))
    fetcher = Fetcher(pool, FetchSettings(retry=FAST_RETRY))
    results: dict[str, FetchResult | BaseException] = {}
    try:
        async def batch(d: int) -> None:
            names = sorted(name for name in files if name.startswith(f"dir{d}/"))
            items = [FetchItem(RemoteEntry(name, len(files[name])), tmp_path / name) for name in names]

            async def done(index, result):
                results[names[index]] = result

            await fetcher.fetch_many(config, items, done)

        await asyncio.gather(*(batch(d) for d in range(4)))
    finally:
        await pool.close()
        await server.close()
    assert {name: (tmp_path / name).read_bytes() for name in results} == files
    commands = server.commands()
    assert commands.count("USER") == 2 and commands.count("RETR") == len(files)
    assert commands.count("CWD") <= 8, commands
