"""Keeping secrets out of messages, logs and the files biomaj writes."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

#: A name that says its value is a secret (a property, a variable, a command-line option).
SECRET_NAME = re.compile(r"(credential|passw|secret|token|api[_.-]?key|proxy_auth|private[_.-]?key)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]*@", re.IGNORECASE)
HIDDEN = "***"


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe for error messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username or ''}:{HIDDEN}@{netloc}").geturl()


def is_secret(key: str, value: str = "") -> bool:
    """True for a variable that must not be shown: its name says it is a secret, or its value is
    a URL carrying a password (``amqp://user:pass@host``)."""
    return bool(SECRET_NAME.search(key)) or bool(_URL_PASSWORD.match(value or ""))


def redact_args(args: list[str]) -> list[str]:
    """A command line as it may be recorded: the value of an option whose name says it is a
    secret (``--password=x``, ``--api-key x``, ``token=x``) and any password in a URL become
    ``***``."""
    shown: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            shown.append(HIDDEN)
            hide_next = False
            continue
        name, sep, value = arg.partition("=")
        if sep and SECRET_NAME.search(name):
            shown.append(f"{name}={HIDDEN}")
        elif arg.startswith("-") and SECRET_NAME.search(arg):
            shown.append(arg)
            hide_next = True  # --password VALUE
        else:
            shown.append(redact_url(arg) if _URL_PASSWORD.match(arg) else arg)
    return shown
