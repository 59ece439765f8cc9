"""The Redis state beyond the shared conformance suite: what several processes see.

Two :class:`RedisState` instances on one Redis database stand for two processes; they share one
``FakeClock`` (wall clocks of the nodes) and one random key prefix. Nothing sleeps, except the
tests that stop and start a private ``redis-server`` to cut the connection.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from biomaj.bus import names
from biomaj.errors import ConfigError
from biomaj.state import LockOwner, NodeInfo, StateError, open_state
from biomaj.state.redis import GC_MARGIN, LOCK_INDEX, NODE_INDEX, RETENTION, RedisState
from tests.conftest import free_port
from tests.state.conftest import FakeClock, unique_prefix

pytestmark = pytest.mark.service

OWNER = LockOwner(host="h1", pid=100, job_id="update:alu", node_id="n1")
OTHER = LockOwner(host="h2", pid=200, job_id="update:alu", node_id="n2")


@pytest.fixture
async def pair(redis_url: str, clock: FakeClock) -> AsyncIterator[tuple[RedisState, RedisState]]:
    """Two processes' views of the same state (same database, same prefix)."""
    prefix = unique_prefix()
    one, two = (RedisState(redis_url, clock=clock, prefix=prefix) for _ in range(2))
    yield one, two
    await one.purge()
    await one.close()
    await two.close()


def node(node_id: str, clock: FakeClock) -> NodeInfo:
    return NodeInfo(node_id=node_id, host="h", pid=1, roles=("download",), started=clock() - 5, last_seen=clock())


# --- open_state ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "rediss://:pw@redis:6380/1", "unix:///run/redis.sock?db=2"])
async def test_open_state_gives_the_redis_state_without_connecting(url: str) -> None:
    state = open_state(url, clock=lambda: 42.0, prefix="p:")
    try:
        assert isinstance(state, RedisState)
        assert state.clock() == 42.0 and state.prefix == "p:"
        assert "pw" not in repr(state)
    finally:
        await state.close()


def test_other_schemes_are_still_refused() -> None:
    with pytest.raises(ConfigError, match=r"^state\.url: unsupported value"):
        open_state("mongodb://root:hunter2@db/biomaj")


@pytest.mark.parametrize("url", [
    "redis://:hunter2@127.0.0.1:notaport/0",
    "redis://:hunter2@127.0.0.1:6379/notadb",
    "redis://user:hunter2@127.0.0.1:6379/0?no_such_option=1",
    "unix:///run/redis.sock?password=hunter2&db=nope",
])
def test_bad_url_is_a_state_error_without_the_password(url: str) -> None:
    with pytest.raises(StateError, match=r"^state\.url: invalid Redis URL") as info:
        open_state(url)
    assert "hunter2" not in str(info.value) and "***" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_unreachable_redis_is_a_state_error_without_the_password() -> None:
    port = free_port()  # nothing listens there
    state = RedisState(f"redis://admin:hunter2@127.0.0.1:{port}/0", retries=1)
    try:
        with pytest.raises(StateError) as info:
            await state.acquire_lock("alu", OWNER, ttl=60)
    finally:
        await state.close()
    text = str(info.value)
    assert text.startswith("state store unreachable: Redis at ")
    assert f"redis://admin:***@127.0.0.1:{port}/0" in text and "acquire lock 'alu'" in text
    assert "hunter2" not in text
    assert info.value.__suppress_context__  # no driver traceback chained to it


# --- locks across processes ------------------------------------------------------------------


async def test_a_lock_held_by_one_process_is_refused_to_the_other(pair, clock: FakeClock) -> None:
    one, two = pair
    assert await one.acquire_lock("alu", OWNER, ttl=30)
    assert not await two.acquire_lock("alu", OTHER, ttl=30)
    assert not await two.renew_lock("alu", OTHER, ttl=30)
    assert not await two.release_lock("alu", OTHER)
    seen = await two.get_lock("alu")
    assert seen is not None and (seen.owner, seen.acquired, seen.expires) == (OWNER, clock(), clock() + 30)
    assert [lock.name for lock in await two.locks()] == ["alu"]
    # the owner may act on it from another connection (a restarted manager, say)
    assert await two.renew_lock("alu", OWNER, ttl=30)
    assert await one.release_lock("alu", OWNER)
    assert await two.acquire_lock("alu", OTHER, ttl=30)
    assert (await one.get_lock("alu")).owner == OTHER  # type: ignore[union-attr]


async def test_a_lock_is_free_for_the_other_once_expired_by_the_clock(pair, clock: FakeClock) -> None:
    one, two = pair
    await one.acquire_lock("alu", OWNER, ttl=30)
    clock.advance(29.999)
    assert not await two.acquire_lock("alu", OTHER, ttl=30)
    clock.advance(0.001)
    assert await two.acquire_lock("alu", OTHER, ttl=30)
    assert not await one.renew_lock("alu", OWNER, ttl=30)
    assert not await one.release_lock("alu", OWNER)
    info = await one.get_lock("alu")
    assert info is not None and info.owner == OTHER and info.acquired == clock()


@pytest.mark.parametrize("expired_holder", [False, True])
async def test_concurrent_acquire_grants_exactly_one(pair, clock: FakeClock, expired_holder: bool) -> None:
    one, two = pair
    if expired_holder:  # the race is also on taking over a lock whose owner died
        await one.acquire_lock("alu", LockOwner("dead", 1, "update:alu", "n0"), ttl=5)
        clock.advance(5)
    owners = [LockOwner(f"h{i}", i, "update:alu", f"n{i}") for i in range(60)]
    results = await asyncio.gather(*[
        (one if i % 2 else two).acquire_lock("alu", owner, ttl=60) for i, owner in enumerate(owners)
    ])
    assert sum(results) == 1
    winner = owners[results.index(True)]
    assert (await one.get_lock("alu")).owner == winner  # type: ignore[union-attr]
    assert [lock.owner for lock in await two.locks()] == [winner]


async def test_break_lock_from_the_other_process(pair) -> None:
    one, two = pair
    await one.acquire_lock("alu", OWNER, ttl=60)
    assert await two.break_lock("alu")
    assert not await one.renew_lock("alu", OWNER, ttl=60)
    assert await two.locks() == []


async def test_lock_names_are_taken_literally(pair) -> None:
    one, two = pair
    for name in ["a*", "a?", "[ab]", "with space", "ünïcode", "a:b"]:
        assert await one.acquire_lock(name, OWNER, ttl=60)
        assert not await two.acquire_lock(name, OTHER, ttl=60)
    assert await two.acquire_lock("a", OTHER, ttl=60)  # "a*" is no pattern
    assert sorted(lock.name for lock in await two.locks()) == sorted(["a", "a*", "a?", "[ab]", "with space", "ünïcode", "a:b"])


# --- node registry, cancel flags, progress across processes ---------------------------------


async def test_nodes_seen_from_the_other_process(pair, clock: FakeClock) -> None:
    one, two = pair
    await one.heartbeat(node("n1", clock), ttl=15)
    await two.heartbeat(node("n2", clock), ttl=15)
    assert [n.node_id for n in await two.nodes()] == ["n1", "n2"]
    assert (await two.nodes())[0] == node("n1", clock)
    clock.advance(10)
    await one.heartbeat(node("n1", clock), ttl=15)
    clock.advance(10)
    assert [n.node_id for n in await two.nodes()] == ["n1"]
    assert await two.forget_node("n1")
    assert await one.nodes() == []
    assert not await one.forget_node("n1")
    assert not await one.forget_node("n2")  # expired by the clock: no longer registered


async def test_cancel_flags_seen_across_processes(pair, clock: FakeClock) -> None:
    one, two = pair
    await one.set_cancel("update:alu")
    await one.set_cancel("update:pdb", ttl=30)
    assert await two.is_cancelled("update:alu") and await two.is_cancelled("update:pdb")
    clock.advance(30)
    assert not await two.is_cancelled("update:pdb")
    assert await two.is_cancelled("update:alu")  # no ttl: until cleared
    assert await two.clear_cancel("update:alu")
    assert not await one.is_cancelled("update:alu")
    assert not await one.clear_cancel("update:pdb")


async def test_progress_counts_exactly_from_both_processes(pair) -> None:
    one, two = pair
    await asyncio.gather(*[(one if i % 2 else two).incr_progress("j1", "bytes", 1000) for i in range(200)])
    assert await one.get_progress("j1") == {"bytes": 200_000}


async def test_progress_values_keep_their_types(pair) -> None:
    one, two = pair
    values = {"int": 2**62, "neg": -3, "float": 1.25, "whole_float": 2.0, "text": "5", "empty": "",
              "true": True, "false": False, "none": None, "unicode": "é ✓"}
    await one.set_progress("j1", values)
    back = await two.get_progress("j1")
    assert back == values
    assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in values.items()}
    for field in ("float", "whole_float", "text", "true", "none"):
        with pytest.raises(StateError, match="is not an integer"):
            await two.incr_progress("j1", field)
    assert await one.get_progress("j1") == values  # a refused increment changes nothing
    with pytest.raises(StateError):
        await one.incr_progress("j1", "int", 2**62)  # past Redis' 64-bit integers
    await one.set_progress("j1", {})
    assert await two.incr_progress("j1", "neg", 3) == 0


async def unique_prefixes_keep_installations_apart(redis_url: str, clock: FakeClock) -> None:
    one = RedisState(redis_url, clock=clock, prefix=unique_prefix())
    two = RedisState(redis_url, clock=clock, prefix=unique_prefix())
    try:
        assert await one.acquire_lock("alu", OWNER, ttl=60)
        assert await two.acquire_lock("alu", OTHER, ttl=60)
        await one.set_cancel("j")
        await one.heartbeat(node("n1", clock), ttl=60)
        assert not await two.is_cancelled("j") and await two.nodes() == []
    finally:
        for state in (one, two):
            await state.purge()
            await state.close()


# --- keys: layout, garbage collection, no leak -----------------------------------------------


async def test_keys_follow_names_and_all_expire_in_redis(pair, clock: FakeClock) -> None:
    one, _ = pair
    await one.acquire_lock("alu", OWNER, ttl=30)
    await one.heartbeat(node("n1", clock), ttl=15)
    await one.set_cancel("j1", ttl=100)
    await one.set_cancel("j2")
    await one.incr_progress("j1", "done")
    p = one.prefix
    assert await one.keys() == sorted(p + key for key in [
        names.lock_key("alu"), LOCK_INDEX, names.node_key("n1"), NODE_INDEX,
        names.cancel_key("j1"), names.cancel_key("j2"), names.progress_key("j1"),
    ])
    ttl = {key[len(p):]: await one._redis.pttl(key) / 1000 for key in await one.keys()}
    assert ttl[names.lock_key("alu")] == pytest.approx(30 + GC_MARGIN, abs=2)
    assert ttl[LOCK_INDEX] == pytest.approx(30 + GC_MARGIN, abs=2)
    assert ttl[names.node_key("n1")] == pytest.approx(15 + GC_MARGIN, abs=2)
    assert ttl[names.cancel_key("j1")] == pytest.approx(100 + GC_MARGIN, abs=2)
    assert ttl[names.cancel_key("j2")] == pytest.approx(RETENTION, abs=2)
    assert ttl[names.progress_key("j1")] == pytest.approx(RETENTION, abs=2)
    assert json.loads(await one._redis.hget(p + names.lock_key("alu"), "owner")) == {
        "host": "h1", "job_id": "update:alu", "node_id": "n1", "pid": 100}


async def test_index_ttl_is_extended_never_shortened(pair) -> None:
    one, _ = pair
    await one.acquire_lock("long", OWNER, ttl=3600)
    await one.acquire_lock("short", OWNER, ttl=1)
    assert await one._redis.pttl(one.prefix + LOCK_INDEX) / 1000 == pytest.approx(3600 + GC_MARGIN, abs=2)


async def test_stale_index_entries_are_pruned(pair, clock: FakeClock) -> None:
    one, _ = pair
    await one.heartbeat(node("gone", clock), ttl=10)
    await one.acquire_lock("gone", OWNER, ttl=10)
    clock.advance(10 + GC_MARGIN + 1)
    await one.heartbeat(node("alive", clock), ttl=10)
    await one.acquire_lock("alive", OWNER, ttl=10)
    assert await one._redis.zrange(one.prefix + NODE_INDEX, 0, -1) == ["alive"]
    assert await one._redis.zrange(one.prefix + LOCK_INDEX, 0, -1) == ["alive"]


async def test_no_key_is_left_after_the_test(redis_url: str, clock: FakeClock) -> None:
    state = RedisState(redis_url, clock=clock, prefix=unique_prefix())
    await state.acquire_lock("alu", OWNER, ttl=60)
    await state.heartbeat(node("n1", clock), ttl=60)
    await state.set_cancel("j1")
    await state.set_progress("j1", {"step": "download"})
    assert len(await state.keys()) == 6
    assert await state.purge() == 6
    await state.close()
    await state.close()  # idempotent
    check = RedisState(redis_url, prefix=state.prefix)
    try:
        assert await check.keys() == []
    finally:
        await check.close()


# --- a Redis that goes away ------------------------------------------------------------------


class RedisServer:
    """A private, disk-less redis-server on a free port, that tests stop and start."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:hunter2@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--requirepass", "hunter2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_a_short_redis_restart_is_survived(redis_server: RedisServer, clock: FakeClock) -> None:
    state = open_state(redis_server.url, clock=clock)
    try:
        await state.set_cancel("j1")
        redis_server.stop()
        restart = asyncio.get_running_loop().call_later(1.0, redis_server.start)
        started = time.monotonic()
        assert not await state.is_cancelled("j1")  # answered by the new (empty) server
        assert time.monotonic() - started >= 0.9
        assert await state.acquire_lock("alu", OWNER, ttl=60)
        restart.cancel()
    finally:
        await state.close()


async def test_a_lost_redis_is_a_clear_state_error(redis_server: RedisServer) -> None:
    state = RedisState(redis_server.url, retries=2)
    try:
        await state.heartbeat(NodeInfo(node_id="n1", host="h", pid=1), ttl=15)
        redis_server.stop()
        with pytest.raises(StateError, match=r"^state store unreachable: Redis at redis://:\*\*\*@127\.0\.0\.1:\d+/0 \(list nodes\)") as info:
            await state.nodes()
        assert "hunter2" not in str(info.value)
    finally:
        await state.close()


async def test_a_wrong_password_is_a_clear_state_error(redis_server: RedisServer) -> None:
    state = RedisState(redis_server.url.replace("hunter2", "wrong-secret"), retries=0)
    try:
        with pytest.raises(StateError, match=r"^state store refused the credentials: Redis at redis://:\*\*\*@") as info:
            await state.get_progress("j1")
        assert "wrong-secret" not in str(info.value)
    finally:
        await state.close()
