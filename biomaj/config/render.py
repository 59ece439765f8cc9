"""Text rendered from the declared config.yml settings: the commented example and the docs page.

Both come from :func:`biomaj.config.service.iter_settings`, so a key cannot be added without its
help reaching ``config.example.yml`` and ``docs/configuration.md`` (tests compare the files).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from biomaj.config.service import ENV_OVERRIDES, ServiceConfig, iter_settings

HEADER = """\
# biomaj service configuration (config.yml).
# Every key is optional: the value shown is the default. Paths are relative to `root`.
# Bank definitions stay in BioMAJ 3 format: conf/global.properties and conf/<bank>.properties.
# Environment variables override some keys (BioMAJ 3 names): see docs/configuration.md.
"""


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)  # JSON flow style is valid YAML
    return json.dumps(str(value)) if value == "" or any(c in str(value) for c in ":#{}[],&*?|<>=!%@`'\"") else str(value)


def _section_doc(path: list[str]) -> str:
    model: type = ServiceConfig
    field = None
    for name in path:
        field = model.model_fields[name]
        model = field.annotation
    return (field.description if field is not None else "") or ""


def render_config_yaml(values: Mapping[str, Any] | None = None) -> str:
    """config.yml with a comment above every key (sections may nest: ``auth.ldap``); `values`
    replaces defaults by dotted key."""
    values = dict(values or {})
    lines = [HEADER]
    current: list[str] = []
    for key, default, help_text in iter_settings():
        *section, leaf = key.split(".")
        if section != current:
            shared = 0
            while shared < min(len(section), len(current)) and section[shared] == current[shared]:
                shared += 1
            for depth in range(shared, len(section)):
                indent = "  " * depth
                if depth == 0:
                    lines.append("")
                lines.append(f"{indent}# {_section_doc(section[:depth + 1])}")
                lines.append(f"{indent}{section[depth]}:")
            current = section
        indent = "  " * len(section)
        lines.append(f"{indent}# {help_text}")
        lines.append(f"{indent}{leaf}: {_yaml_scalar(values.pop(key, default))}")
    if values:
        raise KeyError(f"unknown config keys: {', '.join(values)}")
    return "\n".join(lines) + "\n"


def render_config_markdown() -> str:
    """docs/configuration.md: every config.yml key and every environment override."""
    out = [
        "# Configuration reference",
        "",
        "biomaj reads two kinds of configuration:",
        "",
        "- `config.yml`: the service (web port, store, bus, state, limits, logging). Below.",
        "- BioMAJ 3 properties files, unchanged: `conf/global.properties` and `conf/<bank>.properties`.",
        "  Every key is listed in [bank-properties.md](bank-properties.md).",
        "",
        "The configuration file is chosen by `-c/--config PATH`, else `$BIOMAJ_CONFIG`, else `./config.yml`.",
        "Unknown keys are errors (a typo must not be silently ignored); the sections of a BioMAJ 3",
        "micro-service `config.yml` that biomaj does not need (`consul`, `zipkin`, `tls`, `log_config`, `docker`,",
        "`cron`, `prometheus`, `biomaj`) are accepted with a warning.",
        "",
        "This page is generated from the declared settings (`python -m biomaj.config.render`); a test fails",
        "when it is out of date.",
        "",
        "## config.yml keys",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
    ]
    for key, default, help_text in iter_settings():
        out.append(f"| `{key}` | `{_yaml_scalar(default)}` | {help_text} |")
    out += [
        "",
        "## Environment overrides",
        "",
        "A variable counts only when it is set and not empty (as in BioMAJ 3).",
        "",
        "| variable | key |",
        "|---|---|",
        "| `BIOMAJ_CONFIG` | path of config.yml |",
    ]
    for var, (section, key, _kind) in ENV_OVERRIDES.items():
        out.append(f"| `{var}` | `{section}.{key}` |")
    out += [
        "",
        "When `bus.url` is empty and `rabbitmq.host` is set, the bus is RabbitMQ at that host; when `state.url` is",
        "empty and `redis.host` is set, the state is in Redis; when `storage.url` is empty and `mongo.url` is set,",
        "the store is MongoDB. Otherwise everything is embedded: in-process bus and state, SQLite store.",
        "",
        "Bank and global properties are overridden by `BIOMAJ_<KEY>` variables, the key upper-cased with dots",
        "replaced by underscores (`BIOMAJ_DATA_DIR` for `data.dir`), exactly as BioMAJ 3 does.",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":  # python -m biomaj.config.render [example]
    import sys

    print(render_config_yaml() if sys.argv[1:] == ["example"] else render_config_markdown(), end="")
