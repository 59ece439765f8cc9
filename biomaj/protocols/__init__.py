"""Protocol clients behind one small read-only interface (see :mod:`biomaj.protocols.base`).

``PROTOCOL_MODULES`` is the only list of protocols: bank ``protocol`` value -> module. Each module
defines one :class:`~biomaj.protocols.base.Protocol` subclass whose ``names`` include that value.
Modules are imported on first use, so a missing optional library only affects its protocol.
"""

from __future__ import annotations

import importlib

from biomaj.errors import ConfigError
from biomaj.protocols.base import Protocol, RemoteConfig

PROTOCOL_MODULES: dict[str, str] = {
    "ftp": "biomaj.protocols.ftp",
    "ftps": "biomaj.protocols.ftp",
    "directftp": "biomaj.protocols.ftp",
    "directftps": "biomaj.protocols.ftp",
    "http": "biomaj.protocols.http",
    "https": "biomaj.protocols.http",
    "directhttp": "biomaj.protocols.http",
    "directhttps": "biomaj.protocols.http",
    "sftp": "biomaj.protocols.sftp",
    "rsync": "biomaj.protocols.rsync",
    "local": "biomaj.protocols.local",
    "s3": "biomaj.protocols.s3",
}

#: Workflow-level protocols: no client of their own (multi = several direct files, none = no download).
WORKFLOW_PROTOCOLS = ("multi", "none")

DIRECT_PROTOCOLS = ("directftp", "directftps", "directhttp", "directhttps")


def protocol_class(name: str) -> type[Protocol]:
    """The Protocol subclass serving bank protocol ``name``; ConfigError if unknown."""
    module_name = PROTOCOL_MODULES.get(name)
    if module_name is None:
        known = ", ".join(sorted(PROTOCOL_MODULES))
        raise ConfigError(f"protocol={name!r}: no client for it (known: {known}; multi and none are workflow-level)")
    module = importlib.import_module(module_name)
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Protocol) and name in value.names:
            return value
    raise ConfigError(f"protocol={name!r}: module {module_name} defines no Protocol for it")


def open_protocol(config: RemoteConfig) -> Protocol:
    """A client for ``config.protocol`` (not connected yet: connections open on first use)."""
    return protocol_class(config.protocol)(config)
