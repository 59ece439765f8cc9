"""Redis :class:`State` for distributed mode (``state.url: redis://host:6379/0``).

Same contract as :class:`~biomaj.state.memory.MemoryState`, shared by every node of an
installation. Two clocks are at work, on purpose:

* **Liveness follows the injected clock.** Every entry stores the ``clock()`` timestamp at
  which it expires, and readers compare it with their own ``clock()``. Conditional writes
  (take, renew, release, break a lock) compare inside a Lua script, so they are atomic across
  processes: a lock is never granted to two owners, only its owner renews or releases it, and
  an expired one can be taken by anyone.
* **Redis TTLs only collect garbage.** Each key also gets a real ``PEXPIRE`` of its TTL plus
  :data:`GC_MARGIN` (or :data:`RETENTION` for entries without TTL: progress, cancel flags set
  without one), so the keys of a node that died vanish even if nobody reads them again.

Keys (every one behind the optional ``prefix``, which namespaces tests and lets several
installations share one Redis database):

====================  ===========  ===============================================
``lock_key(name)``    hash         ``owner`` (canonical JSON), ``acquired``, ``expires``
``LOCK_INDEX``        sorted set   lock name, scored by ``expires`` (for listing)
``node_key(id)``      string       JSON ``{"expires": ..., "info": NodeInfo.to_dict()}``
``NODE_INDEX``        sorted set   node id, scored by ``expires`` (for listing)
``cancel_key(job)``   string       JSON ``expires`` timestamp, or ``null`` (no TTL)
``progress_key(job)`` hash         field -> JSON scalar (ints stay ints, so HINCRBY works)
``semaphore_key(n)``  hash         holder -> ``"<slots> <lease expires> <waiting until>"``
``throttle_key(n)``   string       JSON ``{"limit": ..., "expires": ...}``
====================  ===========  ===============================================

Connection errors are retried with exponential backoff (a Redis restart of a few seconds goes
unnoticed); past that, operations raise :class:`StateError` naming the URL without its
password, as opening the state with a malformed URL does.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict
from urllib.parse import quote, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from biomaj.bus.names import (
    KEY_PREFIX, cancel_key, lock_key, node_key, progress_key, semaphore_key, throttle_key,
)
from biomaj.redaction import redact_url

from .base import (
    Clock,
    LockInfo,
    LockOwner,
    NodeInfo,
    ProgressValue,
    SlotHolders,
    State,
    StateError,
    Throttle,
    check_limit,
    check_progress_value,
    check_ttl,
)

__all__ = ["GC_MARGIN", "LOCK_INDEX", "NODE_INDEX", "RETENTION", "RedisState"]

# Index keys. They follow biomaj/bus/names.py's conventions (colon-separated, ``biomaj:``
# prefix) and belong there; they live here until names.py grows them. Per-entry keys come
# from names.py itself (lock_key, node_key, cancel_key, progress_key).
LOCK_INDEX = KEY_PREFIX + "locks"
"""Sorted set of lock names scored by their clock expiry, so that ``locks()`` needs no SCAN."""
NODE_INDEX = KEY_PREFIX + "nodes"
"""Sorted set of node ids scored by their clock expiry, so that ``nodes()`` needs no SCAN."""

GC_MARGIN = 60.0
"""Seconds a key outlives its TTL in Redis: room for clock skew between nodes."""
RETENTION = 7 * 24 * 3600.0
"""Seconds since its last write that an entry without TTL (progress, cancel flag) is kept."""

RETRIES = 10
"""Retries of a command on connection errors, with exponential backoff (base
:data:`BACKOFF_BASE`, cap :data:`BACKOFF_CAP`, "equal jitter": each wait is at least half its
nominal value): an outage of 8.5 to 17 seconds, such as a Redis restart, is survived."""
BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0
SOCKET_TIMEOUT = 10.0
"""Seconds to connect, to wait for a reply (every command here is small), or for a free
connection when :data:`MAX_CONNECTIONS` are busy."""
MAX_CONNECTIONS = 32
"""Connections per state object (per process)."""

# --- Lua: conditional writes, atomic on the server ---------------------------------------------
# Timestamps are computed in Python and passed as repr() strings: Lua's tostring() would round
# them to 14 digits. Lua only compares them (tonumber) and hands them back to Redis as given.

_KEEP_FOR = """
local function keep_for(key, ms)  -- extend a key's real TTL, never shorten it
  local left = redis.call('PTTL', key)
  if left == -1 or (left >= 0 and left < tonumber(ms)) then redis.call('PEXPIRE', key, ms) end
end
local function live(expires, now)
  local e = tonumber(expires)
  return e ~= nil and e > tonumber(now)
end
"""

# KEYS: lock, index. ARGV: now, owner, expires, gc_ms, name, prune_before.
_ACQUIRE = _KEEP_FOR + """
local owner, expires = unpack(redis.call('HMGET', KEYS[1], 'owner', 'expires'))
if owner and live(expires, ARGV[1]) then
  if owner ~= ARGV[2] then return 0 end
  redis.call('HSET', KEYS[1], 'expires', ARGV[3])
else
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'acquired', ARGV[1], 'expires', ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
keep_for(KEYS[2], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[6])
return 1
"""

# KEYS: lock, index. ARGV: now, owner, expires, gc_ms, name.
_RENEW = _KEEP_FOR + """
local owner, expires = unpack(redis.call('HMGET', KEYS[1], 'owner', 'expires'))
if not owner or owner ~= ARGV[2] or not live(expires, ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'expires', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
keep_for(KEYS[2], ARGV[4])
return 1
"""

# KEYS: lock, index. ARGV: now, owner, name.
_RELEASE = _KEEP_FOR + """
local owner, expires = unpack(redis.call('HMGET', KEYS[1], 'owner', 'expires'))
if not owner or owner ~= ARGV[2] or not live(expires, ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
"""

# KEYS: lock, index. ARGV: now, name.
_BREAK = _KEEP_FOR + """
local expires = redis.call('HGET', KEYS[1], 'expires')
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
if live(expires, ARGV[1]) then return 1 end
return 0
"""

# KEYS: node, index. ARGV: value, gc_ms, expires, node_id, prune_before.
_HEARTBEAT = _KEEP_FOR + """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
keep_for(KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[5])
return 1
"""


# A semaphore is one hash: holder -> "<slots> <lease expires> <waiting until>" (clock timestamps,
# "0" for none). A holder's slots count while its lease is alive; the entry goes when neither its
# lease nor its waiting mark is.
_SLOTS = _KEEP_FOR + """
local function entry(text)
  local slots, expires, waits = string.match(text, '^(%S+) (%S+) (%S+)$')
  return tonumber(slots), expires, waits
end
"""

# KEYS: semaphore. ARGV: now, holder, limit, expires, gc_ms, waiting until ('' for no mark).
_ACQUIRE_SLOT = _SLOTS + """
local all = redis.call('HGETALL', KEYS[1])
local total, mine, mine_expires = 0, 0, '0'
for i = 1, #all, 2 do
  local slots, expires, waits = entry(all[i + 1])
  if live(expires, ARGV[1]) then
    total = total + slots
    if all[i] == ARGV[2] then mine, mine_expires = slots, expires end
  elseif not live(waits, ARGV[1]) then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
if total < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[2], (mine + 1) .. ' ' .. ARGV[4] .. ' 0')
  keep_for(KEYS[1], ARGV[5])
  return 1
end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[2], mine .. ' ' .. mine_expires .. ' ' .. ARGV[6])
  keep_for(KEYS[1], ARGV[5])
end
return 0
"""

# KEYS: semaphore. ARGV: now, holder, expires, gc_ms.
_RENEW_SLOTS = _SLOTS + """
local text = redis.call('HGET', KEYS[1], ARGV[2])
if not text then return 0 end
local slots, expires, waits = entry(text)
if slots < 1 or not live(expires, ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], slots .. ' ' .. ARGV[3] .. ' ' .. waits)
keep_for(KEYS[1], ARGV[4])
return slots
"""

# KEYS: semaphore. ARGV: now, holder.
_RELEASE_SLOT = _SLOTS + """
local text = redis.call('HGET', KEYS[1], ARGV[2])
if not text then return 0 end
local slots, expires, waits = entry(text)
if slots < 1 or not live(expires, ARGV[1]) then return 0 end
if slots == 1 and not live(waits, ARGV[1]) then
  redis.call('HDEL', KEYS[1], ARGV[2])
else
  redis.call('HSET', KEYS[1], ARGV[2], (slots - 1) .. ' ' .. expires .. ' ' .. waits)
end
return 1
"""


def _ms(seconds: float) -> int:
    """A real Redis expiry in milliseconds: at least 1, at most a century (``ttl=inf`` is valid)."""
    return int(min(max(seconds, 0.001), 100 * 365 * 86400.0) * 1000)


def _owner_text(owner: LockOwner) -> str:
    """Canonical JSON of a lock owner: equal owners give equal strings (compared in Lua)."""
    return json.dumps(asdict(owner), sort_keys=True, separators=(",", ":"))


def _redact(url: str) -> str:
    """``redact_url`` plus a ``password=`` query parameter (``unix:///sock?password=...``)."""
    return re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", redact_url(url))


def _url_secrets(url: str) -> list[str]:
    """Passwords in ``url`` (as written and unquoted), to scrub from error messages."""
    found: list[str] = []
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        found += [password, unquote(password)]
    for written in re.findall(r"(?i)[?&]password=([^&#]*)", url):
        found += [written, unquote(written)]
    return sorted({s for s in found if s}, key=len, reverse=True)


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisState(State):
    """Node registry, locks, cancel flags, progress, semaphores and throttles in Redis, with an
    injectable clock.

    ``prefix`` is put in front of every key (tests use a random one per test). Creating the
    object opens no connection; the first operation does.
    """

    shared = True

    def __init__(self, url: str, *, clock: Clock = time.time, prefix: str = "",
                 retries: int = RETRIES) -> None:
        self.clock = clock
        self.prefix = prefix
        self.url = _redact(url)  # for messages: the password is masked
        self._secrets = _url_secrets(url)
        self._closed = False
        transient = [RedisConnectionError, RedisTimeoutError, OSError]
        retry = Retry(EqualJitterBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), retries,
                      supported_errors=tuple(transient))
        try:
            parts = urlsplit(url)
            if parts.scheme.lower() in ("redis", "rediss") and not re.fullmatch(r"/?(\d+/?)?", parts.path):
                # redis-py would quietly use database 0
                raise ValueError(f"the path must be a database number such as /0, not {parts.path!r}")
            # redis.asyncio.from_url's URL parsing, with a bounded pool: callers that fire one
            # task per chunk (download progress) wait for a connection instead of opening hundreds.
            pool = aioredis.BlockingConnectionPool.from_url(
                url, decode_responses=True, retry=retry, retry_on_error=transient,  # redis-py 5 needs both
                max_connections=MAX_CONNECTIONS,
                timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT, socket_timeout=SOCKET_TIMEOUT,
            )
            pool.connection_class(**pool.connection_kwargs)  # rejects unknown ?options now
            self._redis = aioredis.Redis.from_pool(pool)
        except (ValueError, TypeError) as exc:
            raise StateError(f"state.url: invalid Redis URL {self.url!r}: {self._scrub(exc)}") from None
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._break = self._redis.register_script(_BREAK)
        self._heartbeat = self._redis.register_script(_HEARTBEAT)
        self._acquire_slot = self._redis.register_script(_ACQUIRE_SLOT)
        self._renew_slots = self._redis.register_script(_RENEW_SLOTS)
        self._release_slot = self._redis.register_script(_RELEASE_SLOT)

    def __repr__(self) -> str:
        return f"RedisState({self.url!r}, prefix={self.prefix!r})"

    # --- helpers -----------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        for secret in self._secrets:
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
        return text

    @asynccontextmanager
    async def _talking(self, action: str) -> AsyncIterator[None]:
        """Turn Redis errors into :class:`StateError` (no password, no driver traceback)."""
        try:
            yield
        except AuthenticationError as exc:
            raise StateError(
                f"state store refused the credentials: Redis at {self.url} ({action}): {self._scrub(exc)}"
            ) from None
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StateError(
                f"state store unreachable: Redis at {self.url} ({action}): {self._scrub(exc)}"
            ) from None
        except RedisError as exc:
            raise StateError(f"state store error: Redis at {self.url} ({action}): {self._scrub(exc)}") from None

    # --- node registry -----------------------------------------------------------------------

    async def heartbeat(self, node: NodeInfo, ttl: float) -> None:
        ttl = check_ttl(ttl)
        now = self.clock()
        expires = now + ttl
        value = json.dumps({"expires": expires, "info": node.to_dict()}, sort_keys=True)
        async with self._talking("heartbeat"):
            await self._heartbeat(
                keys=[self._key(node_key(node.node_id)), self._key(NODE_INDEX)],
                args=[value, _ms(ttl + GC_MARGIN), repr(expires), node.node_id, repr(now - GC_MARGIN)],
            )

    async def nodes(self) -> list[NodeInfo]:
        now = self.clock()
        async with self._talking("list nodes"):
            ids = await self._redis.zrangebyscore(self._key(NODE_INDEX), f"({now!r}", "+inf")
            values = await self._redis.mget([self._key(node_key(i)) for i in ids]) if ids else []
        found: list[NodeInfo] = []
        for value in values:
            if value is None:  # forgotten (or collected) since the index was read
                continue
            entry = json.loads(value)
            if entry["expires"] > now:
                found.append(NodeInfo.from_dict(entry["info"]))
        return sorted(found, key=lambda info: info.node_id)

    async def forget_node(self, node_id: str) -> bool:
        key = self._key(node_key(node_id))
        async with self._talking("forget node"), self._redis.pipeline(transaction=True) as pipe:
            pipe.get(key).delete(key).zrem(self._key(NODE_INDEX), node_id)
            value, _, _ = await pipe.execute()
        return value is not None and json.loads(value)["expires"] > self.clock()

    # --- locks -------------------------------------------------------------------------------

    def _lock_keys(self, name: str) -> list[str]:
        return [self._key(lock_key(name)), self._key(LOCK_INDEX)]

    async def acquire_lock(self, name: str, owner: LockOwner, ttl: float) -> bool:
        ttl = check_ttl(ttl)
        now = self.clock()
        async with self._talking(f"acquire lock {name!r}"):
            taken = await self._acquire(
                keys=self._lock_keys(name),
                args=[repr(now), _owner_text(owner), repr(now + ttl), _ms(ttl + GC_MARGIN), name,
                      repr(now - GC_MARGIN)],
            )
        return bool(taken)

    async def renew_lock(self, name: str, owner: LockOwner, ttl: float) -> bool:
        ttl = check_ttl(ttl)
        now = self.clock()
        async with self._talking(f"renew lock {name!r}"):
            renewed = await self._renew(
                keys=self._lock_keys(name),
                args=[repr(now), _owner_text(owner), repr(now + ttl), _ms(ttl + GC_MARGIN), name],
            )
        return bool(renewed)

    async def release_lock(self, name: str, owner: LockOwner) -> bool:
        async with self._talking(f"release lock {name!r}"):
            released = await self._release(keys=self._lock_keys(name),
                                           args=[repr(self.clock()), _owner_text(owner), name])
        return bool(released)

    @staticmethod
    def _lock_info(name: str, fields: list[str | None], now: float) -> LockInfo | None:
        owner, acquired, expires = fields
        if owner is None or acquired is None or expires is None or float(expires) <= now:
            return None
        return LockInfo(name, LockOwner(**json.loads(owner)), float(acquired), float(expires))

    async def get_lock(self, name: str) -> LockInfo | None:
        now = self.clock()
        async with self._talking(f"read lock {name!r}"):
            fields = await self._redis.hmget(self._key(lock_key(name)), ["owner", "acquired", "expires"])
        return self._lock_info(name, fields, now)

    async def locks(self) -> list[LockInfo]:
        now = self.clock()
        async with self._talking("list locks"):
            names = await self._redis.zrangebyscore(self._key(LOCK_INDEX), f"({now!r}", "+inf")
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hmget(self._key(lock_key(name)), ["owner", "acquired", "expires"])
                rows = await pipe.execute() if names else []
        found = [self._lock_info(name, fields, now) for name, fields in zip(names, rows)]
        return sorted((lock for lock in found if lock is not None), key=lambda lock: lock.name)

    async def break_lock(self, name: str) -> bool:
        async with self._talking(f"break lock {name!r}"):
            broken = await self._break(keys=self._lock_keys(name), args=[repr(self.clock()), name])
        return bool(broken)

    # --- cancel flags ------------------------------------------------------------------------

    async def set_cancel(self, job_id: str, *, ttl: float | None = None) -> None:
        if ttl is None:
            value, keep = None, RETENTION
        else:
            ttl = check_ttl(ttl)
            value, keep = self.clock() + ttl, ttl + GC_MARGIN
        async with self._talking(f"cancel {job_id}"):
            await self._redis.set(self._key(cancel_key(job_id)), json.dumps(value), px=_ms(keep))

    def _flag_set(self, value: str | None) -> bool:
        if value is None:
            return False
        expires = json.loads(value)
        return expires is None or expires > self.clock()

    async def is_cancelled(self, job_id: str) -> bool:
        async with self._talking(f"read cancel flag of {job_id}"):
            value = await self._redis.get(self._key(cancel_key(job_id)))
        return self._flag_set(value)

    async def clear_cancel(self, job_id: str) -> bool:
        key = self._key(cancel_key(job_id))
        async with self._talking(f"clear cancel flag of {job_id}"), self._redis.pipeline(transaction=True) as pipe:
            value, _ = await pipe.get(key).delete(key).execute()
        return self._flag_set(value)

    # --- progress counters -------------------------------------------------------------------

    async def incr_progress(self, job_id: str, field: str, n: int = 1) -> int:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"progress increment must be an int, got {n!r}")
        key = self._key(progress_key(job_id))
        async with self._talking(f"count progress of {job_id}"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hincrby(key, field, n).pexpire(key, _ms(RETENTION))
                value, _ = await pipe.execute(raise_on_error=False)
            if isinstance(value, ResponseError):  # the field holds text, a float, a bool ...
                current = await self._redis.hget(key, field)
                shown = json.loads(current) if current is not None else None
                raise StateError(f"progress field {field!r} of job {job_id} is not an integer: {shown!r}")
        return int(value)

    async def set_progress(self, job_id: str, mapping: Mapping[str, ProgressValue]) -> None:
        values = {str(k): json.dumps(check_progress_value(str(k), v)) for k, v in mapping.items()}
        if not values:
            return
        key = self._key(progress_key(job_id))
        async with self._talking(f"set progress of {job_id}"), self._redis.pipeline(transaction=True) as pipe:
            await pipe.hset(key, mapping=values).pexpire(key, _ms(RETENTION)).execute()

    async def get_progress(self, job_id: str) -> dict[str, ProgressValue]:
        async with self._talking(f"read progress of {job_id}"):
            fields = await self._redis.hgetall(self._key(progress_key(job_id)))
        return {name: json.loads(value) for name, value in fields.items()}

    async def clear_progress(self, job_id: str) -> None:
        async with self._talking(f"clear progress of {job_id}"):
            await self._redis.delete(self._key(progress_key(job_id)))

    # --- counting semaphores ------------------------------------------------------------------

    async def acquire_slot(self, name: str, holder: str, limit: int, ttl: float, *,
                           wait_ttl: float | None = None) -> bool:
        limit, ttl = check_limit(limit), check_ttl(ttl)
        waits = "" if wait_ttl is None else repr(self.clock() + check_ttl(wait_ttl))
        now = self.clock()
        async with self._talking(f"take a slot of {name!r}"):
            taken = await self._acquire_slot(
                keys=[self._key(semaphore_key(name))],
                args=[repr(now), holder, limit, repr(now + ttl), _ms(max(ttl, wait_ttl or 0) + GC_MARGIN), waits],
            )
        return bool(taken)

    async def renew_slots(self, name: str, holder: str, ttl: float) -> int:
        ttl = check_ttl(ttl)
        now = self.clock()
        async with self._talking(f"renew the slots of {name!r}"):
            slots = await self._renew_slots(keys=[self._key(semaphore_key(name))],
                                            args=[repr(now), holder, repr(now + ttl), _ms(ttl + GC_MARGIN)])
        return int(slots)

    async def release_slot(self, name: str, holder: str) -> bool:
        async with self._talking(f"give a slot of {name!r} back"):
            released = await self._release_slot(keys=[self._key(semaphore_key(name))],
                                                args=[repr(self.clock()), holder])
        return bool(released)

    async def slot_holders(self, name: str) -> SlotHolders:
        now = self.clock()
        async with self._talking(f"read the slots of {name!r}"):
            entries = await self._redis.hgetall(self._key(semaphore_key(name)))
        held, waiting = {}, set()
        for holder, text in sorted(entries.items()):
            slots, expires, waits = text.split(" ")
            if float(expires) > now and int(slots) > 0:
                held[holder] = int(slots)
            if float(waits) > now:
                waiting.add(holder)
        return SlotHolders(held=held, waiting=frozenset(waiting))

    # --- throttles ---------------------------------------------------------------------------

    async def set_throttle(self, name: str, limit: int, ttl: float) -> None:
        limit, ttl = check_limit(limit), check_ttl(ttl)
        value = json.dumps({"limit": limit, "expires": self.clock() + ttl})
        async with self._talking(f"throttle {name!r}"):
            await self._redis.set(self._key(throttle_key(name)), value, px=_ms(ttl + GC_MARGIN))

    async def get_throttle(self, name: str) -> Throttle | None:
        async with self._talking(f"read the throttle of {name!r}"):
            value = await self._redis.get(self._key(throttle_key(name)))
        if value is None:
            return None
        data = json.loads(value)
        return Throttle(data["limit"], data["expires"]) if data["expires"] > self.clock() else None

    # --- lifecycle ---------------------------------------------------------------------------

    async def keys(self) -> list[str]:
        """Every key of this state's namespace (``prefix`` + ``biomaj:*``), for tests and admins."""
        pattern = _glob_escape(self._key(KEY_PREFIX)) + "*"
        async with self._talking("list keys"):
            return sorted([key async for key in self._redis.scan_iter(match=pattern, count=500)])

    async def purge(self) -> int:
        """Delete every key of this state's namespace; return how many. With an empty prefix
        that is all biomaj state in the database: every lock, flag and counter, for every node."""
        keys = await self.keys()
        async with self._talking("purge keys"):
            for start in range(0, len(keys), 500):
                await self._redis.delete(*keys[start:start + 500])
        return len(keys)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._redis.aclose()
        except (RedisError, OSError):  # closing a connection that is already gone
            pass
