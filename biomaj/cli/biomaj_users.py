"""`biomaj-users`: BioMAJ 3's user tool (biomaj-user's ``biomaj-users.py``), with its options and its
output, onto the commands of `biomaj users` (:mod:`biomaj.cli.users`) and the same store.

=========================================  ===========================================================
``biomaj-users -A ACTION -U NAME ...``      ``biomaj users ...``
=========================================  ===========================================================
``add``, ``create`` ``[-E E] [-P P]``       ``create NAME [--email E] [--password-stdin]``
``delete``, ``remove``, ``rm``              ``delete NAME``
``renew``                                   ``apikey NAME --renew`` (the older keys are revoked)
``update`` ``[-E E] [-P P]``                ``email NAME E``, ``passwd NAME``
``view``                                    ``list`` (one user)
=========================================  ===========================================================

Differences, all on the side of secrets: a password given with ``-P`` works but warns (any user
of the machine reads it in ``ps``): ``--password-stdin`` or ``BIOMAJ_USER_PASSWORD`` do without it;
a given password is never printed back (a generated one is, once, as the API key); ``view`` shows
the ids of the API keys, never a key (only hashes are stored).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import string
import sys
from typing import Any, Sequence

ACTIONS = ("add", "create", "delete", "remove", "rm", "renew", "update", "view")
PASSWORD_ENV = "BIOMAJ_USER_PASSWORD"  # BioMAJ 3's default password for `create`
GENERATED_LENGTH = 16
PASSWORD_WARNING = ("warning: a password on the command line is visible to every user of this machine (ps, "
                    f"/proc) and stays in the shell's history: use --password-stdin or {PASSWORD_ENV}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="biomaj-users", description="BioMAJ user: manage users (BioMAJ 3's biomaj-users.py, onto `biomaj users`).",
        epilog="Prints the API key of a created or renewed user once: only its hash is stored.")
    p.add_argument("-A", "--action", required=True, metavar="ACTION",
                   help=f"one of {', '.join(ACTIONS)}; renew: a new API key, the older ones revoked")
    p.add_argument("-U", "--user", required=True, metavar="<username>", help="user name to manage")
    p.add_argument("-E", "--email", help="user email (create, update)")
    p.add_argument("-P", "--password", metavar="<password>",
                   help=f"password (create, update); visible in ps: prefer --password-stdin or {PASSWORD_ENV}. "
                        "create without any: one is generated and printed once")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("-C", "--config", metavar="</path/to/config.yml>",
                   help="config.yml (default: $BIOMAJ_CONFIG, else ./config.yml)")
    p.add_argument("-J", "--json", action="store_true", help="output JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns (and exits with) the exit status."""
    code = run(sys.argv[1:] if argv is None else list(argv))
    if argv is None:
        sys.exit(code)
    return code


def run(argv: list[str]) -> int:
    import click

    from biomaj.cli.context import CliContext
    from biomaj.errors import BiomajError

    arguments = parser()
    options = arguments.parse_args(argv)
    if options.password_stdin and options.password is not None:
        arguments.error("--password and --password-stdin: give one of them")  # exits 2
    if options.action not in ACTIONS:
        print(f"Unsupported action '{options.action}'")
        return 1
    obj = CliContext(config_option=options.config, json_output=options.json, console_level="WARNING")
    try:
        password = _password(options)
        return ACTION_FUNCTIONS[options.action](obj, options, password)
    except BiomajError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - as `biomaj`: one line, the traceback on demand
        if os.environ.get("BIOMAJ_DEBUG"):
            raise
        click.echo(f"error: unexpected {type(exc).__name__}: {exc} (set BIOMAJ_DEBUG=1 for the traceback)", err=True)
        return 1


def _password(options: argparse.Namespace) -> str | None:
    """The password given (--password-stdin, -P, with a warning), or None."""
    from biomaj.cli.users import _read_password

    if options.password_stdin:
        return _read_password(True)
    if options.password is not None:
        print(PASSWORD_WARNING, file=sys.stderr)
        return options.password
    return None


def _generated() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(GENERATED_LENGTH))


def _table(headers: Sequence[str], row: Sequence[Any]) -> str:
    from biomaj.reports import Table, render

    return render(Table(tuple(headers), [tuple(row)]))


def _exists(obj: Any, name: str) -> dict | None:
    from biomaj.auth.users import UnknownUser
    from biomaj.cli.users import _run

    async def lookup(users: Any) -> dict | None:
        try:
            return await users.get(name)
        except UnknownUser:
            return None

    return _run(obj, lookup)


def _missing(action: str, name: str) -> int:
    print(f"[{action}] User {name} does not exist")
    return 1


def create(obj: Any, options: argparse.Namespace, password: str | None) -> int:
    """``biomaj users create``: prints the user, its password when generated, and its API key."""
    from biomaj.cli.users import _run

    name = options.user
    if _exists(obj, name) is not None:
        print(f"User {name} already exist")
        return 1
    generated = None
    if password is None:
        password = os.environ.get(PASSWORD_ENV) or None
    if password is None:
        password = generated = _generated()
    user, key = _run(obj, lambda u: u.create(name, email=options.email, password=password))
    if options.json:  # BioMAJ 3's document (scripts read .apikey), never a hash
        print(json.dumps({**user, "apikey": key, **({"password": generated} if generated else {})}))
        return 0
    print("User successfully created")
    print(_table(["User", "Email", "Password", "API Key"],
                 [user["id"], user.get("email") or "", generated or "(as given)", key]))
    if generated:
        print("The password and the API key are shown once: keep them safe.")
    return 0


def delete(obj: Any, options: argparse.Namespace, _password: str | None) -> int:
    """``biomaj users delete``."""
    from biomaj.cli.users import _run

    if _exists(obj, options.user) is None:
        return _missing(options.action, options.user)
    _run(obj, lambda u: u.delete(options.user))
    print(json.dumps({"deleted": options.user}) if options.json else f"User {options.user} successfully deleted")
    return 0


def renew(obj: Any, options: argparse.Namespace, _password: str | None) -> int:
    """``biomaj users apikey --renew``: a new key, the older ones revoked."""
    from biomaj.cli.users import _run

    if _exists(obj, options.user) is None:
        return _missing(options.action, options.user)
    key_id, key, revoked = _run(obj, lambda u: u.renew_api_key(options.user, "renewed"))
    if options.json:
        print(json.dumps({"id": options.user, "apikey": key, "key_id": key_id, "revoked": revoked}))
        return 0
    print(f"[{options.action}] User {options.user}, successfully renewed API key: '{key}'")
    if revoked:
        print(f"older API keys revoked: {' '.join(revoked)}")
    return 0


def update(obj: Any, options: argparse.Namespace, password: str | None) -> int:
    """``biomaj users passwd`` and ``biomaj users email``."""
    from biomaj.cli.users import _run

    if _exists(obj, options.user) is None:
        return _missing(options.action, options.user)
    if password is None and not options.email:
        print(f"[{options.action}] User {options.user} not updated")
        return 0

    async def change(users: Any) -> None:
        if password is not None:
            await users.set_password(options.user, password)
        if options.email:
            await users.set_email(options.user, options.email)

    _run(obj, change)
    print(f"User {options.user} successfully updated")
    return 0


def view(obj: Any, options: argparse.Namespace, _password: str | None) -> int:
    """``biomaj users list``, one user: the ids of its API keys, never a key."""
    user = _exists(obj, options.user)
    if user is None:
        return _missing(options.action, options.user)
    if options.json:
        print(json.dumps(user))
        return 0
    print(_table(["User", "Email", "API keys (ids)", "LDAP", "Admin", "Password"],
                 [user["id"], user.get("email") or "", " ".join(k["id"] for k in user["api_keys"]),
                  bool(user.get("is_ldap")), bool(user["is_admin"]), "set" if user["has_password"] else "none"]))
    return 0


ACTION_FUNCTIONS = {"add": create, "create": create, "delete": delete, "remove": delete, "rm": delete,
                    "renew": renew, "update": update, "view": view}
