"""The early EPSV (``options.ftp_early_epsv``): at the end of a file's data the client asks the
passive port of the next transfer before the file's 226 has come, one round trip less per file.

Against tests/servers/scripted_ftp.py, which logs when each command arrived and each reply went.
The 226 of every RETR is held ``HOLD`` seconds after the data connection closed (vsftpd's
lingering close, a long link), so an EPSV sent early is seen arriving before that 226 went.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from biomaj.protocols import open_protocol
from biomaj.protocols.base import RemoteConfig
from tests.servers.scripted_ftp import ScriptedFtp

HOLD = 0.2
FILES = {"a.dat": b"a" * 70_000, "b.dat": b"b" * 10, "c.dat": b"c" * 3, "sub/d.dat": b"d" * 5000}


async def _fetch_all(config: RemoteConfig, names: list[str]) -> dict[str, bytes]:
    got = {}
    async with open_protocol(config) as client:
        for name in names:
            async with client.open(name, size=len(FILES[name])) as stream:
                got[name] = b"".join([block async for block in stream])
    return got


def _early_epsvs(server: ScriptedFtp) -> int:
    """EPSVs that arrived while a RETR's 226 was still to be sent."""
    early, waiting = 0, False
    for _, what in server.events:
        if what == "> RETR":
            waiting = True
        elif what == "< 226":
            waiting = False
        elif what == "> EPSV" and waiting:
            early += 1
    return early


@pytest.mark.parametrize("eager", [False, True], ids=["sequential", "answers-during-transfer"])
async def test_the_next_epsv_goes_before_the_226_and_its_port_serves_the_next_file(eager):
    server = ScriptedFtp(FILES, eager=eager, hold=HOLD)
    config = await server.start()
    try:
        names = ["a.dat", "b.dat", "c.dat"]
        assert await _fetch_all(config, names) == {name: FILES[name] for name in names}
    finally:
        await server.close()
    # one EPSV for the first file, then each file's end asks the next one's port (the last one unused)
    assert server.commands().count("EPSV") == len(names) + 1
    assert _early_epsvs(server) == len(names)


async def test_off_waits_for_the_226():
    server = ScriptedFtp(FILES, hold=HOLD)
    config = await server.start()
    config = replace(config, options={"ftp_early_epsv": "false"})
    try:
        assert await _fetch_all(config, ["a.dat", "b.dat"]) == {"a.dat": FILES["a.dat"], "b.dat": FILES["b.dat"]}
    finally:
        await server.close()
    assert server.commands().count("EPSV") == 2 and _early_epsvs(server) == 0


async def test_a_port_asked_early_is_not_used_after_another_command():
    """A CWD between the early EPSV and the next RETR: the port is dropped and asked again (some
    servers close a passive listener on any other command)."""
    server = ScriptedFtp(FILES, hold=HOLD)
    config = await server.start()
    try:
        got = await _fetch_all(config, ["a.dat", "sub/d.dat", "c.dat"])
    finally:
        await server.close()
    assert got == {name: FILES[name] for name in ("a.dat", "sub/d.dat", "c.dat")}
    commands = [c for c in server.commands() if c in ("EPSV", "RETR", "CWD")]
    # a.dat; the early EPSV; CWD /sub, a new EPSV, RETR d; early EPSV; CWD /, new EPSV, RETR c; early EPSV
    assert commands[commands.index("RETR") + 1:] == ["EPSV", "CWD", "EPSV", "RETR", "EPSV", "CWD", "EPSV", "RETR", "EPSV"]
