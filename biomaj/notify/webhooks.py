"""Signed webhooks: a JSON POST to each configured URL when something happens to a bank.

Events (:data:`EVENTS`): ``update.started``, ``release.published``, ``update.failed`` and
``release.removed``. Each delivery carries the run's summary (:func:`payload`) as its body, and
the headers ``X-Biomaj-Event`` (the event), ``X-Biomaj-Delivery`` (an id, the same for every
try of one delivery) and ``X-Biomaj-Signature: sha256=<hex>``, the HMAC-SHA256 of the raw body
with the hook's secret (GitHub's scheme), so that a receiver can check who sent it.

Deliveries never hold the workflow up: :meth:`Webhooks.send` queues them and returns; they run
in the background (a few at a time, a bounded number waiting: past it a delivery is dropped with
a warning), each tried again after each of ``retry_delays`` on a connection error, a timeout, an
HTTP 408, 429 or 5xx. :meth:`Webhooks.close` gives what is still under way a last bounded wait
(so that ``biomaj ctl update`` does not lose its last event), then abandons it with a warning.

Only http and https URLs are accepted (config.yml is checked when loaded), redirects are not
followed, and a host outside the allow-list, when there is one, is refused. Secrets are never
logged: a delivery is named by its hook's name and its URL's host only (a URL's path may itself
be a secret, as chat services make it).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from biomaj import __version__

EVENTS = ("update.started", "release.published", "update.failed", "release.removed")
SIGNATURE_HEADER = "X-Biomaj-Signature"
EVENT_HEADER = "X-Biomaj-Event"
DELIVERY_HEADER = "X-Biomaj-Delivery"
#: Seconds between two tries of a delivery: three tries, 1 s then 4 s apart.
RETRY_DELAYS = (1.0, 4.0)
#: Seconds :meth:`Webhooks.close` waits for the deliveries still under way.
EXIT_WAIT = 10.0
MAX_PENDING = 100  # deliveries waiting or under way; more are dropped (a receiver down for long)
CONCURRENT = 8  # deliveries under way at once

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hook:
    """One receiver: where to POST which events, and the secret that signs them.
    ``all_banks``: every bank's events; else only those of the banks naming it
    (bank property ``notify.webhooks``)."""

    name: str
    url: str
    secret: bytes = field(repr=False)
    events: frozenset[str] = frozenset(EVENTS)
    timeout: float = 10.0
    all_banks: bool = True

    @property
    def host(self) -> str:
        return (urlsplit(self.url).hostname or "").lower()

    def describe(self) -> str:
        """``galaxy (hooks.example.org)``: what logs say of the hook (never its path or query)."""
        return f"{self.name} ({self.host})"


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Biomaj-Signature`` value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def check_url(url: str) -> str:
    """``url`` when it is an http(s) URL with a host; ValueError saying what is wrong otherwise."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        raise ValueError("not a URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"only http:// and https:// URLs are accepted, not {parts.scheme or 'a URL without scheme'}")
    if not host:
        raise ValueError("the URL names no host")
    return url.strip()


def host_allowed(host: str, allow: Sequence[str]) -> bool:
    """``host`` is in the allow-list (``hooks.example.org``, or ``*.example.org`` for its
    sub-domains); an empty list allows any host."""
    if not allow:
        return True
    host = host.lower().rstrip(".")
    for entry in allow:
        entry = entry.strip().lower().rstrip(".")
        if host == entry or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).isoformat(timespec="seconds")


def payload(event: str, bank: str, *, action: str, status: str, session: Mapping[str, Any] | None = None,
            started: float | None = None, ended: float | None = None, release: str | None = None,
            error: str | None = None, release_dir: str | None = None) -> dict[str, Any]:
    """The body of a delivery: the run's summary, with the session's change report
    (``session["changes"]``) when it has one. ``status``: running, done, failed or cancelled."""
    session = session or {}
    session_error = session.get("error") or {}
    body: dict[str, Any] = {
        "event": event,
        "bank": bank,
        "action": action,
        "status": status,
        "release": release if release is not None else session.get("release"),
        "remote_release": session.get("remoterelease"),
        "session": session.get("id"),
        "release_dir": release_dir,
        "started": _iso(started),
        "ended": _iso(ended),
        "duration": round(ended - started, 3) if started is not None and ended is not None else None,
        "error": error or session_error.get("message") if status in ("failed", "cancelled") else None,
        "failed_task": session_error.get("task") if status in ("failed", "cancelled") else None,
        "biomaj_version": __version__,
    }
    if session.get("changes") is not None:
        body["changes"] = session["changes"]
    return body


@dataclass
class _Delivery:
    hook: Hook
    event: str
    bank: str
    id: str
    body: bytes
    log: logging.Logger


class Webhooks:
    """The hooks of this process and their deliveries (see the module's docstring).
    ``allow``: host allow-list (empty: any host); ``proxy``: an http(s) proxy every delivery
    goes through."""

    def __init__(self, hooks: Iterable[Hook], *, allow: Sequence[str] = (), proxy: str | None = None,
                 retry_delays: Sequence[float] = RETRY_DELAYS, exit_wait: float = EXIT_WAIT,
                 max_pending: int = MAX_PENDING):
        self.hooks = tuple(hooks)
        self.allow = tuple(allow)
        self.proxy = proxy or None
        self.retry_delays = tuple(retry_delays)
        self.exit_wait = exit_wait
        self.max_pending = max_pending
        self._tasks: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(CONCURRENT)
        self._session: Any = None  # aiohttp.ClientSession, opened at the first delivery
        self._closed = False

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def hooks_for(self, event: str, named: Iterable[str] = (), log: logging.Logger = log) -> list[Hook]:
        """The hooks ``event`` goes to for a bank naming ``named`` (its ``notify.webhooks``)."""
        named = [name.strip() for name in named if name.strip()]
        known = {hook.name for hook in self.hooks}
        unknown = [name for name in named if name not in known]
        if unknown:
            log.warning("Notify:notify.webhooks names %s, which config.yml's notify.webhooks does not define",
                        ", ".join(unknown))
        return [hook for hook in self.hooks if event in hook.events and (hook.all_banks or hook.name in named)]

    def send(self, event: str, body: Mapping[str, Any], *, named: Iterable[str] = (),
             log: logging.Logger = log) -> list[str]:
        """Queue the delivery of ``body`` to each hook of ``event`` and return at once (the ids
        of the deliveries queued). ``log``: where their outcomes are logged (the bank's logger)."""
        if event not in EVENTS:
            raise ValueError(f"unknown webhook event {event!r}")
        ids = []
        for hook in self.hooks_for(event, named, log):
            if self._closed:
                log.warning("Notify:webhook %s: %s not sent: biomaj is stopping", hook.describe(), event)
                continue
            if len(self._tasks) >= self.max_pending:
                log.warning("Notify:webhook %s: %s dropped: %d deliveries already wait (is a receiver down?)",
                            hook.describe(), event, len(self._tasks))
                continue
            delivery_id = uuid.uuid4().hex
            raw = json.dumps({**body, "delivery": delivery_id}, sort_keys=True, separators=(",", ":")).encode()
            delivery = _Delivery(hook, event, str(body.get("bank", "")), delivery_id, raw, log)
            task = asyncio.create_task(self._deliver(delivery), name=f"webhook-{hook.name}-{delivery_id[:8]}")
            task.delivery = delivery  # type: ignore[attr-defined]
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            ids.append(delivery_id)
            log.info("Notify:webhook %s: %s queued (delivery %s)", hook.describe(), event, delivery_id)
        return ids

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait (at most ``timeout`` seconds, default ``exit_wait``) for the deliveries under
        way; True if none is left."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.exit_wait if timeout is None else timeout)
        return not self._tasks

    async def close(self, timeout: float | None = None) -> None:
        """Refuse new deliveries, give those under way a last wait (see :meth:`flush`), abandon
        the rest with a warning each, and close the connections."""
        self._closed = True
        if not await self.flush(timeout):
            waited = self.exit_wait if timeout is None else timeout
            for task in list(self._tasks):
                delivery = task.delivery  # type: ignore[attr-defined]
                delivery.log.warning("Notify:webhook %s: %s of %s abandoned: not delivered within %gs of stopping",
                                     delivery.hook.describe(), delivery.event, delivery.bank, waited)
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- one delivery ------------------------------------------------------------------------

    async def _deliver(self, delivery: _Delivery) -> None:
        hook, log = delivery.hook, delivery.log
        if not host_allowed(hook.host, self.allow):
            log.warning("Notify:webhook %s: %s not sent: the host is not in notify.webhook_allow",
                        hook.describe(), delivery.event)
            return
        tries = len(self.retry_delays) + 1
        for attempt in range(1, tries + 1):
            async with self._slots:
                reason, again = await self._post(delivery)
            if reason is None:
                log.info("Notify:webhook %s: %s delivered (delivery %s)", hook.describe(), delivery.event, delivery.id)
                return
            if not again or attempt == tries:
                log.warning("Notify:webhook %s: %s not delivered (delivery %s, try %d of %d): %s",
                            hook.describe(), delivery.event, delivery.id, attempt, tries, reason)
                return
            delay = self.retry_delays[attempt - 1]
            log.info("Notify:webhook %s: %s not delivered yet (try %d of %d: %s); again in %gs",
                     hook.describe(), delivery.event, attempt, tries, reason, delay)
            await asyncio.sleep(delay)

    async def _post(self, delivery: _Delivery) -> tuple[str | None, bool]:
        """One try: (None, _) when delivered, else (why, whether to try again)."""
        import aiohttp  # here: a process without hooks never loads the client

        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": f"biomaj/{__version__}"})
        hook = delivery.hook
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: delivery.event,
            DELIVERY_HEADER: delivery.id,
            SIGNATURE_HEADER: sign(hook.secret, delivery.body),
        }
        try:
            async with self._session.post(hook.url, data=delivery.body, headers=headers, proxy=self.proxy,
                                          allow_redirects=False,
                                          timeout=aiohttp.ClientTimeout(total=hook.timeout)) as response:
                status = response.status
        except TimeoutError:
            return f"no answer within {hook.timeout:g}s", True
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {_client_reason(exc)}", True
        if 200 <= status < 300:
            return None, False
        if 300 <= status < 400:
            return f"HTTP {status}: a redirect, not followed (give the final URL)", False
        return f"HTTP {status}", status in (408, 429) or status >= 500


def _client_reason(exc: BaseException) -> str:
    """A client error in words, without the URL (its path may be a secret)."""
    os_error = getattr(exc, "os_error", None)
    if os_error is not None:
        return os_error.strerror or type(os_error).__name__
    return type(exc).__name__
