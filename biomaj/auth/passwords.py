"""Password hashing: argon2id for every new hash, BioMAJ 3's bcrypt hashes still accepted.

A user migrated from BioMAJ 3 keeps its password: its ``hashed_password`` is a bcrypt string
(sometimes written by Python 3 as ``"b'$2b$...'"``, BioMAJ 3 stored ``str()`` of bytes), checked
with bcrypt and replaced by an argon2id hash at the first successful login (:func:`needs_rehash`).
"""

from __future__ import annotations

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from biomaj.errors import BiomajError

MIN_LENGTH = 8
MAX_LENGTH = 1024  # bytes: hashing is deliberately slow; refuse megabyte "passwords" early

_hasher = PasswordHasher()  # argon2id, the library's current recommended parameters


class WeakPassword(BiomajError):
    """A password refused before hashing (too short or too long)."""

    exit_code = 2


def check_strength(password: str) -> None:
    """Refuse passwords shorter than MIN_LENGTH characters or longer than MAX_LENGTH bytes."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_LENGTH} characters")
    if len(password.encode()) > MAX_LENGTH:
        raise WeakPassword(f"a password may have at most {MAX_LENGTH} bytes")


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (checked by :func:`check_strength` first)."""
    check_strength(password)
    return _hasher.hash(password)


def _bcrypt_hash(stored: str) -> bytes | None:
    text = stored[2:-1] if stored.startswith(("b'", 'b"')) and len(stored) > 3 else stored
    return text.encode() if text.startswith(("$2a$", "$2b$", "$2y$")) else None


def verify_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches the stored hash (argon2id, or BioMAJ 3's bcrypt)."""
    if not stored or not password or len(password.encode()) > MAX_LENGTH:
        return False
    legacy = _bcrypt_hash(stored)
    if legacy is not None:
        try:
            return bcrypt.checkpw(password.encode(), legacy)
        except ValueError:  # a malformed hash, or a password over bcrypt's 72 bytes
            return False
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """True for a BioMAJ 3 bcrypt hash or argon2 parameters older than today's."""
    if _bcrypt_hash(stored) is not None:
        return True
    try:
        return _hasher.check_needs_rehash(stored)
    except InvalidHashError:
        return True
