"""LDAP authentication (biomaj.auth.ldap) against a real, private OpenLDAP server.

The server and its directory are described in tests/auth/ldap_server.py. Without slapd the tests
skip on a laptop and fail when CI=true.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import ldap3
import pytest

from biomaj.auth.ldap import LdapAuth, LdapConfig, LdapUnavailable, LdapUser
from biomaj.errors import BiomajError, ConfigError
from tests.auth import ldap_server
from tests.conftest import IN_CI, free_port

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def server():
    """A private slapd for this module, stopped (and its temp dir removed) at the end."""
    if ldap_server.find_slapd() is None:
        reason = "slapd not installed (Debian: apt-get install slapd ldap-utils)"
        if IN_CI:
            pytest.fail(f"{reason}; required when CI=true")
        pytest.skip(reason)
    running = ldap_server.start()
    try:
        yield running
    finally:
        running.stop()


def auth(server, **overrides) -> LdapAuth:
    """An LdapAuth on the test server (anonymous search of ou=People unless overridden)."""
    settings = {"url": server.url, "base_dn": server.base_dn, "timeout": 5.0, **overrides}
    return LdapAuth(LdapConfig(**settings))


def service(server, **overrides) -> LdapAuth:
    """An LdapAuth searching with the service account."""
    return auth(server, bind_dn=server.bind_dn, bind_password=server.bind_password, **overrides)


def raw_search(server, query: str, base: str | None = None) -> list[str]:
    """DNs an anonymous search with `query` exactly as written finds (no escaping)."""
    with ldap3.Connection(ldap3.Server(server.url, get_info=ldap3.NONE), auto_bind=True) as conn:
        conn.search(base or server.base_dn, query, attributes=[])
        return [e["dn"] for e in conn.response if e["type"] == "searchResEntry"]


def unauthenticated_bind(server, dn: str) -> int:
    """resultCode of a simple bind with `dn` and an EMPTY password, sent as raw BER.

    ldap3 refuses to send one, so the request is written by hand (RFC 4511 BindRequest).
    """

    def tlv(tag: int, value: bytes) -> bytes:
        n = len(value)
        length = bytes([n]) if n < 128 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes(
            (n.bit_length() + 7) // 8, "big")
        return bytes([tag]) + length + value

    bind = tlv(0x60, tlv(0x02, b"\x03") + tlv(0x04, dn.encode()) + tlv(0x80, b""))
    message = tlv(0x30, tlv(0x02, b"\x01") + bind)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(message)
        reply = s.recv(4096)

    def skip_header(data: bytes, i: int) -> int:  # index of the value of the TLV at i
        first = data[i + 1]
        return i + 2 + (first & 0x7F if first & 0x80 else 0)

    i = skip_header(reply, 0)  # LDAPMessage
    i = skip_header(reply, i) + reply[i + 1]  # past messageID (short)
    assert reply[i] == 0x61, "not a BindResponse"
    i = skip_header(reply, i)
    assert reply[i] == 0x0A  # resultCode ENUMERATED
    return reply[i + 2]


# --- logging in ---------------------------------------------------------------------------------


async def test_alice_logs_in_with_her_password(server):
    """Right password: the user, with her DN and mail."""
    user = await auth(server).authenticate("alice", "alice-secret")
    assert user == LdapUser(name="alice", dn=server.user_dn("alice"), email="alice@example.org")


async def test_login_by_mail(server):
    """The default filter also matches the mail attribute."""
    user = await auth(server).authenticate("alice@example.org", "alice-secret")
    assert user is not None and user.dn == server.user_dn("alice")


async def test_user_without_mail_attribute(server):
    """No mail attribute: email is None."""
    user = await service(server, user_filter="(uid={user})").lookup("eve*")
    assert user is not None and user.email is None


async def test_wrong_password(server):
    """Wrong password, or another user's password: None."""
    ldap = auth(server)
    assert await ldap.authenticate("alice", "wrong") is None
    assert await ldap.authenticate("bob", "alice-secret") is None
    assert await ldap.authenticate("bob", "bob-secret") is not None


async def test_empty_password_refused_though_server_accepts_unauthenticated_bind(server):
    """The server answers success to a DN with an empty password (as anonymous): we never send one."""
    assert unauthenticated_bind(server, server.user_dn("alice")) == 0  # success: the BioMAJ 3 hole
    ldap = auth(server)
    assert await ldap.authenticate("alice", "") is None
    # Characters SASLprep maps to nothing would be an empty password on the wire.
    assert await ldap.authenticate("alice", "\u00ad") is None
    assert await ldap.authenticate("alice", "\u00ad\u200c") is None
    assert await ldap.authenticate("alice", "bad\x07") is None


async def test_unknown_user(server):
    """No matching entry: None."""
    assert await auth(server).authenticate("mallory", "whatever") is None
    assert await auth(server).lookup("mallory") is None


async def test_ambiguous_login_is_refused(server):
    """carol and dave share a mail: a login matching two entries fails, even with a right password."""
    assert len(raw_search(server, "(mail=shared@example.org)")) == 2
    ldap = auth(server)
    assert await ldap.authenticate("shared@example.org", "carol-secret") is None
    assert await ldap.lookup("shared@example.org") is None
    assert await ldap.authenticate("carol", "carol-secret") is not None


async def test_dn_with_special_characters(server):
    """uid eve+lab has a '+' escaped in its DN: the DN the server returns is the one bound."""
    user = await auth(server).authenticate("eve+lab", "evelab-secret")
    assert user is not None and user.email == "eve.lab@example.org"
    assert user.dn == server.user_dn("eve+lab") == "uid=eve\\2Blab,ou=People,dc=example,dc=org"
    assert await auth(server).authenticate("eve+lab", "eve-secret") is None


async def test_refused_names_make_no_network_call():
    """Empty, too long or odd names are refused before any connection (the URL is unreachable)."""
    ldap = LdapAuth(LdapConfig(url=f"ldap://127.0.0.1:{free_port()}", base_dn="dc=x", timeout=1))
    for name in ("", "a" * 129, "*", "alice)(uid=*", "*)(|(uid=*", "eve*", "al ice", "alice\x00"):
        assert await ldap.authenticate(name, "secret") is None
    assert await ldap.authenticate("alice", "") is None
    with pytest.raises(LdapUnavailable):  # a valid one does reach the (absent) server
        await ldap.authenticate("a" * 128, "secret")


# --- filter injection ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["*", "alice)(uid=*", "*)(|(uid=*", "ali*", "a*e", "alice)"])
async def test_filter_injection_never_matches(server, name):
    """Filter metacharacters are refused at login and escaped in lookup: never alice."""
    ldap = auth(server)
    assert await ldap.authenticate(name, "alice-secret") is None
    found = await ldap.lookup(name)
    assert found is None or found.dn != server.user_dn("alice")
    assert found is None


async def test_injection_would_work_unescaped(server):
    """The same names spliced raw into the filter DO match alice: the escaping tests are meaningful."""
    alice = server.user_dn("alice")
    assert raw_search(server, "(|(uid=ali*)(mail=ali*))") == [alice]
    assert alice in raw_search(server, "(|(uid=*)(mail=*))")


async def test_uid_with_a_star(server):
    """uid 'eve*' is found by its exact name only; 'eve' does not match it; no login with a '*'."""
    ldap = auth(server)
    found = await ldap.lookup("eve*")
    assert found is not None and found.dn == server.user_dn("eve*")
    assert await ldap.lookup("eve") is None
    assert await ldap.lookup("eve\\2a") is None  # an escape sequence typed by a user stays literal
    # Logins are limited to [A-Za-z0-9_.@+-] (as biomaj user names are): eve* cannot log in.
    assert await ldap.authenticate("eve*", "eve-secret") is None


# --- service account, anonymous search, availability --------------------------------------------


async def test_service_account_search(server):
    """frank (ou=Staff) is hidden from anonymous searches; the service account finds him."""
    staff = {"base_dn": "dc=example,dc=org"}
    assert raw_search(server, "(uid=frank)", base="dc=example,dc=org") == []
    assert await auth(server, **staff).authenticate("frank", "frank-secret") is None
    user = await service(server, **staff).authenticate("frank", "frank-secret")
    assert user is not None and user.dn == server.user_dn("frank") and user.email == "frank@example.org"
    assert await service(server, **staff).authenticate("frank", "bob-secret") is None
    assert (await service(server).authenticate("alice", "alice-secret")).email == "alice@example.org"


async def test_wrong_service_password_raises(server):
    """A refused service account is a server problem, not a failed login; the password is not shown."""
    ldap = auth(server, bind_dn=server.bind_dn, bind_password="not-the-reader-secret")
    with pytest.raises(LdapUnavailable) as raised:
        await ldap.authenticate("alice", "alice-secret")
    assert isinstance(raised.value, BiomajError)
    assert server.url in str(raised.value) and server.bind_dn in str(raised.value)
    assert "not-the-reader-secret" not in str(raised.value)
    with pytest.raises(LdapUnavailable):
        await ldap.lookup("alice")


async def test_unreachable_server_raises_quickly():
    """A closed local port: LdapUnavailable naming the URL, well within the timeout."""
    url = f"ldap://127.0.0.1:{free_port()}"
    ldap = LdapAuth(LdapConfig(url=url, base_dn="ou=People,dc=example,dc=org", timeout=2,
                               bind_dn="cn=reader,dc=example,dc=org", bind_password="reader-secret"))
    started = time.monotonic()
    with pytest.raises(LdapUnavailable, match=url) as raised:
        await ldap.authenticate("alice", "alice-secret")
    assert time.monotonic() - started < 5
    assert "reader-secret" not in str(raised.value)
    with pytest.raises(LdapUnavailable, match=url):
        await ldap.lookup("alice")


async def test_unknown_base_is_no_user(server):
    """A search base that does not exist finds nobody (noSuchObject is not an outage)."""
    assert await auth(server, base_dn="ou=Nobody,dc=example,dc=org").authenticate("alice", "alice-secret") is None


async def test_logins_run_concurrently(server):
    """Calls run in worker threads: many at once, each with its own answer."""
    ldap = service(server)
    names = ["alice", "bob", "eve+lab"] * 4
    results = await asyncio.gather(
        *(ldap.authenticate(n, server.password(n)) for n in names),
        *(ldap.authenticate(n, "wrong") for n in names),
    )
    assert [r.dn for r in results[: len(names)]] == [server.user_dn(n) for n in names]
    assert results[len(names):] == [None] * len(names)


# --- lookup -------------------------------------------------------------------------------------


def count_entries(server) -> int:
    with ldap3.Connection(ldap3.Server(server.url, get_info=ldap3.NONE), server.bind_dn,
                          server.bind_password, auto_bind=True) as conn:
        conn.search("dc=example,dc=org", "(objectClass=*)", attributes=[])
        return len([e for e in conn.response if e["type"] == "searchResEntry"])


async def test_lookup_needs_no_password_and_creates_nothing(server):
    """lookup shows who a user is; the directory is unchanged afterwards."""
    before = count_entries(server)
    ldap = service(server)
    assert await ldap.lookup("bob") == LdapUser("bob", server.user_dn("bob"), "bob@example.org")
    assert await ldap.lookup("nobody-here") is None
    assert await ldap.lookup("") is None
    assert await ldap.lookup("x" * 129) is None
    assert count_entries(server) == before


# --- configuration and secrecy ------------------------------------------------------------------


def test_repr_hides_the_bind_password():
    config = LdapConfig(url="ldap://ldap.example.org", base_dn="dc=example,dc=org",
                        bind_dn="cn=reader,dc=example,dc=org", bind_password="hunter2-secret")
    for text in (repr(config), str(config), repr(LdapAuth(config))):
        assert "hunter2-secret" not in text
        assert "cn=reader,dc=example,dc=org" in text


async def test_passwords_never_logged(server, caplog):
    """Debug logging of logins, failures and outages never contains a password."""
    caplog.set_level(logging.DEBUG, logger="biomaj.auth.ldap")
    await service(server).authenticate("alice", "alice-secret")
    await service(server).authenticate("alice", "wrong-password-xyz")
    with pytest.raises(LdapUnavailable):
        await auth(server, bind_dn=server.bind_dn, bind_password="bad-service-pw").lookup("alice")
    assert caplog.records
    for secret in ("alice-secret", "wrong-password-xyz", "bad-service-pw", server.bind_password):
        assert secret not in caplog.text


def test_from_mapping_valid():
    config = LdapConfig.from_mapping({
        "url": "ldaps://ldap.example.org:636", "base_dn": " ou=People,dc=example,dc=org ",
        "user_filter": "(&(objectClass=inetOrgPerson)(uid={user}))",
        "bind_dn": "cn=reader,dc=example,dc=org", "bind_password": " secret with spaces ",
        "timeout": 3,
    })
    assert config.base_dn == "ou=People,dc=example,dc=org"
    assert config.bind_password == " secret with spaces "
    assert config.timeout == 3.0 and config.start_tls is False and config.email_attribute == "mail"
    minimal = LdapConfig.from_mapping({"url": "ldap://127.0.0.1:389", "base_dn": "dc=example,dc=org"})
    assert minimal.user_filter == "(|(uid={user})(mail={user}))" and minimal.bind_dn is None


@pytest.mark.parametrize(("settings", "message"), [
    ({"base_dn": "dc=x"}, "ldap.url is required"),
    ({"url": "http://ldap.example.org", "base_dn": "dc=x"}, "must start with ldap:// or ldaps://"),
    ({"url": "ldap://", "base_dn": "dc=x"}, "names no host"),
    ({"url": "ldap://h:99999", "base_dn": "dc=x"}, "invalid port"),
    ({"url": "ldap://h"}, "ldap.base_dn is required"),
    ({"url": "ldap://h", "base_dn": "  "}, "ldap.base_dn is required"),
    ({"url": "ldap://h", "base_dn": "dc=x", "user_filter": "(uid=%s)"}, "must contain {user}"),
    ({"url": "ldap://h", "base_dn": "dc=x", "user_filter": "uid={user}"}, "not an LDAP filter"),
    ({"url": "ldap://h", "base_dn": "dc=x", "user_filter": "(uid={user}))("}, "not an LDAP filter"),
    ({"url": "ldap://h", "base_dn": "dc=x", "bind_dn": "cn=r"}, "bind_password is required"),
    ({"url": "ldap://h", "base_dn": "dc=x", "bind_password": "pw-xyz-123"}, "bind_dn is required"),
    ({"url": "ldaps://h", "base_dn": "dc=x", "start_tls": True}, "already TLS"),
    ({"url": "ldap://h", "base_dn": "dc=x", "start_tls": "yes"}, "expected true or false"),
    ({"url": "ldap://h", "base_dn": "dc=x", "timeout": 0}, "ldap.timeout"),
    ({"url": "ldap://h", "base_dn": "dc=x", "timeout": "10"}, "ldap.timeout"),
    ({"url": "ldap://h", "base_dn": "dc=x", "email_attribute": "mail)("}, "not an attribute name"),
    ({"url": "ldap://h", "base_dn": "dc=x", "bindpassword": "pw-xyz-123"}, "unknown setting(s) bindpassword"),
    ({"url": 389, "base_dn": "dc=x"}, "ldap.url: expected a string"),
    (["ldap://h"], "expected a mapping"),
])
def test_from_mapping_errors(settings, message):
    """Each mistake gets a ConfigError naming the setting and what is expected; never the password."""
    with pytest.raises(ConfigError) as raised:
        LdapConfig.from_mapping(settings)
    assert message in str(raised.value)
    assert not isinstance(settings, dict) or settings.get("bind_password", "\0") not in str(raised.value)


# --- the users service with LDAP, configured from config.yml --------------------------------------


async def test_a_first_ldap_login_creates_a_local_account_without_any_key(server, tmp_path):
    from biomaj.auth.identity import users_of
    from biomaj.config.service import config_from_mapping
    from biomaj.storage.sqlite import SQLiteStore

    config = config_from_mapping({"root": str(tmp_path), "auth": {"ldap": {
        "url": server.url, "base_dn": server.base_dn, "bind_dn": server.bind_dn,
        "bind_password": server.bind_password, "timeout": 5}}}, None, environ={})
    assert server.bind_password not in repr(config.settings)
    store = SQLiteStore(tmp_path / "users.sqlite")
    async with store:
        users = users_of(config, store)
        assert await users.by_password("alice", "wrong-secret") is None
        assert await store.get_user("alice") is None  # a failed login creates nothing
        who = await users.by_password("alice", "alice-secret")
        assert (who.name, who.via, who.email) == ("alice", "ldap", "alice@example.org")
        alice = await users.get("alice")
        assert alice["is_ldap"] and not alice["has_password"] and alice["api_keys"] == []
        assert (await users.by_password("alice", "alice-secret")).via == "ldap"  # the account now exists
        # a local account with its own password is never checked against LDAP
        await users.create("bob", password="a local password")
        assert await users.by_password("bob", "bob-secret") is None
        assert (await users.by_password("bob", "a local password")).via == "password"
