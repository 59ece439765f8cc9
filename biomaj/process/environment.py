"""The environment and command line of a process: BioMAJ 3's contract (reference 4.3).

Every bank property (global + bank file, lower-case dotted names) and the special variables
(``dbname``, ``datadir``, ``dirversion``, ``offlinedir``, ``localrelease``, ``remoterelease``,
``removedrelease``, ``logdir``, ``logfile``, ``processdir``, ``<dep>source``, ``PP_*`` ...) on top
of the node's environment; ``${var}`` in ``.args`` replaced by their values. Secrets
(credentials, passwords, keys) are never exported, neither from the properties nor from the
node's own environment.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Mapping

from biomaj.redaction import is_secret  # what must not reach a process: its home is the ground layer


#: Variables whose values come from remote data (release strings): quoted before a shell sees them.
FROM_REMOTE = ("localrelease", "remoterelease", "removedrelease")


def build_environment(
    properties: Mapping[str, str],
    *,
    bank: str,
    data_dir: str,
    dir_version: str,
    offline_dir: str,
    process_dir: str,
    release_dir_name: str | None,
    remote_release: str | None,
    release: str | None,
    log_dir: str,
    log_file: str,
    dependencies: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The process environment, as strings, secrets left out."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not is_secret(k, v)}
    env.update({k: v or "" for k, v in properties.items() if not is_secret(k, v or "")})
    path = env.get("PATH") or "/usr/local/bin:/usr/sbin:/usr/bin:/bin"
    env.update({
        "dbname": bank,
        "datadir": data_dir,
        "data.dir": data_dir,
        "dirversion": dir_version,
        "offlinedir": offline_dir,
        "processdir": process_dir,
        "PATH_PROCESS_BIOMAJ": process_dir,
        "PATH": f"{path}:{process_dir}",
        "logdir": log_dir,
        "logfile": log_file,
        "noextract": properties.get("no.extract") or "",
        "PP_DEPENDENCE": "#",
        "PP_DEPENDENCE_VOLATILE": "#",
        "PP_WARNING": "#",
        "localrelease": release_dir_name or "",
    })
    if remote_release is not None:
        env["remoterelease"] = remote_release
    if release is not None:
        env["removedrelease"] = release
    for key in ("mail.admin", "mail.smtp.host"):
        if properties.get(key):
            env["mailadmin" if key == "mail.admin" else "mailsmtp"] = properties[key]
    for dep, directory in (dependencies or {}).items():
        env[f"{dep}source"] = directory
    return env


def substitute(args: str, env: Mapping[str, str], *, shell: bool) -> str:
    """``${var}`` replaced by the environment's value (unknown names stay as they are).

    For a command run through the shell, values that come from remote data (release strings)
    are quoted, so that nothing a remote server sends is interpreted by the shell.
    """

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in env:
            return match.group(0)
        text = env[name]
        return shlex.quote(text) if shell and name in FROM_REMOTE else text

    return re.sub(r"\$\{([^}]+)\}", value, args)


def command_args(args: str, env: Mapping[str, str], *, shell: bool) -> list[str]:
    """The argument list: substituted, then split on whitespace (as BioMAJ 3 does)."""
    return substitute(args, env, shell=shell).split()

