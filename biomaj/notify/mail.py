"""Mail the bank's admins after an update, a remove, a remove-all or a repair.

BioMAJ 3's ``Notify.notifyBankAction`` (``biomaj/notify.py`` upstream; reference
``biomaj3-core-behaviour.md`` 1.3.g and 6.1), with the same keys, default subject, default body,
Jinja2 template variables and attachment rule, and these differences, all deliberate:

* ``mail.template.body`` is read from the properties as documented (upstream passes ``None`` as
  the section, so the key is only ever found through ``BIOMAJ_MAIL_TEMPLATE_BODY``: bug 8.3);
* ``mail.body.tail`` puts the **last** N bytes of the log in the body, as its name says
  (upstream reads the first N bytes: bug 8.3);
* each recipient gets a mail with only its own address in ``To`` (upstream adds one more ``To``
  header per recipient to the same message);
* templates are rendered in Jinja2's sandbox (bank owners write them), a relative template path
  is read from ``conf.dir``, and a missing or broken template falls back to the default with a
  warning;
* nothing is ever raised to the caller: a mail that cannot be sent (refused connection, login
  refused, timeout, broken template) is a WARNING in the log given (the bank's session log, which
  also reaches the application log), never a failed update; and the whole notification is bounded
  by one deadline (:data:`MAIL_TIMEOUT`).

Why ``aiosmtplib`` rather than the standard ``smtplib`` in a thread: the SMTP exchange runs on
the event loop and can be cancelled, so when the deadline passes the connection is really closed
and the job goes on. A ``smtplib`` call in ``asyncio.to_thread`` can only be abandoned: its thread
keeps the socket (and a worker thread per stuck job) until its own socket timeout.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import os
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Mapping, Protocol

from biomaj import change_report
from biomaj.errors import ConfigError

#: Seconds the whole notification (connection, STARTTLS, login, every recipient) may take.
MAIL_TIMEOUT = 30.0
#: Display name of the sender: ``From: BioMAJ <mail.from>``, as BioMAJ 3 writes it.
SENDER_NAME = "BioMAJ"


class Properties(Protocol):
    """What is read from the bank's merged properties (a ``BankProperties``)."""

    def get(self, key: str, default: str | None = None) -> str | None: ...

    def get_int(self, key: str, default: int | None = None) -> int | None: ...

    def get_bool(self, key: str, default: bool = False) -> bool: ...

    def get_list(self, key: str) -> list[str]: ...


@dataclass(frozen=True)
class BankAction:
    """What happened to a bank, as the mail tells it (BioMAJ 3's session fields)."""

    bank: str
    action: str  # update, remove, remove-all or repair
    status: bool  # the run is over and succeeded (BioMAJ 3: the session's ``over`` status)
    release: str | None = None
    update: bool = False  # a new release was made
    remove: bool = False  # a release (or the whole bank) was removed
    log_file: str | None = None  # read for log_tail and the attachment; None: no log in the mail
    message: str = ""  # extra text (e.g. what remove-all deleted)
    changes: Mapping[str, Any] | None = None  # the update's change report (biomaj.change_report)

    @classmethod
    def from_session(cls, bank: str, action: str, session: Mapping[str, Any], *, ok: bool = True,
                     message: str = "") -> BankAction:
        over = (session.get("status") or {}).get("over") is True
        return cls(bank=bank, action=action, status=ok and over, release=session.get("release"),
                   update=bool(session.get("update")), remove=bool(session.get("remove")),
                   log_file=session.get("log_file"), message=message, changes=session.get("changes"))

    def variables(self, log_tail: str) -> dict[str, Any]:
        """The template variables: BioMAJ 3's (message, log_file, log_tail, bank, release,
        status, modified, update, remove) plus ``action``, ``changes`` (the change report, a
        dict, or None) and ``changes_text`` (its lines, as the default body shows them)."""
        return {
            "message": self.message,
            "log_file": self.log_file or "",
            "log_tail": log_tail,
            "bank": self.bank,
            "release": str(self.release),
            "status": self.status,
            "modified": self.update or self.remove,
            "update": self.update,
            "remove": self.remove,
            "action": self.action,
            "changes": dict(self.changes) if self.changes else None,
            "changes_text": changes_text(self.changes),
        }


def default_subject(action: BankAction) -> str:
    """BioMAJ 3's subject: ``BANK[alu] - STATUS[True] - UPDATE[True] - REMOVE[False] - RELEASE[2003]``."""
    return (f"BANK[{action.bank}] - STATUS[{action.status}] - UPDATE[{action.update}] - "
            f"REMOVE[{action.remove}] - RELEASE[{action.release}]")


def changes_text(changes: Mapping[str, Any] | None) -> str:
    """The change report in a few lines (``Changes: 1 added (10 B), ...`` then the names), or ""."""
    if not changes:
        return ""
    return "\n".join([f"Changes: {change_report.summary(changes)}", *change_report.file_lines(changes)])


def default_body(action: BankAction, log_tail: str) -> str:
    """BioMAJ 3's body is the log tail; biomaj puts the extra message and the update's change
    report, when there are, first."""
    head = "\n\n".join(part for part in (action.message, changes_text(action.changes)) if part)
    if head:
        return f"{head}\n\n{log_tail}" if log_tail else f"{head}\n"
    return log_tail


@dataclass(frozen=True)
class MailSettings:
    """The ``mail.*`` properties, read once."""

    host: str
    port: int
    recipients: tuple[str, ...]
    sender: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    body_tail: int = 0  # bytes from the END of the log put in the body; 0: none
    body_attach: int = 0  # attach the log when it is smaller than this; 0: never
    template_subject: Path | None = None
    template_body: Path | None = None

    @classmethod
    def from_props(cls, props: Properties, log: logging.Logger) -> MailSettings | None:
        """The settings, or None (with the reason logged) when no mail is to be sent."""
        host = (props.get("mail.smtp.host") or "").strip()
        recipients = tuple(props.get_list("mail.admin"))
        if not host or not recipients:
            log.debug("Notify:none (mail.smtp.host or mail.admin not set)")
            return None
        sender = (props.get("mail.from") or "").strip()
        if not sender:
            log.warning("Notify:no mail sent: mail.from is not set (mail.smtp.host is %s)", host)
            return None
        try:
            port = props.get_int("mail.smtp.port", 25) or 25
        except ConfigError as exc:
            log.warning("Notify:no mail sent: %s", exc)
            return None
        return cls(
            host=host, port=port, recipients=recipients, sender=sender,
            user=(props.get("mail.user") or "").strip() or None, password=props.get("mail.password"),
            tls=props.get_bool("mail.tls"),
            body_tail=_size(props, "mail.body.tail", log), body_attach=_size(props, "mail.body.attach", log),
            template_subject=_template_path(props, "mail.template.subject"),
            template_body=_template_path(props, "mail.template.body"),
        )


def _size(props: Properties, key: str, log: logging.Logger) -> int:
    try:
        return max(props.get_int(key, 0) or 0, 0)
    except ConfigError as exc:
        log.warning("Notify:%s ignored: %s", key, exc)
        return 0


def _template_path(props: Properties, key: str) -> Path | None:
    value = (props.get(key) or "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    conf_dir = props.get("conf.dir")
    if not path.is_absolute() and conf_dir:
        path = Path(conf_dir) / path
    return path


# --- the log -------------------------------------------------------------------------------------


def read_log(path: str | None, tail: int, attach_below: int) -> tuple[str, tuple[str, bytes] | None]:
    """(the last ``tail`` bytes of the log as text, (file name, content) to attach or None).

    BioMAJ 3 documents ``mail.body.tail`` as "tail last X bytes of log in mail body" but sends
    the first X bytes; this sends the last X bytes on purpose. A cut UTF-8 character at the
    start of the tail is dropped. The log is attached when its size is below ``attach_below``.
    """
    if not path or not (tail or attach_below):
        return "", None
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            text = ""
            if tail:
                handle.seek(max(size - tail, 0))
                chunk = handle.read(tail)
                if size > tail:
                    chunk = chunk.lstrip(bytes(range(0x80, 0xC0)))  # continuation bytes of a cut character
                text = chunk.decode("utf-8", errors="replace")
            attachment = None
            if attach_below and size < attach_below:
                handle.seek(0)
                attachment = (Path(path).name, handle.read(attach_below))
    except OSError:
        return "", None
    return text, attachment


# --- templates -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _sandbox():
    """The Jinja2 sandbox, built at the first template (every update imports this module; few
    send mail with a template)."""
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(autoescape=False)


def render(template: Path | None, variables: Mapping[str, Any], what: str, log: logging.Logger) -> str | None:
    """``template`` rendered in the Jinja2 sandbox, or None (with a warning) when it is missing
    or broken: the caller then uses the default."""
    if template is None:
        return None
    try:
        source = template.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        log.warning("Notify:mail.template.%s %s cannot be read (%s): the default %s is used", what, template,
                    reason, what)
        return None
    try:
        return _sandbox().from_string(source).render(variables)
    except Exception as exc:  # noqa: BLE001 - syntax error, sandbox refusal, or an error of the template's own code
        log.warning("Notify:mail.template.%s %s is broken (%s: %s): the default %s is used", what, template,
                    type(exc).__name__, exc, what)
        return None


# --- the messages --------------------------------------------------------------------------------


def build_message(settings: MailSettings, recipient: str, subject: str, body: str,
                  attachment: tuple[str, bytes] | None) -> EmailMessage:
    """One mail to one recipient: text body, the log as a base64 ``application/octet-stream``."""
    msg = EmailMessage()
    msg["Subject"] = " ".join(subject.split())  # one line: a template may end with a newline
    msg["From"] = email.utils.formataddr((SENDER_NAME, settings.sender))
    msg["To"] = recipient
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=settings.sender.rpartition("@")[2] or None)
    msg.set_content(body)
    if attachment is not None:
        name, data = attachment
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg


def compose(settings: MailSettings, action: BankAction, log: logging.Logger) -> tuple[str, str, tuple[str, bytes] | None]:
    """(subject, body, attachment) of the mail (the same for every recipient)."""
    log_tail, attachment = read_log(action.log_file, settings.body_tail, settings.body_attach)
    variables = action.variables(log_tail)
    subject = render(settings.template_subject, variables, "subject", log)
    body = render(settings.template_body, variables, "body", log)
    if subject is None or not subject.strip():
        subject = default_subject(action)
    if body is None:
        body = default_body(action, log_tail)
    return subject, body, attachment


# --- sending -------------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    import aiosmtplib

    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


async def _send(settings: MailSettings, mails: list[tuple[str, EmailMessage]], log: logging.Logger,
                timeout: float) -> list[str]:
    """Send every mail over one connection; returns the recipients that got theirs. A refused
    recipient is logged and the others still get theirs; a connection or login failure raises."""
    import aiosmtplib  # here: only an update that sends mail pays for it

    smtp = aiosmtplib.SMTP(hostname=settings.host, port=settings.port, timeout=timeout, start_tls=False)
    sent: list[str] = []
    await smtp.connect()
    try:
        if settings.tls:
            await smtp.starttls()
        if settings.user:
            await smtp.login(settings.user, settings.password or "")
        for address, message in mails:
            try:
                await smtp.send_message(message, sender=settings.sender, recipients=[address])
            except aiosmtplib.SMTPServerDisconnected:
                raise
            except aiosmtplib.SMTPException as exc:
                log.warning("Notify:mail to %s not sent: %s", address, _reason(exc))
            else:
                sent.append(address)
    except BaseException:  # failed, timed out or cancelled: drop the connection, no QUIT to wait for
        smtp.close()
        raise
    try:
        await smtp.quit()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()
    return sent


async def notify_bank_action(props: Properties, action: BankAction, *, log: logging.Logger | None = None,
                             timeout: float = MAIL_TIMEOUT) -> list[str]:
    """Mail ``action`` to every ``mail.admin`` recipient (one mail each) when ``mail.smtp.host``
    and ``mail.admin`` are set; returns the recipients the mail was sent to.

    Never raises (except on cancellation) and never takes more than ``timeout`` seconds: a
    failure is a WARNING on ``log`` (default: the bank's logger ``biomaj.bank.<bank>``). The
    body holds the LAST ``mail.body.tail`` bytes of the log (BioMAJ 3 sends the first ones).
    """
    log = log or logging.getLogger(f"biomaj.bank.{action.bank}")
    settings: MailSettings | None = None
    try:
        settings = MailSettings.from_props(props, log)
        if settings is None:
            return []
        async with asyncio.timeout(timeout):
            subject, body, attachment = await asyncio.to_thread(compose, settings, action, log)
            mails = []
            for recipient in settings.recipients:
                address = email.utils.parseaddr(recipient)[1]
                if "@" not in address:
                    log.warning("Notify:mail.admin entry %r is not an address: skipped", recipient)
                    continue
                mails.append((address, build_message(settings, recipient, subject, body, attachment)))
            if not mails:
                return []
            log.info("Notify:%s", subject)
            sent = await _send(settings, mails, log, timeout)
    except TimeoutError:
        where = f"{settings.host}:{settings.port}" if settings else "the SMTP server"
        log.warning("Notify:mail not sent: no answer from %s within %gs", where, timeout)
        return []
    except Exception as exc:  # noqa: BLE001 - a mail never fails the action it reports
        where = f" via {settings.host}:{settings.port}" if settings else ""
        log.warning("Notify:mail to %s not sent%s: %s", ", ".join(settings.recipients) if settings else "admins",
                    where, _reason(exc))
        return []
    if sent:
        log.info("Notify:mail sent to %s", ", ".join(sent))
    return sent
