"""Mail notifications against a real SMTP server (aiosmtpd on 127.0.0.1, a free port).

Every mail is really sent and parsed back from what the server received: subjects, bodies,
attachments, one mail per recipient, STARTTLS (with a certificate made here), SMTP login, and
servers that refuse, are down or never answer. The end-to-end tests run real updates and a real
removal of a local bank (tests/workflow/harness.py) with mail.* pointing at the test server.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import email
import ipaddress
import logging
import os
import re
import ssl
import threading
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from biomaj.config.properties import BankProperties
from biomaj.notify import BankAction, notify_bank_action
from biomaj.workflow import runner
from tests.conftest import free_port
from tests.workflow.harness import set_property

BANK = "alu"
SENDER = "biomaj@example.org"
PASSWORD = "Pa55-w0rd-never-logged"


# --- the SMTP server -------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    authenticated: bool


class Inbox:
    """aiosmtpd handler: keeps every mail; ``refuse`` makes it refuse those recipients."""

    def __init__(self) -> None:
        self.mails: list[Received] = []
        self.refuse: set[str] = set()
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        with self.lock:
            self.mails.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message,
                                       tls=session.ssl is not None, authenticated=bool(session.authenticated)))
        return "250 Message accepted"


class SmtpServer:
    def __init__(self, inbox: Inbox | None = None, **smtp_options: Any) -> None:
        self.inbox = inbox or Inbox()
        self.port = free_port()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **smtp_options)

    @property
    def mails(self) -> list[Received]:
        with self.inbox.lock:
            return list(self.inbox.mails)


@pytest.fixture
def smtp_server():
    """``smtp_server(inbox=None, **aiosmtpd SMTP options)`` starts a real server; all are
    stopped at the end."""
    started: list[SmtpServer] = []

    def start(inbox: Inbox | None = None, **options: Any) -> SmtpServer:
        server = SmtpServer(inbox, **options)
        server.controller.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.controller.stop()


def accept_credentials(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"bob" and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (cert file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def server_tls_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    return context


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def make_props(tmp_path):
    """``make_props(port, **mail keys with _ for .)``: real global + bank properties files."""

    def make(port: int | None = None, **mail: str) -> BankProperties:
        conf = tmp_path / "conf"
        conf.mkdir(exist_ok=True)
        values = {"conf.dir": str(conf), "data.dir": str(tmp_path / "data"),
                  "mail.smtp.host": "127.0.0.1", "mail.smtp.port": str(port or 25),
                  "mail.from": SENDER, "mail.admin": "admin@example.org"}
        values.update({k.replace("_", "."): v for k, v in mail.items()})
        lines = ["[GENERAL]"] + [f"{k}={v}" for k, v in values.items() if v is not None]
        (conf / "global.properties").write_text("\n".join(lines) + "\n")
        (conf / f"{BANK}.properties").write_text("[GENERAL]\ndb.name=alu\n")
        return BankProperties.load(conf / "global.properties", BANK, environ={})

    return make


def write_log(tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "log" / f"{BANK}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return str(path)


def update_action(log_file: str | None = None, **changes: Any) -> BankAction:
    fields = dict(bank=BANK, action="update", status=True, release="2003", update=True, remove=False,
                  log_file=log_file)
    fields.update(changes)
    return BankAction(**fields)


def subject_of(mail: Received) -> str:
    # Python folds a long subject right after "Subject:"; unfolding leaves the space it started with
    return mail.message["Subject"].strip()


def body_of(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")  # CRLF on the wire


def attachments_of(message: EmailMessage) -> list[EmailMessage]:
    return list(message.iter_attachments())


def all_log_text(caplog) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


# --- default subject and body ------------------------------------------------------------------


async def test_default_subject_body_and_headers(smtp_server, make_props, tmp_path):
    server = smtp_server()
    props = make_props(server.port)
    log_file = write_log(tmp_path, b"line 1\nline 2\n")
    sent = await notify_bank_action(props, update_action(log_file))
    assert sent == ["admin@example.org"]
    [mail] = server.mails
    assert mail.mail_from == SENDER and mail.rcpt_tos == ["admin@example.org"]
    msg = mail.message
    assert subject_of(mail) == "BANK[alu] - STATUS[True] - UPDATE[True] - REMOVE[False] - RELEASE[2003]"
    assert msg["From"] == f"BioMAJ <{SENDER}>"
    assert msg["To"] == "admin@example.org"
    assert msg["Date"] and msg["Message-ID"]
    # BioMAJ 3's default body is the log tail, empty when mail.body.tail is unset; no attachment
    assert body_of(msg).strip() == ""
    assert attachments_of(msg) == []
    assert not mail.tls and not mail.authenticated


@pytest.mark.parametrize("status, update, remove, release, subject", [
    (False, False, False, None, "BANK[alu] - STATUS[False] - UPDATE[False] - REMOVE[False] - RELEASE[None]"),
    (True, False, True, "12", "BANK[alu] - STATUS[True] - UPDATE[False] - REMOVE[True] - RELEASE[12]"),
])
async def test_default_subject_tells_status_and_action(smtp_server, make_props, status, update, remove, release,
                                                       subject):
    server = smtp_server()
    await notify_bank_action(make_props(server.port),
                             update_action(status=status, update=update, remove=remove, release=release))
    assert subject_of(server.mails[0]) == subject


def test_from_session_reads_biomaj3_session_fields():
    session = {"status": {"init": True, "over": True}, "release": "2003", "update": True, "remove": False,
               "log_file": "/x/alu.log"}
    action = BankAction.from_session(BANK, "update", session, ok=True)
    assert (action.status, action.update, action.remove, action.release, action.log_file) == (
        True, True, False, "2003", "/x/alu.log")
    assert BankAction.from_session(BANK, "update", session, ok=False).status is False
    assert BankAction.from_session(BANK, "update", {**session, "status": {"over": False}}).status is False


@pytest.mark.parametrize("mail", [{"mail_smtp_host": ""}, {"mail_admin": ""}, {"mail_from": ""}])
async def test_nothing_sent_without_host_admin_or_sender(smtp_server, make_props, mail, caplog):
    server = smtp_server()
    assert await notify_bank_action(make_props(server.port, **mail), update_action()) == []
    assert server.mails == []
    if "mail_from" in mail:
        assert any(r.levelno == logging.WARNING and "mail.from" in r.getMessage() for r in caplog.records)


CHANGES = {"added": {"count": 1, "bytes": 50}, "removed": {"count": 1, "bytes": 40},
           "changed": {"count": 1, "bytes": 2048}, "unchanged": {"count": 2, "bytes": 40}, "against": "2002",
           "dry_run": False, "files": {"added": ["e.txt"], "removed": ["d.txt"], "changed": ["b.txt"]}}


async def test_default_body_starts_with_the_change_report(smtp_server, make_props, tmp_path):
    server = smtp_server()
    log_file = write_log(tmp_path, b"line 1\nline 2\n")
    await notify_bank_action(make_props(server.port, mail_body_tail="7"), update_action(log_file, changes=CHANGES))
    assert body_of(server.mails[0].message) == (
        "Changes: 1 added (50 B), 1 removed (40 B), 1 changed (2.0 KB), 2 unchanged (40 B) against release 2002\n"
        "added: e.txt\nremoved: d.txt\nchanged: b.txt\n\nline 2\n")


def test_from_session_carries_the_change_report():
    session = {"status": {"over": True}, "release": "2003", "update": True, "changes": CHANGES}
    assert BankAction.from_session(BANK, "update", session).changes == CHANGES
    assert BankAction.from_session(BANK, "update", {**session, "changes": None}).variables("")["changes_text"] == ""


# --- templates -----------------------------------------------------------------------------------

# Written in the style of BioMAJ 3's tools/examples/subject.jinja2 and body.jinja2, with the
# variables they use, so that existing templates keep working.
UPSTREAM_STYLE_SUBJECT = (
    "[BioMAJ]{% if modified %} Bank {{ bank }} - Version {{ release }} "
    "{% if status %}{% if update %}updated{% endif %}{% if remove %}removed{% endif %} successfully"
    "{% else %}{% if update %}update{% endif %}{% if remove %}remove{% endif %} failed{% endif %}"
    "{% else %} {{ bank }} does not need update{% endif %}\n"
)
UPSTREAM_STYLE_BODY = "[BioMAJ]\nBank: {{ bank }} - Version {{ release }}\nLog file: {{ log_file }}\n\n{{ log_tail }}\n"


@pytest.mark.parametrize("action, subject", [
    (dict(), "[BioMAJ] Bank alu - Version 2003 updated successfully"),
    (dict(status=False), "[BioMAJ] Bank alu - Version 2003 update failed"),
    (dict(update=False, remove=True, action="remove"), "[BioMAJ] Bank alu - Version 2003 removed successfully"),
    (dict(update=False), "[BioMAJ] alu does not need update"),
])
async def test_upstream_style_templates(smtp_server, make_props, tmp_path, monkeypatch, action, subject):
    monkeypatch.delenv("BIOMAJ_MAIL_TEMPLATE_BODY", raising=False)
    (tmp_path / "subject.jinja2").write_text(UPSTREAM_STYLE_SUBJECT)
    (tmp_path / "body.jinja2").write_text(UPSTREAM_STYLE_BODY)
    server = smtp_server()
    log_file = write_log(tmp_path, b"start\nWorkflow:over\n")
    props = make_props(server.port, mail_template_subject=str(tmp_path / "subject.jinja2"),
                       mail_template_body=str(tmp_path / "body.jinja2"), mail_body_tail="100")
    await notify_bank_action(props, update_action(log_file, **action))
    msg = server.mails[0].message
    assert subject_of(server.mails[0]) == subject
    # bug 8.3 fixed: mail.template.body is read from the properties, not only from its env var
    assert body_of(msg) == f"[BioMAJ]\nBank: alu - Version 2003\nLog file: {log_file}\n\nstart\nWorkflow:over\n"


async def test_every_template_variable(smtp_server, make_props, tmp_path):
    names = ["message", "log_file", "log_tail", "bank", "release", "status", "modified", "update", "remove", "action"]
    template = "\n".join(f"{n}={{{{ {n} }}}}" for n in names)
    template += "\nchanged={{ changes.changed.count }} {{ changes.files.changed|join(',') }}\n{{ changes_text }}"
    (tmp_path / "body.j2").write_text(template)
    server = smtp_server()
    log_file = write_log(tmp_path, b"0123456789")
    props = make_props(server.port, mail_template_body="body.j2", mail_body_tail="4")
    # a relative template path is read from conf.dir
    (tmp_path / "conf" / "body.j2").write_text((tmp_path / "body.j2").read_text())
    await notify_bank_action(props, update_action(log_file, message="hello", action="repair", changes=CHANGES))
    assert body_of(server.mails[0].message).splitlines() == [
        "message=hello", f"log_file={log_file}", "log_tail=6789", "bank=alu", "release=2003", "status=True",
        "modified=True", "update=True", "remove=False", "action=repair", "changed=1 b.txt",
        "Changes: 1 added (50 B), 1 removed (40 B), 1 changed (2.0 KB), 2 unchanged (40 B) against release 2002",
        "added: e.txt", "removed: d.txt", "changed: b.txt"]


@pytest.mark.parametrize("which", ["subject", "body"])
@pytest.mark.parametrize("template, problem", [
    (None, "cannot be read"),  # missing file
    ("{% if %}", "is broken"),  # syntax error
    ("{{ ''.__class__.__mro__ }}", "is broken"),  # the sandbox refuses
    ("{{ 1 / 0 }}", "is broken"),  # an error while rendering
])
async def test_missing_or_broken_template_falls_back_to_default(smtp_server, make_props, tmp_path, caplog, which,
                                                                template, problem):
    path = tmp_path / f"{which}.jinja2"
    if template is not None:
        path.write_text(template)
    server = smtp_server()
    log_file = write_log(tmp_path, b"the log\n")
    props = make_props(server.port, mail_body_tail="1000", **{f"mail_template_{which}": str(path)})
    assert await notify_bank_action(props, update_action(log_file)) == ["admin@example.org"]
    msg = server.mails[0].message
    assert subject_of(server.mails[0]) == "BANK[alu] - STATUS[True] - UPDATE[True] - REMOVE[False] - RELEASE[2003]"
    assert body_of(msg) == "the log\n"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"mail.template.{which}" in w and problem in w for w in warnings), warnings


# --- log tail and attachment ---------------------------------------------------------------------


async def test_body_tail_is_the_last_bytes_of_the_log(smtp_server, make_props, tmp_path):
    """BioMAJ 3 put the FIRST mail.body.tail bytes in the body; biomaj puts the last ones."""
    server = smtp_server()
    content = b"HEAD-first-line\n" + b"x" * 5000 + b"\nthe last line: Workflow:over\n"
    log_file = write_log(tmp_path, content)
    await notify_bank_action(make_props(server.port, mail_body_tail="30"), update_action(log_file))
    body = body_of(server.mails[0].message)
    assert body == content[-30:].decode()
    assert "HEAD" not in body


async def test_body_tail_longer_than_the_log_and_cut_utf8(smtp_server, make_props, tmp_path):
    server = smtp_server()
    log_file = write_log(tmp_path, "début\nrelease é\n".encode())
    await notify_bank_action(make_props(server.port, mail_body_tail="10000"), update_action(log_file))
    assert body_of(server.mails[0].message) == "début\nrelease é\n"
    # a tail that starts inside "é" drops the cut character instead of sending garbage
    await notify_bank_action(make_props(server.port, mail_body_tail="2"), update_action(log_file))
    assert body_of(server.mails[1].message) == "\n"


async def test_log_attached_below_mail_body_attach(smtp_server, make_props, tmp_path):
    server = smtp_server()
    content = b"a log line\n" * 10
    log_file = write_log(tmp_path, content)
    await notify_bank_action(make_props(server.port, mail_body_attach=str(len(content) + 1)), update_action(log_file))
    await notify_bank_action(make_props(server.port, mail_body_attach=str(len(content))), update_action(log_file))
    await notify_bank_action(make_props(server.port), update_action(log_file))
    attached, too_big, unset = (m.message for m in server.mails)
    [part] = attachments_of(attached)
    assert part.get_content_type() == "application/octet-stream"
    assert part["Content-Transfer-Encoding"] == "base64"
    assert part.get_filename() == f"{BANK}.log"
    assert part.get_content() == content
    assert base64.b64decode(part.get_payload()) == content
    assert attachments_of(too_big) == [] and attachments_of(unset) == []


async def test_invalid_sizes_are_ignored_with_a_warning(smtp_server, make_props, tmp_path, caplog):
    server = smtp_server()
    log_file = write_log(tmp_path, b"log\n")
    props = make_props(server.port, mail_body_tail="many", mail_body_attach="lots")
    assert await notify_bank_action(props, update_action(log_file)) == ["admin@example.org"]
    assert body_of(server.mails[0].message).strip() == ""
    assert "mail.body.tail" in all_log_text(caplog) and "mail.body.attach" in all_log_text(caplog)


async def test_no_log_no_tail(smtp_server, make_props, tmp_path):
    server = smtp_server()
    props = make_props(server.port, mail_body_tail="100", mail_body_attach="100000")
    await notify_bank_action(props, update_action(str(tmp_path / "missing.log")))
    await notify_bank_action(props, update_action(None, message="Bank alu removed"))
    missing, with_message = (m.message for m in server.mails)
    assert body_of(missing).strip() == "" and attachments_of(missing) == []
    assert body_of(with_message) == "Bank alu removed\n"


# --- recipients ------------------------------------------------------------------------------------


async def test_one_mail_per_recipient(smtp_server, make_props):
    server = smtp_server()
    props = make_props(server.port, mail_admin="one@example.org, two@example.org,Three <three@example.org>")
    sent = await notify_bank_action(props, update_action())
    assert sent == ["one@example.org", "two@example.org", "three@example.org"]
    mails = server.mails
    assert [m.rcpt_tos for m in mails] == [["one@example.org"], ["two@example.org"], ["three@example.org"]]
    assert [m.message.get_all("To") for m in mails] == [["one@example.org"], ["two@example.org"],
                                                        ["Three <three@example.org>"]]
    assert len({subject_of(m) for m in mails}) == 1


async def test_a_refused_recipient_does_not_stop_the_others(smtp_server, make_props, caplog):
    server = smtp_server()
    server.inbox.refuse.add("gone@example.org")
    props = make_props(server.port, mail_admin="gone@example.org,here@example.org")
    assert await notify_bank_action(props, update_action()) == ["here@example.org"]
    assert [m.rcpt_tos for m in server.mails] == [["here@example.org"]]
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert "gone@example.org" in warning.getMessage() and "550" in warning.getMessage()


# --- STARTTLS and login --------------------------------------------------------------------------


async def test_starttls_only_when_mail_tls_is_true(smtp_server, make_props, certificate, monkeypatch):
    server = smtp_server(tls_context=server_tls_context(certificate))
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # the client trusts the test certificate
    assert await notify_bank_action(make_props(server.port), update_action()) == ["admin@example.org"]
    assert await notify_bank_action(make_props(server.port, mail_tls="false"), update_action())
    assert await notify_bank_action(make_props(server.port, mail_tls="true"), update_action())
    assert [m.tls for m in server.mails] == [False, False, True]


async def test_starttls_asked_of_a_server_without_it_is_a_warning(smtp_server, make_props, caplog):
    server = smtp_server()
    assert await notify_bank_action(make_props(server.port, mail_tls="true"), update_action()) == []
    assert server.mails == []
    assert any(r.levelno == logging.WARNING and "not sent" in r.getMessage() for r in caplog.records)


async def test_login_when_mail_user_is_set_and_password_never_logged(smtp_server, make_props, caplog):
    caplog.set_level(logging.DEBUG)
    server = smtp_server(authenticator=accept_credentials, auth_require_tls=False)
    ok = await notify_bank_action(make_props(server.port, mail_user="bob", mail_password=PASSWORD), update_action())
    assert ok == ["admin@example.org"]
    refused = await notify_bank_action(make_props(server.port, mail_user="bob", mail_password=PASSWORD + "x"),
                                       update_action())
    assert refused == []
    assert await notify_bank_action(make_props(server.port), update_action()) == ["admin@example.org"]
    assert [m.authenticated for m in server.mails] == [True, False]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("535" in w or "uthentication" in w for w in warnings), warnings
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + repr(vars(record))
        assert PASSWORD not in text, record
        if record.name.startswith("biomaj"):
            assert base64.b64encode(PASSWORD.encode()).decode() not in text


# --- failures never fail the caller ----------------------------------------------------------------


async def test_server_down_is_a_warning(make_props, caplog):
    port = free_port()  # nothing listens there
    started = time.monotonic()
    assert await notify_bank_action(make_props(port), update_action()) == []
    assert time.monotonic() - started < 5
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.name == f"biomaj.bank.{BANK}"
    assert "not sent" in warning.getMessage() and f"127.0.0.1:{port}" in warning.getMessage()


async def test_server_that_never_answers_is_bounded_by_the_timeout(make_props, caplog):
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader, writer):  # accepts the connection, never sends the greeting
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        assert await notify_bank_action(make_props(port), update_action(), timeout=0.5) == []
        assert time.monotonic() - started < 3
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert accepted
    assert any(r.levelno == logging.WARNING and "0.5s" in r.getMessage() for r in caplog.records)


async def test_server_refusing_the_data_is_a_warning(smtp_server, make_props, caplog):
    class Refusing(Inbox):
        async def handle_DATA(self, server, session, envelope):
            return "554 5.7.1 rejected"

    server = smtp_server(Refusing())
    assert await notify_bank_action(make_props(server.port), update_action()) == []
    assert any(r.levelno == logging.WARNING and "554" in r.getMessage() for r in caplog.records)


# --- end to end: real updates and a real removal of a bank -------------------------------------


def configure_mail(site, port: int, **extra: str) -> None:
    """mail.* in the site's global.properties, in its [GENERAL] section (the file ends with
    logging sections, so a key is not appended at the end)."""
    values = {"mail.smtp.host": "127.0.0.1", "mail.smtp.port": str(port), "mail.from": SENDER,
              "mail.admin": "admin@example.org,owner@example.org", **extra}
    path = site.global_properties
    for key, value in values.items():
        if not re.search(rf"^{re.escape(key)}\s*=", path.read_text(), re.MULTILINE):
            path.write_text(path.read_text().replace("[GENERAL]\n", f"[GENERAL]\n{key}=\n", 1))
        set_property(path, key, value)


async def test_update_then_remove_send_mails(site, smtp_server):
    server = smtp_server()
    configure_mail(site, server.port, **{"mail.body.tail": "2000"})
    site.add_bank("local")
    outcome = await site.update("local")
    assert outcome.ok and outcome.updated
    mails = server.mails
    assert [m.rcpt_tos for m in mails] == [["admin@example.org"], ["owner@example.org"]]
    subject = f"BANK[local] - STATUS[True] - UPDATE[True] - REMOVE[False] - RELEASE[{outcome.release}]"
    assert all(subject_of(m) == subject for m in mails)
    log_text = Path(outcome.log_file).read_text()
    changes, _, tail = body_of(mails[0].message).partition("\n\n")  # the change report, then the log's end
    assert changes.startswith("Changes: 3 added (") and changes.endswith(
        "0 removed (0 B), 0 changed (0 B), 0 unchanged (0 B) (first release of the bank)\n"
        "added: test.fasta.gz, test2.fasta, test_100.txt")
    assert "Workflow:" in tail
    assert tail.rstrip("\n") in log_text  # the end of the session log
    assert "Notify:mail sent to admin@example.org, owner@example.org" in log_text

    # nothing new upstream: a mail all the same, saying no update
    again = await site.update("local")
    assert again.ok and not again.updated
    assert subject_of(server.mails[-1]) == (
        f"BANK[local] - STATUS[True] - UPDATE[False] - REMOVE[False] - RELEASE[{outcome.release}]")

    # a new release, one file changed upstream: the mail says which, against which release
    (site.remote / "test2.fasta").write_text(">seq\nACGT\n")
    os.utime(site.remote / "test2.fasta", (time.time() + 86_400 * 2,) * 2)  # a later day: a new release
    third = await site.update("local")
    assert third.ok and third.updated, third.error
    body = body_of(server.mails[-1].message)
    assert body.startswith("Changes: 0 added (0 B), 0 removed (0 B), 1 changed (10 B), 2 unchanged (")
    assert f" against release {outcome.release}\nchanged: test2.fasta\n\n" in body

    removed = await runner.remove_bank_release(site.context(), "local", outcome.release)
    assert removed.ok
    last = server.mails[-2:]
    assert [m.rcpt_tos for m in last] == [["admin@example.org"], ["owner@example.org"]]
    assert subject_of(last[0]) == (
        f"BANK[local] - STATUS[True] - UPDATE[False] - REMOVE[True] - RELEASE[{outcome.release}]")
    assert "Notify:mail sent" in Path(removed.log_file).read_text()


async def test_remove_all_and_repair_send_mails(site, smtp_server):
    server = smtp_server()
    site.add_bank("local")
    outcome = await site.update("local")
    configure_mail(site, server.port, **{"mail.admin": "admin@example.org"})
    repaired = await runner.repair(site.context(), "local")
    assert repaired.details["repaired"]
    assert subject_of(server.mails[-1]) == (
        f"BANK[local] - STATUS[True] - UPDATE[True] - REMOVE[False] - RELEASE[{outcome.release}]")
    assert "repaired" in body_of(server.mails[-1].message)
    await runner.remove_all(site.context(), "local")
    msg = server.mails[-1].message
    assert subject_of(server.mails[-1]) == "BANK[local] - STATUS[True] - UPDATE[False] - REMOVE[True] - RELEASE[all]"
    assert outcome.release in body_of(msg)


async def test_update_succeeds_when_the_smtp_server_is_down(site, caplog):
    port = free_port()
    configure_mail(site, port)
    site.add_bank("local")
    outcome = await site.update("local")
    assert outcome.ok and outcome.updated
    doc = await site.doc("local")
    assert [e["release"] for e in doc["production"]] == [outcome.release]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.getMessage().startswith("Notify:")]
    assert warnings and warnings[0].name == "biomaj.bank.local"
    session_log = Path(outcome.log_file).read_text()
    assert "WARN" in session_log and f"not sent via 127.0.0.1:{port}" in session_log


async def test_dependency_updates_send_no_mail_of_their_own(site, smtp_server):
    server = smtp_server()
    configure_mail(site, server.port, **{"mail.admin": "admin@example.org"})
    for name in ("sub1", "sub2", "computed"):
        site.add_bank(name)
    outcome = await site.update("computed")
    subjects = [subject_of(m) for m in server.mails]
    assert len(subjects) == 1 and subjects[0].startswith("BANK[computed]"), (outcome, subjects)



# --- docs ------------------------------------------------------------------------------------------


def test_docs_section_names_every_key_and_variable():
    from biomaj.config.settings import MAIL
    from biomaj.notify.docs import DOC_SECTION
    from biomaj.notify.mail import default_subject

    assert DOC_SECTION.startswith("## Mail notifications\n")
    for setting in MAIL:
        assert f"`{setting.name}`" in DOC_SECTION, setting.name
    for variable in update_action().variables(""):
        assert f"| `{variable}` |" in DOC_SECTION, variable
    assert f"`{default_subject(update_action())}`" in DOC_SECTION
