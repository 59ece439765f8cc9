"""Who runs a local command, who is an admin, and how a node reads a bank's secrets."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Callable

from biomaj.config.properties import BankProperties, GlobalProperties
from biomaj.config.service import Config
from biomaj.errors import ConfigError


def current_user() -> str:
    """The identity of a local command: the unix login, as BioMAJ 3's monolithic mode."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (containers): an anonymous local user
        return "biomaj"


def secret_reader(config: Config) -> Callable[[str, str], str | None]:
    """(bank, property) -> value, read from the bank file on this node (secrets never travel in bus
    messages, nor in logs). A downloader asks for every file of a bank with credentials: each bank
    is parsed once, and again when its file or global.properties changes (mtime or size)."""
    parsed: dict[str, tuple[_Stamp | None, BankProperties]] = {}

    def read(bank: str, key: str) -> str | None:
        stamp, props = parsed.get(bank, (None, None))
        if stamp is None or stamp != _stamp(config.global_properties, props.path):
            props = BankProperties.load(config.global_properties, bank)
            parsed[bank] = (_stamp(config.global_properties, props.path), props)
        return props.get(key)

    return read


#: The mtime (ns) and size of global.properties, then of a bank file.
_Stamp = tuple[int, int, int, int]


def _stamp(global_path: Path, bank_path: Path) -> _Stamp | None:
    """When and how big both files are; None when one is gone (the next read loads, and says why)."""
    try:
        globals_, bank = global_path.stat(), bank_path.stat()
    except OSError:
        return None
    return globals_.st_mtime_ns, globals_.st_size, bank.st_mtime_ns, bank.st_size


def admins_of(config: Config) -> frozenset[str]:
    """Admins from config.yml and from the ``admin`` key of global.properties."""
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
