"""Errors shown to users.

Anything raised as a :class:`BiomajError` is printed by the CLI as one line, without a traceback,
and makes the command exit non-zero. Messages name the file, the key and what was expected.
"""

from __future__ import annotations


class BiomajError(Exception):
    """An error caused by input or environment that a user can fix."""

    exit_code = 1


class ConfigError(BiomajError):
    """A configuration file (config.yml, global.properties, a bank file) is missing or invalid."""

    exit_code = 2


class UnknownBank(BiomajError):
    """The named bank has no properties file in conf.dir."""

    exit_code = 2


def with_article(word: str) -> str:
    """``an update``, ``a remove``: the word with its indefinite article, for messages."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"
