"""No server for `local`: the tree is read in place (faults cannot be injected, see GAPS)."""

from __future__ import annotations

from pathlib import Path

from biomaj.protocols.base import RemoteConfig
from tests.servers.faults import Faults, RunningServer


async def start(tree: Path, faults: Faults, *, protocol: str = "local") -> RunningServer:
    async def stop() -> None:
        pass

    return RunningServer(RemoteConfig(protocol="local", root=str(tree)), faults, stop)
