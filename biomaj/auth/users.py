"""The users of a biomaj installation: accounts, passwords, API keys, and who is an admin.

User documents keep BioMAJ 3's layout (``{id, email, is_ldap, hashed_password}``) plus
``is_admin`` and ``created``; API keys live beside them, hashed (:mod:`biomaj.auth.keys`).
Admins are the users flagged ``is_admin`` and the names listed in config.yml (``auth.admins``)
or in global.properties (``admin``), as in BioMAJ 3.

With LDAP configured, a user whose account is an LDAP one (or who has no local account yet) is
checked by an LDAP bind; a first successful LDAP login creates the local account, without any API
key (BioMAJ 3 created one, with a key, on any lookup of any name).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

from biomaj.errors import BiomajError
from biomaj.storage.base import Conflict, Store

from . import keys, passwords

log = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
SECRET_FIELDS = ("hashed_password", "apikey")  # never leave this module (apikey: BioMAJ 3's clear key)


class UserError(BiomajError):
    """A refused user operation (bad name, unknown user, duplicate); the message says which."""

    exit_code = 2


class UnknownUser(UserError):
    """No such user."""


class LdapBackend(Protocol):
    """What the users need of LDAP (:class:`biomaj.auth.ldap.LdapAuth`)."""

    async def authenticate(self, name: str, password: str) -> Any | None: ...


@dataclass(frozen=True)
class Identity:
    """Who sent a request or runs a command. ``via``: apikey, password, ldap."""

    name: str
    admin: bool = False
    email: str | None = None
    via: str = ""


class Users:
    """Accounts in ``store``; ``admins``: names with admin rights whatever their flag."""

    def __init__(self, store: Store, admins: frozenset[str] = frozenset(), ldap: LdapBackend | None = None):
        self.store = store
        self.admins = admins
        self.ldap = ldap

    # --- accounts ------------------------------------------------------------------------------

    async def create(self, name: str, *, email: str | None = None, password: str | None = None,
                     admin: bool = False, is_ldap: bool = False, with_key: bool = True) -> tuple[dict, str | None]:
        """A new account; returns its public view and its first API key (``None`` without
        ``with_key``), to be shown once."""
        check_name(name)
        if email is not None and not EMAIL.fullmatch(email):
            raise UserError(f"{email!r} is not an email address")
        doc = {"id": name, "email": email, "is_ldap": is_ldap, "is_admin": admin, "created": time.time(),
               "hashed_password": passwords.hash_password(password) if password else None}
        try:
            await self.store.create_user(doc)
        except Conflict:
            raise UserError(f"user {name} already exists") from None
        key = (await self.new_api_key(name, "first key"))[1] if with_key else None
        log.info("user %s created%s", name, " (admin)" if admin else "")
        return await self.get(name), key

    async def get(self, name: str) -> dict:
        """The public view of an account: no hash, no key; its keys' ids and labels."""
        doc = await self.store.get_user(name)
        if doc is None:
            raise UnknownUser(f"no user {name}")
        return await self._public(doc)

    async def list(self) -> list[dict]:
        return [await self._public(doc) for doc in await self.store.list_users()]

    async def delete(self, name: str) -> None:
        if not await self.store.delete_user(name):
            raise UnknownUser(f"no user {name}")
        log.info("user %s deleted", name)

    async def set_password(self, name: str, password: str) -> None:
        await self._existing(name)
        await self.store.update_user(name, {"hashed_password": passwords.hash_password(password)})

    async def set_email(self, name: str, email: str | None) -> None:
        """Set (``None``: remove) the email address of ``name``."""
        if email is not None and not EMAIL.fullmatch(email):
            raise UserError(f"{email!r} is not an email address")
        await self._existing(name)
        await self.store.update_user(name, {"email": email})

    async def set_admin(self, name: str, admin: bool) -> None:
        await self._existing(name)
        await self.store.update_user(name, {"is_admin": admin})

    def is_admin(self, name: str, doc: dict | None = None) -> bool:
        return name in self.admins or bool(doc and doc.get("is_admin"))

    # --- API keys -----------------------------------------------------------------------------

    async def new_api_key(self, name: str, label: str = "") -> tuple[str, str]:
        """A new ``(key id, key)`` for the user; the key is shown once, only its hash is kept."""
        await self._existing(name)
        key_id, key = keys.new_api_key()
        await self.store.add_api_key(name, key_id, keys.key_hash(key), label, time.time())
        log.info("user %s: API key %s created", name, key_id)
        return key_id, key

    async def renew_api_key(self, name: str, label: str = "") -> tuple[str, str, list[str]]:
        """BioMAJ 3's renewal: a new ``(key id, key)`` for the user, every older key revoked (their
        ids, the third item)."""
        key_id, key = await self.new_api_key(name, label)
        older = [k["id"] for k in await self.store.list_api_keys(name) if k["id"] != key_id]
        for old in older:
            await self.revoke_api_key(name, old)
        return key_id, key, older

    async def revoke_api_key(self, name: str, key_id: str) -> None:
        if not await self.store.revoke_api_key(name, key_id):
            raise UserError(f"user {name} has no API key {key_id}")
        log.info("user %s: API key %s revoked", name, key_id)

    # --- authentication -----------------------------------------------------------------------

    async def by_api_key(self, key: str) -> Identity | None:
        """The owner of ``key``, or None."""
        if not key or len(key) > 256:
            return None
        found = await self.store.find_api_key(keys.key_hash(key))
        if found is None:
            return None
        doc, _record = found
        return Identity(doc["id"], self.is_admin(doc["id"], doc), doc.get("email"), "apikey")

    async def by_password(self, name: str, password: str) -> Identity | None:
        """The user if ``password`` is right (local hash, else LDAP when configured), or None."""
        if not NAME.fullmatch(name or "") or not password:
            return None
        doc = await self.store.get_user(name)
        stored = (doc or {}).get("hashed_password")
        if doc is not None and stored and not doc.get("is_ldap"):
            if not passwords.verify_password(stored, password):
                return None
            if passwords.needs_rehash(stored):  # a BioMAJ 3 bcrypt hash: upgraded at once
                await self.store.update_user(name, {"hashed_password": passwords.hash_password(password)})
            return Identity(name, self.is_admin(name, doc), doc.get("email"), "password")
        if self.ldap is None:
            return None
        found = await self.ldap.authenticate(name, password)
        if found is None:
            return None
        email = getattr(found, "email", None)
        if doc is None:
            await self.create(name, email=email if email and EMAIL.fullmatch(email) else None, is_ldap=True,
                              with_key=False)
            doc = await self.store.get_user(name)
        return Identity(name, self.is_admin(name, doc), email or (doc or {}).get("email"), "ldap")

    # --- helpers --------------------------------------------------------------------------------

    async def _existing(self, name: str) -> dict:
        doc = await self.store.get_user(name)
        if doc is None:
            raise UnknownUser(f"no user {name}")
        return doc

    async def _public(self, doc: dict) -> dict:
        view = {k: v for k, v in doc.items() if k not in SECRET_FIELDS}
        view["is_admin"] = self.is_admin(doc["id"], doc)
        view["has_password"] = bool(doc.get("hashed_password"))
        view["api_keys"] = [{"id": k["id"], "label": k.get("label", ""), "created": k.get("created")}
                            for k in await self.store.list_api_keys(doc["id"])]
        return view


def check_name(name: str) -> None:
    """A user name: letters, digits and ``_ . @ + -``, at most 64 characters, not starting with
    a punctuation mark."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UserError(f"invalid user name {name!r}: use letters, digits and _ . @ + - (at most 64 characters)")
