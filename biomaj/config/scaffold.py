"""`biomaj init ROOT`: a ready-to-run installation with an example bank that updates offline."""

from __future__ import annotations

import gzip
import secrets
from dataclasses import dataclass, field
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


@dataclass
class Scaffold:
    """What `biomaj init` did: the files it wrote and those it found there and kept."""

    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def init_root(root: Path, *, force: bool = False, web_host: str | None = None, web_port: int | None = None) -> Scaffold:
    """Create ROOT's folders, config.yml, conf/global.properties and the example bank.

    Never overwrites an existing file unless `force`: an existing config.yml is refused (an
    installation is there), any other file (a BioMAJ 3 global.properties copied in, an edited
    example bank) is kept and listed in the result's ``kept``.
    """
    root = root.expanduser().absolute()
    config = root / "config.yml"
    if config.exists() and not force:
        raise BiomajError(f"{config} already exists; use --force to overwrite it")
    done = Scaffold()

    def write(path: Path, text: str | bytes) -> None:
        if not force and (path.exists() or path.is_symlink()):
            done.kept.append(path)
            return
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        done.written.append(path)

    try:
        for name in ROOT_DIRS:
            (root / name).mkdir(parents=True, exist_ok=True)
        values = {"web.secret": secrets.token_urlsafe(32)}
        if web_host is not None:
            values["web.host"] = web_host
        if web_port is not None:
            values["web.port"] = web_port
        write(config, render_config_yaml(values))
        config.chmod(0o600)  # it holds the cookie secret
        # '%' starts an interpolation in properties files: escape it in the path.
        write(root / "conf" / "global.properties", _template("global.properties").replace("{root}", str(root).replace("%", "%%")))
        write(root / "conf" / f"{EXAMPLE_BANK}.properties", _template("example.properties"))
        source = root / EXAMPLE_SOURCE
        source.mkdir(exist_ok=True)
        write(source / "release.txt", "Release 1\n")
        write(source / "example.fasta", _EXAMPLE_FASTA)
        write(source / "example2.fasta.gz", gzip.compress(_EXAMPLE_FASTA.replace("seq", "gz_seq").encode("ascii"), mtime=0))
    except OSError as exc:
        target = exc.filename or root
        raise BiomajError(f"cannot initialise {root}: {target}: {exc.strerror or exc}") from None
    return done
