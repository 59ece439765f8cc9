"""Who runs a local command, who is an admin, and how a node reads a bank's secrets."""

from __future__ import annotations

import getpass
from typing import Callable

from biomaj.config.properties import BankProperties
from biomaj.config.service import Config


def current_user() -> str:
    """The identity of a local command: the unix login, as BioMAJ 3's monolithic mode."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (containers): an anonymous local user
        return "biomaj"


def secret_reader(config: Config) -> Callable[[str, str], str | None]:
    """(bank, property) -> value, read from the bank file on this node (secrets never travel
    in bus messages)."""

    def read(bank: str, key: str) -> str | None:
        return BankProperties.load(config.global_properties, bank).get(key)

    return read


def admins_of(config: Config) -> frozenset[str]:
    """Admins from config.yml and from the ``admin`` key of global.properties."""
    from biomaj.config.properties import GlobalProperties

    from biomaj.errors import ConfigError

    try:
        from_properties = GlobalProperties.load(config.global_properties).get_list("admin")
    except ConfigError:  # no global.properties yet: every bank job will say so
        from_properties = []
    return frozenset(config.settings.auth.admins) | frozenset(from_properties)


def ldap_of(config: Config):
    """The LDAP backend configured in config.yml (``auth.ldap``), or None."""
    settings = config.settings.auth.ldap
    if not settings.url:
        return None
    from biomaj.auth.ldap import LdapAuth, LdapConfig

    values = settings.model_dump(exclude_none=True)
    if settings.bind_password is not None:
        values["bind_password"] = settings.bind_password.get_secret_value()
    return LdapAuth(LdapConfig.from_mapping(values, where="auth.ldap"))


def users_of(config: Config, store):
    """The users service of this installation: its store, its admins and its LDAP."""
    from biomaj.auth.users import Users

    return Users(store, admins_of(config), ldap_of(config))
