"""API keys: random, shown once, stored as a SHA-256 hash.

A key is 32 random bytes (URL-safe base64, prefixed ``bmj_`` so that a leaked one is easy to
recognise); only its hash is stored, so the store (or a backup of it) does not reveal any key.
SHA-256 rather than a slow hash: keys have 256 bits of entropy, nothing to brute-force, and the
store looks a key up by its hash. BioMAJ 3's 10-character keys, migrated, are hashed the same way
and keep working.
"""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "bmj_"


def new_api_key() -> tuple[str, str]:
    """A new ``(key id, key)``: the id names the key in listings, the key is shown once."""
    return secrets.token_hex(4), PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()
