"""`biomaj init ROOT`: a ready-to-run installation with an example bank that updates offline."""

from __future__ import annotations

import gzip
import secrets
from importlib import resources
from pathlib import Path

from biomaj.config.render import render_config_yaml
from biomaj.errors import BiomajError

ROOT_DIRS = ("conf", "lock", "db", "cache", "process", "log", "data")
EXAMPLE_BANK = "example"
EXAMPLE_SOURCE = "example-remote"

_EXAMPLE_FASTA = """\
>seq1 example nucleotide sequence one
ACGTACGTACGTACGTACGTACGTACGTACGTACGTACGTACGTACGTACGTACGTACGTACGT
>seq2 example nucleotide sequence two
TTGACCATGGCATTGACCATGGCATTGACCATGGCATTGACCATGGCATTGACCATGGCATTGA
"""


def _template(name: str) -> str:
    return resources.files("biomaj.config").joinpath("templates", name).read_text(encoding="utf-8")


def init_root(root: Path, *, force: bool = False, web_host: str | None = None, web_port: int | None = None) -> list[Path]:
    """Create ROOT's folders, config.yml, conf/global.properties and the example bank.

    Refuses to overwrite an existing config.yml unless `force`. Returns the files written.
    """
    root = root.expanduser().absolute()
    config = root / "config.yml"
    if config.exists() and not force:
        raise BiomajError(f"{config} already exists; use --force to overwrite it")
    written: list[Path] = []
    try:
        for name in ROOT_DIRS:
            (root / name).mkdir(parents=True, exist_ok=True)
        values = {"web.secret": secrets.token_urlsafe(32)}
        if web_host is not None:
            values["web.host"] = web_host
        if web_port is not None:
            values["web.port"] = web_port
        _write(config, render_config_yaml(values), written)
        # '%' starts an interpolation in properties files: escape it in the path.
        _write(root / "conf" / "global.properties", _template("global.properties").replace("{root}", str(root).replace("%", "%%")), written)
        _write(root / "conf" / f"{EXAMPLE_BANK}.properties", _template("example.properties"), written)
        source = root / EXAMPLE_SOURCE
        source.mkdir(exist_ok=True)
        _write(source / "release.txt", "Release 1\n", written)
        _write(source / "example.fasta", _EXAMPLE_FASTA, written)
        with gzip.open(source / "example2.fasta.gz", "wt", encoding="ascii") as out:
            out.write(_EXAMPLE_FASTA.replace("seq", "gz_seq"))
        written.append(source / "example2.fasta.gz")
    except OSError as exc:
        target = exc.filename or root
        raise BiomajError(f"cannot initialise {root}: {target}: {exc.strerror or exc}") from None
    config.chmod(0o600)  # it holds the cookie secret
    return written


def _write(path: Path, text: str, written: list[Path]) -> None:
    path.write_text(text, encoding="utf-8")
    written.append(path)
