"""Keeping secrets out of messages and logs."""

from __future__ import annotations

from urllib.parse import urlsplit


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe for error messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username or ''}:***@{netloc}").geturl()
