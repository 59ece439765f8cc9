"""Retry policies from BioMAJ's tenacity strings, parsed safely (no eval).

``stop_condition`` accepts ``stop_after_attempt(N)``, ``stop_after_delay(S)``, ``stop_never`` and
combinations with ``|`` (either) and ``&`` (both), plus ``stop_any(...)``/``stop_all(...)``.
``wait_policy`` accepts ``wait_fixed(S)``, ``wait_none``, ``wait_random(min, max)``,
``wait_incrementing(start, increment, max)``, ``wait_exponential(multiplier, min, max, exp_base)``,
``wait_random_exponential(multiplier, max)``, ``wait_combine(...)``, ``wait_chain(...)`` and ``+``.
Arguments may be positional or keyword, as in tenacity.
"""

from __future__ import annotations

import ast
import functools
import random
from dataclasses import dataclass
from typing import Callable

from biomaj.errors import ConfigError

#: (attempt number starting at 1, seconds since the first attempt) -> stop now?
StopRule = Callable[[int, float], bool]
#: attempt number starting at 1 -> seconds to wait before the next attempt
WaitRule = Callable[[int], float]

DEFAULT_STOP = "stop_after_attempt(3)"
DEFAULT_WAIT = "wait_fixed(3)"


def _args(call: ast.Call, names: tuple[str, ...], source: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for name, node in zip(names, call.args):
        values[name] = _number(node, source)
    if len(call.args) > len(names):
        raise ConfigError(f"{source}: too many arguments to {call.func.id}")  # type: ignore[attr-defined]
    for keyword in call.keywords:
        if keyword.arg not in names:
            raise ConfigError(f"{source}: {call.func.id}() has no argument {keyword.arg!r}")  # type: ignore[attr-defined]
        values[keyword.arg] = _number(keyword.value, source)
    return values


def _number(node: ast.AST, source: str) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_number(node.operand, source)
    raise ConfigError(f"{source}: expected a number, got {ast.unparse(node)!r}")


def _parse(text: str, key: str) -> ast.AST:
    try:
        return ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ConfigError(f"{key}={text!r}: not a valid expression") from None


def parse_stop(text: str, key: str = "stop_condition") -> StopRule:
    """A stop rule from a tenacity stop expression."""
    source = f"{key}={text!r}"

    def build(node: ast.AST) -> StopRule:
        if isinstance(node, ast.Name) and node.id == "stop_never":
            return lambda attempt, elapsed: False
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitOr, ast.BitAnd)):
            left, right = build(node.left), build(node.right)
            if isinstance(node.op, ast.BitOr):
                return lambda a, e: left(a, e) or right(a, e)
            return lambda a, e: left(a, e) and right(a, e)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            if name == "stop_after_attempt":
                n = _args(node, ("max_attempt_number",), source).get("max_attempt_number", 1)
                return lambda attempt, elapsed: attempt >= n
            if name == "stop_after_delay":
                d = _args(node, ("max_delay",), source).get("max_delay", 0)
                return lambda attempt, elapsed: elapsed >= d
            if name in ("stop_any", "stop_all"):
                rules = [build(arg) for arg in node.args]
                combine = any if name == "stop_any" else all
                return lambda a, e: combine(rule(a, e) for rule in rules)
        raise ConfigError(f"{source}: unsupported stop condition {ast.unparse(node)!r} (use stop_after_attempt(N), stop_after_delay(S), stop_never, | and &)")

    return build(_parse(text, key))


def parse_wait(text: str, key: str = "wait_policy") -> WaitRule:
    """A wait rule from a tenacity wait expression."""
    source = f"{key}={text!r}"

    def build(node: ast.AST) -> WaitRule:
        if isinstance(node, ast.Name) and node.id == "wait_none":
            return lambda attempt: 0.0
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = build(node.left), build(node.right)
            return lambda attempt: left(attempt) + right(attempt)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            if name == "wait_fixed":
                s = _args(node, ("wait",), source).get("wait", 0)
                return lambda attempt: s
            if name == "wait_none":
                return lambda attempt: 0.0
            if name == "wait_random":
                a = _args(node, ("min", "max"), source)
                low, high = a.get("min", 0), a.get("max", 1)
                return lambda attempt: random.uniform(low, high)
            if name == "wait_incrementing":
                a = _args(node, ("start", "increment", "max"), source)
                start, inc, top = a.get("start", 0), a.get("increment", 100), a.get("max", float("inf"))
                return lambda attempt: max(0.0, min(top, start + inc * (attempt - 1)))
            if name == "wait_exponential":
                a = _args(node, ("multiplier", "max", "exp_base", "min"), source)
                mult, top, base, low = a.get("multiplier", 1), a.get("max", float("inf")), a.get("exp_base", 2), a.get("min", 0)
                return lambda attempt: max(low, min(top, mult * base ** (attempt - 1)))
            if name == "wait_random_exponential":
                a = _args(node, ("multiplier", "max", "exp_base", "min"), source)
                mult, top, base, low = a.get("multiplier", 1), a.get("max", float("inf")), a.get("exp_base", 2), a.get("min", 0)
                return lambda attempt: random.uniform(low, max(low, min(top, mult * base ** (attempt - 1))))
            if name == "wait_combine":
                rules = [build(arg) for arg in node.args]
                return lambda attempt: sum(rule(attempt) for rule in rules)
            if name == "wait_chain":
                rules = [build(arg) for arg in node.args]
                return lambda attempt: rules[min(attempt, len(rules)) - 1](attempt) if rules else 0.0
        raise ConfigError(f"{source}: unsupported wait policy {ast.unparse(node)!r} (use wait_fixed(S), wait_exponential(...), wait_random(a, b), wait_none, +)")

    return build(_parse(text, key))


@dataclass(frozen=True)
class RetryPolicy:
    """When to give up on a file and how long to wait between attempts."""

    stop: StopRule
    wait: WaitRule
    description: str = f"{DEFAULT_STOP}, {DEFAULT_WAIT}"

    @classmethod
    def parse(cls, stop_condition: str | None = None, wait_policy: str | None = None) -> RetryPolicy:
        return _parsed(cls, stop_condition or DEFAULT_STOP, wait_policy or DEFAULT_WAIT)


@functools.lru_cache(maxsize=256)
def _parsed(cls: type[RetryPolicy], stop_text: str, wait_text: str) -> RetryPolicy:
    # every file of a bank carries the same two strings: parse them once (policies are immutable)
    return cls(parse_stop(stop_text), parse_wait(wait_text), f"{stop_text}, {wait_text}")
