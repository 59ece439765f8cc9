"""remote_files.stat_incomplete on its own, against real servers on 127.0.0.1: what a listing
lacks is asked of the server, a transient error is tried again, a server that cannot be reached
ends the run at once, the bank's option turns it off."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from aiohttp import web

from biomaj.download.engine import ClientPool
from biomaj.download.limits import HostBudget
from biomaj.download.retry import RetryPolicy
from biomaj.protocols.base import RemoteConfig, RemoteEntry
from biomaj.workflow.remote_files import Wanted, incomplete, stat_incomplete

LAST_MODIFIED = "Tue, 14 Nov 2023 22:13:13 GMT"


async def _serve(handler) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


def _wanted(port: int, count: int, **options: str) -> list[Wanted]:
    config = RemoteConfig(protocol="http", host="127.0.0.1", port=port, connect_timeout=5, read_timeout=5,
                          options=options)
    return [Wanted(config, RemoteEntry(f"f{i}.txt"), f"f{i}.txt") for i in range(count)]


async def test_sizes_and_dates_are_asked_with_progress_and_a_busy_server_is_asked_again():
    busy = {"f3.txt": 1}  # a 503 first, then the answer

    async def handler(request: web.Request) -> web.StreamResponse:
        name = request.path.lstrip("/")
        if busy.get(name):
            busy[name] -= 1
            return web.Response(status=503, headers={"Retry-After": "0"})
        response = web.StreamResponse(headers={"Last-Modified": LAST_MODIFIED, "ETag": f'"{name}"'})
        response.content_length = 100 + int(name[1:-4])
        await response.prepare(request)
        return response

    runner, port = await _serve(handler)
    pool = ClientPool(HostBudget(2))
    told = []

    async def progress(done: int, total: int) -> None:
        told.append((done, total))

    try:
        wanted = _wanted(port, 10)
        out, report = await stat_incomplete(wanted, pool, {}, retry=RetryPolicy.parse("stop_after_attempt(3)",
                                                                                        "wait_fixed(0)"),
                                            progress=progress)
    finally:
        await pool.close()
        await runner.cleanup()
    assert [(w.entry.size, w.entry.mtime, w.entry.etag) for w in out] == [
        (100 + i, 1_700_000_000 - 7, f'"f{i}.txt"') for i in range(10)]
    assert [w.save_as for w in out] == [w.save_as for w in wanted]
    assert (report.asked, report.completed, report.failed) == (10, 10, 0)
    assert told[-1] == (10, 10) and len(told) == 10


async def test_a_server_that_cannot_be_reached_ends_the_run_at_once(free_port):
    wanted = _wanted(free_port(), 50)  # nothing listens there
    pool = ClientPool(HostBudget(2))
    started = time.monotonic()
    try:
        out, report = await stat_incomplete(wanted, pool, {}, retry=RetryPolicy.parse())  # waits 3 s between tries
    finally:
        await pool.close()
    assert time.monotonic() - started < 2.5
    assert out == wanted and report.completed == 0 and 1 <= report.failed <= 4
    assert "cannot reach" in report.error


async def test_the_option_turns_it_off_and_complete_entries_are_left_alone():
    off = _wanted(1, 2, stat_incomplete="false")
    assert not any(incomplete(w) for w in off)
    complete = [replace(w, entry=RemoteEntry(w.entry.path, 5, 1.0)) for w in _wanted(1, 2)]
    assert not any(incomplete(w) for w in complete)
    out, report = await stat_incomplete(off + complete, ClientPool(), {})
    assert out == off + complete and report.asked == 0


async def test_a_cancel_stops_asking():
    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.05)
        return web.Response(body=b"x", headers={"Last-Modified": LAST_MODIFIED})

    runner, port = await _serve(handler)
    pool = ClientPool(HostBudget(2))
    cancelled = asyncio.Event()

    async def progress(done: int, total: int) -> None:
        if done == 3:
            cancelled.set()

    try:
        _, report = await stat_incomplete(_wanted(port, 100), pool, {}, progress=progress, cancelled=cancelled)
    finally:
        await pool.close()
        await runner.cleanup()
    assert report.completed < 10
