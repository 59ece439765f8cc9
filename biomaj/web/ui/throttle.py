"""Failed web UI logins, slowed down per (client address, account name).

After a failure, the same account from the same client address must wait a short back-off before
its next attempt is even checked (``first_delay`` seconds, doubling with each failure, at most
``max_delay``); an attempt within the back-off is refused (429) without looking at the password.
Failures are forgotten ``forget_after`` seconds after the last one, or at a successful login.
There is no long lock-out: the right password is refused for ``max_delay`` seconds at most after
the last failure, so that a guesser is slowed down without shutting the real user out.

The client address is the peer's, or, when the peer is one of the ``web.trusted_proxies``
(config.yml), the client that proxy names in ``X-Forwarded-For``: the header is the client's to
forge, so it counts only when a trusted proxy wrote it. The table holds at most ``max_entries``
(client, name) pairs: under a flood of names or addresses the oldest are forgotten first.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

NAME_CHARS = 128  # of an account name kept as a key (a longer one is cut: it is no user's name anyway)


def trusted_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``web.trusted_proxies`` as networks (an address is a network of one; config.yml's
    validation has already refused anything else)."""
    return tuple(ipaddress.ip_network(str(entry).strip(), strict=False) for entry in entries)


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:10.0.0.1 is 10.0.0.1
    return mapped or address


def client_address(request: web.BaseRequest, trusted: tuple[Network, ...] = ()) -> str:
    """The address of the client of ``request``: the peer, or, when the peer is a trusted proxy,
    the right-most address of ``X-Forwarded-For`` that is not a trusted proxy (the entries left of
    it were written by the client itself)."""
    peer = request.remote or ""
    current = _address(peer)
    if current is None or not trusted:
        return peer
    hops = [hop for value in request.headers.getall("X-Forwarded-For", ()) for hop in value.split(",")]
    while any(current in network for network in trusted) and hops:
        hop = _address(hops.pop())
        if hop is None:  # garbage: the last trusted hop is the best we know
            break
        current = hop
    return str(current)


@dataclass
class _Failures:
    count: int
    last: float  # time.monotonic() of the last one


class Throttle:
    """The back-off of failed logins per (client address, account name): see the module."""

    def __init__(self, trusted_proxies: Iterable[str] = (), *, first_delay: float = 0.5, max_delay: float = 5.0,
                 forget_after: float = 900.0, max_entries: int = 10_000):
        self.trusted = trusted_networks(trusted_proxies)
        self.first_delay, self.max_delay = first_delay, max_delay
        self.forget_after, self.max_entries = forget_after, max_entries
        self._failures: OrderedDict[tuple[str, str], _Failures] = OrderedDict()  # oldest failure first

    def __len__(self) -> int:
        return len(self._failures)

    def client(self, request: web.BaseRequest) -> str:
        """The client address of ``request`` (see :func:`client_address`)."""
        return client_address(request, self.trusted)

    @staticmethod
    def key(client: str, name: str) -> tuple[str, str]:
        """The throttle key of a login of ``name`` from the address ``client``."""
        return client, name.lower()[:NAME_CHARS]

    def _delay(self, count: int) -> float:
        return min(self.max_delay, self.first_delay * 2 ** min(count - 1, 32))

    def wait(self, key: tuple[str, str]) -> float:
        """Seconds before ``key`` may try again; 0 when it may now."""
        failures = self._failures.get(key)
        if failures is None:
            return 0.0
        since = time.monotonic() - failures.last
        if since >= self.forget_after:
            del self._failures[key]
            return 0.0
        return max(0.0, self._delay(failures.count) - since)

    def failed(self, key: tuple[str, str]) -> float:
        """Record a failure of ``key``; the back-off it now has to wait, in seconds."""
        now = time.monotonic()
        failures = self._failures.pop(key, None)
        if failures is None or now - failures.last >= self.forget_after:
            failures = _Failures(0, now)
        failures.count, failures.last = failures.count + 1, now
        self._failures[key] = failures  # the newest goes last
        while len(self._failures) > self.max_entries:
            self._failures.popitem(last=False)
        return self._delay(failures.count)

    def succeeded(self, key: tuple[str, str]) -> None:
        """Forget the failures of ``key`` (it logged in)."""
        self._failures.pop(key, None)
