"""Optional LDAP authentication: a password is checked by an LDAP simple bind.

How a login is checked (:meth:`LdapAuth.authenticate`):

1. the login name is checked locally first: empty names, empty passwords, names longer than 128
   characters or with characters outside ``[A-Za-z0-9_.@+-]`` are refused without any network call;
2. the user's entry is searched under ``base_dn`` with ``user_filter`` (default
   ``(|(uid={user})(mail={user}))``), ``{user}`` being the login name *escaped* for a filter
   (RFC 4515). The search binds as the service account ``bind_dn`` when configured, anonymously
   otherwise. Exactly one entry must match: none or several is a failed login;
3. a simple bind as that entry's DN with the password, on a new connection: the login succeeds
   only if the server accepts this bind.

A failed login is ``None``, whatever the reason (unknown user, wrong password, ambiguous name).
An unreachable server, a refused service-account bind or a server-side search error raise
:class:`LdapUnavailable` (a :class:`~biomaj.errors.BiomajError`), whose message names the URL and
never a password. :meth:`LdapAuth.lookup` is the search alone, to show who a user is.

BioMAJ 3 got three things wrong, fixed here:

- it put the login name into the filter ``(&(|(uid=<user>)(mail=<user>)))`` unescaped, so ``*``
  or ``alice)(uid=*`` rewrote the filter (LDAP filter injection). Names are now validated and
  escaped (``escape_filter_chars``); :meth:`~LdapAuth.lookup`, which accepts any name, relies on
  the escaping alone;
- it accepted an empty password: a simple bind with a DN and no password is an "unauthenticated
  bind" (RFC 4513 5.1.2) which lenient servers answer with *success*, as anonymous. Empty
  passwords are now refused before any bind;
- it created a local user, with an API key, on any lookup. This module never creates anything:
  whether a first LDAP login creates a local account is :mod:`biomaj.auth.users`' decision.

ldap3 is synchronous: every network exchange runs in a worker thread (``asyncio.to_thread``),
with ``timeout`` bounding the connection and each answer, so the event loop never blocks.
TLS (``ldaps://`` or ``start_tls``) verifies the server certificate against the system CAs, or
``ca_file`` when given.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException, LDAPInvalidFilterError
from ldap3.protocol.sasl.sasl import validate_simple_password
from ldap3.utils.conv import escape_filter_chars

from biomaj.errors import BiomajError, ConfigError

log = logging.getLogger(__name__)

DEFAULT_USER_FILTER = "(|(uid={user})(mail={user}))"
#: Login names authenticate() accepts; anything else is refused before any network call.
LOGIN_NAME = re.compile(r"[A-Za-z0-9_.@+-]{1,128}")
MAX_NAME = 128

# Bind results that mean "this server cannot answer now", not "wrong credentials".
_UNAVAILABLE_CODES = {51, 52, 80}  # busy, unavailable, other
# Search results that are not errors: success, sizeLimitExceeded (>1 match), noSuchObject (no base).
_SEARCH_OK_CODES = {0, 4, 32}


class LdapUnavailable(BiomajError):
    """The LDAP server cannot be used: unreachable, service account refused, server error."""


@dataclass(frozen=True)
class LdapConfig:
    """Where and how to find users in LDAP. ``{user}`` in `user_filter` is the escaped login."""

    url: str
    base_dn: str
    user_filter: str = DEFAULT_USER_FILTER
    bind_dn: str | None = None
    bind_password: str | None = None
    start_tls: bool = False
    timeout: float = 10.0
    email_attribute: str = "mail"
    ca_file: str | None = None

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "bind_password" and value is not None:
                shown.append("bind_password='***'")
            else:
                shown.append(f"{f.name}={value!r}")
        return f"LdapConfig({', '.join(shown)})"

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], *, where: str = "ldap") -> LdapConfig:
        """Validate a configuration section (e.g. config.yml's ``ldap:``); ConfigError if wrong.

        `where` names the section in messages.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: expected a mapping of LDAP settings, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; expected some of "
                              f"{', '.join(sorted(known))}")

        def text(key: str, *, required: bool = False) -> str | None:
            value = d.get(key)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{where}.{key}: expected a string, got {type(value).__name__}")
            if key != "bind_password" and value is not None:
                value = value.strip()
            if not value:
                if required:
                    raise ConfigError(f"{where}.{key} is required and must not be empty")
                return None
            return value

        url = text("url", required=True)
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("ldap", "ldaps"):
            raise ConfigError(f"{where}.url: {url!r} must start with ldap:// or ldaps://")
        try:
            _ = parts.port  # raises ValueError on a bad port
        except ValueError:
            raise ConfigError(f"{where}.url: {url!r} has an invalid port") from None
        if not parts.hostname:
            raise ConfigError(f"{where}.url: {url!r} names no host (e.g. ldap://ldap.example.org:389)")
        base_dn = text("base_dn", required=True)
        user_filter = d.get("user_filter", DEFAULT_USER_FILTER)
        if not isinstance(user_filter, str) or "{user}" not in user_filter:
            raise ConfigError(f"{where}.user_filter: {user_filter!r} must contain {{user}}, replaced by "
                              f"the login name (e.g. {DEFAULT_USER_FILTER})")
        user_filter = user_filter.strip()
        if not (user_filter.startswith("(") and user_filter.endswith(")") and _balanced(user_filter)):
            raise ConfigError(f"{where}.user_filter: {user_filter!r} is not an LDAP filter in "
                              f"parentheses (e.g. {DEFAULT_USER_FILTER})")
        bind_dn = text("bind_dn")
        bind_password = text("bind_password")
        if bind_dn and not bind_password:
            raise ConfigError(f"{where}.bind_password is required with bind_dn (the service account)")
        if bind_password and not bind_dn:
            raise ConfigError(f"{where}.bind_dn is required with bind_password (the service account)")
        start_tls = d.get("start_tls", False)
        if not isinstance(start_tls, bool):
            raise ConfigError(f"{where}.start_tls: expected true or false, got {start_tls!r}")
        if start_tls and parts.scheme.lower() == "ldaps":
            raise ConfigError(f"{where}.start_tls: an ldaps:// URL is already TLS; use ldap:// with "
                              f"start_tls, or ldaps:// without it")
        timeout = d.get("timeout", 10.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 600:
            raise ConfigError(f"{where}.timeout: expected seconds between 0 and 600, got {timeout!r}")
        email_attribute = text("email_attribute") or "mail"
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", email_attribute):
            raise ConfigError(f"{where}.email_attribute: {email_attribute!r} is not an attribute name")
        return cls(url=url, base_dn=base_dn, user_filter=user_filter, bind_dn=bind_dn,
                   bind_password=bind_password, start_tls=start_tls, timeout=float(timeout),
                   email_attribute=email_attribute, ca_file=text("ca_file"))


def _balanced(text: str) -> bool:
    depth = 0
    for c in text:
        depth += {"(": 1, ")": -1}.get(c, 0)
        if depth < 0:
            return False
    return depth == 0


@dataclass(frozen=True)
class LdapUser:
    """A user found in LDAP. `name` is the login name as given (uid or mail)."""

    name: str
    dn: str
    email: str | None


class LdapAuth:
    """Checks passwords against an LDAP directory (see the module docstring)."""

    def __init__(self, config: LdapConfig):
        self.config = config

    def __repr__(self) -> str:
        return f"LdapAuth({self.config!r})"

    async def authenticate(self, name: str, password: str) -> LdapUser | None:
        """The user if `password` is right for `name`, else None. LdapUnavailable if unusable."""
        if not isinstance(name, str) or not LOGIN_NAME.fullmatch(name):
            log.debug("ldap: refused login name %r (empty, too long or invalid characters)", name[:MAX_NAME]
                      if isinstance(name, str) else name)
            return None
        if not isinstance(password, str) or not password:
            log.debug("ldap: refused login of %s: empty password", name)
            return None
        return await asyncio.to_thread(self._authenticate, name, password)

    async def lookup(self, name: str) -> LdapUser | None:
        """The user named `name` (uid or mail, per user_filter), without checking any password.

        Any non-empty name up to 128 characters is searched (escaped); creates nothing.
        """
        if not isinstance(name, str) or not name or len(name) > MAX_NAME:
            return None
        return await asyncio.to_thread(self._find, name)

    # --- blocking part, run in a worker thread -------------------------------------------------

    def _authenticate(self, name: str, password: str) -> LdapUser | None:
        # The password as sent on the wire (RFC 4013 SASLprep, as ldap3 does it). One made only of
        # characters SASLprep maps to nothing (e.g. U+00AD) would be EMPTY on the wire, i.e. an
        # unauthenticated bind that lenient servers accept (ldap3 2.9 raises instead; we do not
        # rely on it), and prohibited characters make ldap3 raise: both are a failed login.
        try:
            wire = validate_simple_password(password)
        except LDAPException:
            wire = b""
        if not wire:
            log.info("ldap: login of %s refused: password empty or invalid once prepared (SASLprep)", name)
            return None
        user = self._find(name)
        if user is None:
            log.info("ldap: login of %s refused: no single matching entry", name)
            return None
        conn = self._connection(user.dn, wire)
        try:
            self._open(conn)
            ok = conn.bind()
            result = dict(conn.result or {})
        except LDAPException as e:
            raise self._unavailable(f"bind as {user.dn} failed: {type(e).__name__}") from None
        finally:
            _close(conn)
        if ok is True:
            log.info("ldap: %s authenticated as %s", name, user.dn)
            return user
        code = result.get("result")
        if code in _UNAVAILABLE_CODES:
            raise self._unavailable(f"bind refused: {result.get('description')}")
        log.info("ldap: login of %s refused by the server: %s", name, result.get("description"))
        return None

    def _find(self, name: str) -> LdapUser | None:
        cfg = self.config
        query = cfg.user_filter.replace("{user}", escape_filter_chars(name))
        conn = self._connection(cfg.bind_dn, cfg.bind_password)
        try:
            self._open(conn)
            if cfg.bind_dn:
                if not conn.bind():
                    raise self._unavailable(f"the service account {cfg.bind_dn} was refused: "
                                            f"{(conn.result or {}).get('description')}")
            conn.search(cfg.base_dn, query, search_scope=ldap3.SUBTREE, attributes=[cfg.email_attribute],
                        size_limit=2, time_limit=max(1, int(cfg.timeout)))
            result = dict(conn.result or {})
            entries = [r for r in (conn.response or []) if r.get("type") == "searchResEntry"]
        except LdapUnavailable:
            raise
        except LDAPInvalidFilterError as e:
            raise ConfigError(f"ldap.user_filter {cfg.user_filter!r} is invalid: {e}") from None
        except LDAPException as e:
            raise self._unavailable(f"{type(e).__name__}: {e}") from None
        finally:
            _close(conn)
        if result.get("result") not in _SEARCH_OK_CODES:
            raise self._unavailable(f"search under {cfg.base_dn} failed: {result.get('description')}")
        if len(entries) != 1:
            log.debug("ldap: %d entries match %r under %s", len(entries), query, cfg.base_dn)
            return None
        entry = entries[0]
        if not entry.get("dn"):  # binding as "" would be an anonymous bind
            return None
        values = (entry.get("attributes") or {}).get(cfg.email_attribute)
        if isinstance(values, (list, tuple)):
            values = values[0] if values else None
        email = values if isinstance(values, str) and values else None
        return LdapUser(name=name, dn=entry["dn"], email=email)

    def _connection(self, user: str | None, password: str | bytes | None) -> ldap3.Connection:
        cfg = self.config
        parts = urlsplit(cfg.url)
        use_ssl = parts.scheme.lower() == "ldaps"
        tls = None
        if use_ssl or cfg.start_tls:
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=cfg.ca_file)
        server = ldap3.Server(cfg.url, use_ssl=use_ssl, tls=tls, get_info=ldap3.NONE,
                              connect_timeout=cfg.timeout)
        return ldap3.Connection(
            server,
            user=user,
            password=password,
            authentication=ldap3.SIMPLE if user else ldap3.ANONYMOUS,
            client_strategy=ldap3.SYNC,
            auto_bind=ldap3.AUTO_BIND_NONE,
            auto_referrals=False,
            read_only=True,
            raise_exceptions=False,
            receive_timeout=max(1, math.ceil(cfg.timeout)),  # ldap3 packs it as a C long: whole seconds
        )

    def _open(self, conn: ldap3.Connection) -> None:
        """Connect (and StartTLS when configured); LdapUnavailable if the server is unreachable."""
        try:
            conn.open(read_server_info=False)
            if self.config.start_tls and not conn.start_tls(read_server_info=False):
                raise self._unavailable(f"StartTLS refused: {(conn.result or {}).get('description')}")
        except LDAPException as e:
            raise self._unavailable(f"cannot connect: {type(e).__name__}: {e}") from None

    def _unavailable(self, what: str) -> LdapUnavailable:
        log.warning("ldap: server %s unavailable: %s", self.config.url, what)
        return LdapUnavailable(f"LDAP server {self.config.url}: {what}")


def _close(conn: ldap3.Connection) -> None:
    try:
        if not conn.closed:
            conn.unbind()
    except LDAPException:
        pass
