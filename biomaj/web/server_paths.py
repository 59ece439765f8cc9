"""Server paths as a client may read them: relative to the installation root (``conf/alu.properties``),
or named after the directory setting they lie under (``data.dir/alu/...``) when that directory is
outside the root. No error message, and nothing answered to an anonymous client, names an absolute
path of the server; bank records keep BioMAJ 3's fields (``data_dir``...) for those who may see them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from biomaj.errors import BiomajError

from .errors import CLIENT_TEXT

#: the directory settings of global.properties whose paths may appear in a message
DIR_KEYS = ("conf.dir", "data.dir", "log.dir", "lock.dir", "cache.dir", "process.dir")


def server_dirs(config: Any) -> list[tuple[str, str]]:
    """``[(absolute directory, how a client sees it)]``, longest first: the root (shown as nothing:
    paths under it become relative), then the DIR_KEYS directories that lie outside it."""
    root = getattr(config, "root", None)
    if root is None:
        return []
    root = Path(root)
    shown: dict[str, str] = {}
    for form in {str(root), str(root.resolve())}:
        shown[form.rstrip("/")] = ""
    for key, value in _dir_settings(config).items():
        folder = Path(value)
        if not folder.is_absolute() or folder.resolve().is_relative_to(root.resolve()):
            continue
        for form in {str(folder), str(folder.resolve())}:
            shown.setdefault(form.rstrip("/"), key)
    return sorted(((path, name) for path, name in shown.items() if path), key=lambda pair: -len(pair[0]))


def _dir_settings(config: Any) -> dict[str, str]:
    from biomaj.config.properties import GlobalProperties

    try:
        props = GlobalProperties.load(config.global_properties)
        return {key: value for key in DIR_KEYS if (value := props.get(key))}
    except (BiomajError, OSError, ValueError):  # no readable global.properties: the root only
        return {}


def hide_paths(text: str, dirs: list[tuple[str, str]]) -> str:
    """``text`` with every server directory of ``dirs`` replaced by how a client sees it."""
    for absolute, name in dirs:  # a directory, not the start of a longer name (root2/)
        text = re.sub(re.escape(absolute) + r"(/|(?![\w.+\-]))",
                      lambda found, name=name: (f"{name}/" if name else "") if found.group(1) else (name or "."), text)
    return text


def client_text(config: Any) -> Callable[[str], str]:
    """``text -> text`` with the server paths hidden (:func:`hide_paths`). The directories are read
    again only when global.properties changes: every answer to an anonymous request goes through it."""
    cached: dict[str, Any] = {"stamp": object(), "dirs": []}

    def rewrite(text: str) -> str:
        try:
            stamp = os.stat(config.global_properties).st_mtime_ns
        except (AttributeError, OSError, TypeError):
            stamp = None
        if stamp != cached["stamp"]:
            cached["stamp"], cached["dirs"] = stamp, server_dirs(config)
        return hide_paths(text, cached["dirs"])

    return rewrite


def shown_path(path: str | Path, config: Any) -> str:
    """One server path as a client sees it (``conf/alu.properties``)."""
    return hide_paths(str(path), server_dirs(config))


#: the answers whose text is rewritten for anonymous requests (files of /db are streamed as they are)
TEXT_TYPES = ("application/json", "text/plain", "text/html")


@web.middleware
async def anonymous_answers_without_paths(request: web.Request, handler) -> web.StreamResponse:
    """Rewrite every server path of an answer to an anonymous request as a client sees it: bank
    records, sessions, tables and pages of public banks included (a user who may see the bank reads
    BioMAJ 3's fields as they are). Runs inside ``identify``, which tells who asks."""
    from .auth import identity_of

    response = await handler(request)
    if (identity_of(request) is None and type(response) is web.Response and response.body is not None
            and response.content_type in TEXT_TYPES):
        text = response.text
        shown = request.app[CLIENT_TEXT](text)
        if shown != text:
            response.text = shown
    return response
