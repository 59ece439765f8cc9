"""A real, private OpenLDAP server for tests: ``slapd`` on 127.0.0.1 (a free port).

Debian's slapd 2.5 (package ``slapd``) with its own ``slapd.conf`` (``-f``; the static format is
deprecated upstream but still supported by 2.5, and simpler than a cn=config tree), an mdb
database for ``dc=example,dc=org`` in a temp dir, the core/cosine/inetorgperson/nis schemas from
/etc/ldap/schema, loaded offline with ``slapadd`` before the daemon starts:

- ``ou=People``: ``alice``, ``bob``, ``eve*`` (a uid with a filter metacharacter), ``eve+lab``
  (a uid with a DN metacharacter, so its DN is ``uid=eve\\2Blab,...``), and ``carol`` and ``dave``,
  who share the mail ``shared@example.org`` (a login matching two entries);
  anonymous clients may search and read it (except passwords).
- ``ou=Staff``: ``frank``, hidden from anonymous clients: only the service account (and frank
  himself) can find him. This is the "anonymous search disabled" directory.
- ``cn=reader,dc=example,dc=org``: the service account, which reads both.

Passwords are stored ``{SSHA}``-hashed, as a real directory stores them. The server also allows
unauthenticated simple binds (``allow bind_anon_dn``: a DN with an empty password binds as
anonymous), like the lenient servers BioMAJ 3 was fooled by.

slapd runs in the foreground (``-d 0``, its messages go to ``slapd.log`` in the temp dir), as a
child of the test process; :meth:`LdapServer.stop` sends SIGTERM and waits.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BASE = "dc=example,dc=org"
PEOPLE = f"ou=People,{BASE}"
STAFF = f"ou=Staff,{BASE}"
READER_DN = f"cn=reader,{BASE}"
READER_PASSWORD = "reader-secret"
SCHEMA_DIR = Path("/etc/ldap/schema")
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")

#: uid -> (ou DN, password, mail or None)
USERS: dict[str, tuple[str, str, str | None]] = {
    "alice": (PEOPLE, "alice-secret", "alice@example.org"),
    "bob": (PEOPLE, "bob-secret", "bob@example.org"),
    "eve*": (PEOPLE, "eve-secret", None),
    "eve+lab": (PEOPLE, "evelab-secret", "eve.lab@example.org"),
    "carol": (PEOPLE, "carol-secret", "shared@example.org"),
    "dave": (PEOPLE, "dave-secret", "shared@example.org"),
    "frank": (STAFF, "frank-secret", "frank@example.org"),
}

_CONF = """\
{includes}
pidfile   {dir}/slapd.pid
argsfile  {dir}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
# A DN with an empty password binds as anonymous (RFC 4513 "unauthenticated" bind): lenient on purpose.
allow bind_anon_dn

database  mdb
suffix    "{base}"
directory {dir}/db
maxsize   16777216

access to attrs=userPassword
    by anonymous auth
    by self read
    by * none
access to dn.subtree="{staff}"
    by dn.exact="{reader}" read
    by self read
    by anonymous auth
    by * none
access to *
    by * read
"""


def ssha(password: str) -> str:
    """``{SSHA}`` hash of `password`, as ``slappasswd`` makes it."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _escape_rdn_value(value: str) -> str:
    """Escape a value for an RDN (RFC 4514), enough for our uids, as slapd writes DNs back
    (hex pairs: ``eve+lab`` -> ``eve\\2Blab``)."""
    out = "".join(f"\\{ord(c):02X}" if c in ',+"\\<>;=' else c for c in value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    return out


def user_dn(uid: str) -> str:
    return f"uid={_escape_rdn_value(uid)},{USERS[uid][0]}"


def _ldif() -> str:
    entries = [
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: People\n",
        f"dn: {STAFF}\nobjectClass: organizationalUnit\nou: Staff\n",
        f"dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: reader\nuserPassword: {ssha(READER_PASSWORD)}\n",
    ]
    for uid, (_, password, mail) in USERS.items():
        entry = (
            f"dn: {user_dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
            f"userPassword: {ssha(password)}\n"
        )
        if mail:
            entry += f"mail: {mail}\n"
        entries.append(entry)
    return "\n".join(entries)


def find_slapd() -> tuple[str, str] | None:
    """Paths of ``slapd`` and ``slapadd`` (they live in /usr/sbin, often not on PATH), or None."""
    found = []
    for name in ("slapd", "slapadd"):
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if not path:
            return None
        found.append(path)
    return found[0], found[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LdapServer:
    """A running private slapd."""

    url: str
    port: int
    base_dn: str = PEOPLE
    staff_dn: str = STAFF
    bind_dn: str = READER_DN
    bind_password: str = READER_PASSWORD
    users: dict = field(default_factory=lambda: dict(USERS))
    directory: Path | None = None
    process: subprocess.Popen | None = None

    def user_dn(self, uid: str) -> str:
        return user_dn(uid)

    def password(self, uid: str) -> str:
        return USERS[uid][1]

    def log(self) -> str:
        path = self.directory / "slapd.log" if self.directory else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    def stop(self) -> None:
        """SIGTERM, wait (bounded), SIGKILL if it hangs; remove the temp dir."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def _wait_ready(proc: subprocess.Popen, port: int, deadline: float) -> bool:
    """True once slapd accepts TCP connections; False if it exited or the deadline passed."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def start(*, startup_timeout: float = 20.0) -> LdapServer:
    """Configure, load and start a private slapd; raise RuntimeError (with its log) on failure.

    The caller must call :meth:`LdapServer.stop`. Raises FileNotFoundError if slapd is missing.
    """
    paths = find_slapd()
    if paths is None:
        raise FileNotFoundError("slapd/slapadd not found (Debian: apt-get install slapd ldap-utils)")
    slapd, slapadd = paths
    directory = Path(tempfile.mkdtemp(prefix="biomaj-slapd-"))
    try:
        (directory / "db").mkdir()
        includes = "\n".join(f"include {SCHEMA_DIR / name}.schema" for name in SCHEMAS)
        conf = directory / "slapd.conf"
        conf.write_text(
            _CONF.format(includes=includes, dir=directory, base=BASE, staff=STAFF, reader=READER_DN)
        )
        ldif = directory / "data.ldif"
        ldif.write_text(_ldif())
        loaded = subprocess.run(
            [slapadd, "-f", str(conf), "-b", BASE, "-l", str(ldif)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if loaded.returncode != 0:
            raise RuntimeError(f"slapadd failed ({loaded.returncode}): {loaded.stderr.strip()}")
        last_log = ""
        for _ in range(3):  # the free port may be taken between choosing it and slapd binding it
            port = _free_port()
            url = f"ldap://127.0.0.1:{port}"
            with open(directory / "slapd.log", "wb") as log:
                proc = subprocess.Popen(
                    [slapd, "-d", "0", "-h", f"{url}/", "-f", str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            server = LdapServer(url=url, port=port, directory=directory, process=proc)
            if _wait_ready(proc, port, time.monotonic() + startup_timeout):
                return server
            last_log = server.log()
            server.directory = None  # keep the dir for the next attempt
            server.stop()
        raise RuntimeError(f"slapd did not start on 127.0.0.1; its log:\n{last_log}")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
