"""Load BioMAJ 3 properties files exactly as BioMAJ 3 does.

``global.properties`` and ``<bank>.properties`` are read, in that order, into ONE
``configparser.ConfigParser`` (BasicInterpolation, strict): bank values win and ``%(key)s`` may
refer to a key of either file. Only section ``[GENERAL]`` is used; the logging sections of
global.properties are tolerated and ignored. Lookups follow ``BiomajConfig.get``: environment,
``depends``/``db.source`` alias, merged files, built-in defaults, caller default.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path
from typing import Mapping

from biomaj.config.settings import DEFAULTS, find_setting
from biomaj.errors import ConfigError, UnknownBank

SECTION = "GENERAL"
GLOBAL_FILE = "global.properties"
SUFFIX = ".properties"

# Only these keys have '\\' read as '\' (BiomajConfig.get escape=True); release.file is not.
_UNESCAPED = frozenset({"remote.files", "local.files", "http.parse.dir.line", "http.parse.file.line"})


def to_bool(value: object) -> bool:
    """BioMAJ 3 ``Utils.to_bool``: True only for True, 'true' (any case) or '1'."""
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() in ("true", "1")


def env_name(key: str) -> str:
    """The environment variable overriding ``key``: ``ldap.host`` -> ``BIOMAJ_LDAP_HOST``."""
    return "BIOMAJ_" + key.upper().replace(".", "_")


def list_bank_names(conf_dir: str | os.PathLike) -> list[str]:
    """Sorted bank names of ``conf_dir``: the base names of its *.properties but global.properties."""
    folder = Path(conf_dir)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*" + SUFFIX) if p.is_file() and p.name != GLOBAL_FILE)


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Old bank files are often Latin-1; configparser would have used the locale encoding.
        return data.decode("latin-1")


def _syntax_error(path: Path, exc: configparser.Error) -> ConfigError:
    if isinstance(exc, configparser.DuplicateOptionError):
        return ConfigError(
            f"{path}:{exc.lineno}: key '{exc.option}' is set twice in [{exc.section}]; expected each key once"
        )
    if isinstance(exc, configparser.DuplicateSectionError):
        return ConfigError(f"{path}:{exc.lineno}: section [{exc.section}] appears twice; expected it once")
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return ConfigError(
            f"{path}:{exc.lineno}: {exc.line.strip()!r} comes before any section; expected the file to start with [GENERAL]"
        )
    if isinstance(exc, configparser.ParsingError):
        lineno, line = exc.errors[0]
        return ConfigError(f"{path}:{lineno}: cannot parse {line.strip()}; expected 'key=value', a [section] or a # comment")
    return ConfigError(f"{path}: {exc}")


def _parse(path: Path) -> tuple[str, list[str]]:
    """Read and validate one file on its own; return its text and its [GENERAL] keys."""
    text = _read_text(path)
    # A throw-away parser with BioMAJ's settings finds syntax errors per file, and tells which
    # keys each file defines (the merged parser cannot).
    alone = configparser.ConfigParser(interpolation=None)
    try:
        alone.read_string(text, source=str(path))
    except configparser.Error as exc:
        raise _syntax_error(path, exc) from None
    if not alone.has_section(SECTION):
        raise ConfigError(f"{path}: no [{SECTION}] section; expected the keys under a [{SECTION}] line")
    return text, list(alone.options(SECTION))


def _interpolation_error(key: str, path: Path | None, raw: str, exc: configparser.InterpolationError) -> ConfigError:
    where = f"{path}: " if path else ""
    if isinstance(exc, configparser.InterpolationMissingOptionError):
        return ConfigError(
            f"{where}{key}={raw!r} refers to '%({exc.reference})s', which is not defined; "
            "expected a key of [GENERAL] (write a literal % as %%)"
        )
    if isinstance(exc, configparser.InterpolationDepthError):
        return ConfigError(f"{where}{key}={raw!r}: interpolation loops or is too deep; expected %(key)s references that end")
    return ConfigError(f"{where}{key}={raw!r}: bad use of '%'; expected '%(name)s' to refer to a key or '%%' for a literal %")


class _Properties:
    """Lookups over a merged parser, with BioMAJ 3's precedence rules."""

    def __init__(
        self,
        parser: configparser.ConfigParser,
        sources: dict[str, Path],
        *,
        global_path: Path,
        environ: Mapping[str, str] | None,
    ) -> None:
        self._parser = parser
        self._sources = sources
        self.global_path = global_path
        self._environ = environ

    @property
    def environ(self) -> Mapping[str, str]:
        # os.environ is read at lookup time, as BioMAJ 3 does.
        return os.environ if self._environ is None else self._environ

    def source_of(self, key: str) -> Path | None:
        """The file that defines ``key`` (the bank file when both do), or None."""
        return self._sources.get(key.lower())

    def file_value(self, key: str) -> str | None:
        """The merged, interpolated file value of ``key`` (no environment, no default).

        Raises ConfigError for a bad ``%`` interpolation, naming the file and the key.
        """
        k = key.lower()
        if not self._parser.has_option(SECTION, k):
            return None
        try:
            return self._parser.get(SECTION, k)
        except configparser.InterpolationError as exc:
            raw = self._parser.get(SECTION, k, raw=True)
            raise _interpolation_error(k, self.source_of(k), raw, exc) from None

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of ``key`` with BioMAJ 3 precedence (see the module docstring)."""
        k = key.lower()
        from_env = self.environ.get(env_name(k))
        if from_env:
            return from_env
        if k == "depends":
            source = self.get("db.source")
            if source:
                return source
        value = self.file_value(k)
        if value is not None:
            if k == "remote.dir" and not value.endswith("/"):
                value += "/"
            if k in _UNESCAPED:
                value = value.replace("\\\\", "\\")
            return value
        if k in DEFAULTS:
            return DEFAULTS[k]
        return default

    def get_bool(self, key: str, default: bool = False) -> bool:
        """True only for 'true' (any case) or '1'; ``default`` when the key is absent."""
        value = self.get(key)
        return default if value is None else to_bool(value)

    def get_int(self, key: str, default: int | None = None) -> int | None:
        """The value as an int; an empty value means the built-in default, else ``default``."""
        value = self.get(key)
        if value is None or not value.strip():
            builtin = DEFAULTS.get(key.lower())
            return int(builtin) if builtin else default
        try:
            return int(value.strip())
        except ValueError:
            raise ConfigError(f"{self._origin(key)}: {key} must be an integer, got {value!r}") from None

    def get_list(self, key: str) -> list[str]:
        """The value split by the declared separator (commas, or whitespace); empty -> []."""
        value = self.get(key)
        if not value:
            return []
        setting = find_setting(key)
        if setting is not None and setting.kind == "space-list":
            return value.split()
        return [item.strip() for item in value.split(",") if item.strip()]

    def keys(self) -> list[str]:
        """The (lower-case) keys of the merged [GENERAL] section, in file order."""
        return list(self._parser.options(SECTION))

    def as_dict(self) -> dict[str, str]:
        """Every merged [GENERAL] value, interpolated (the process environment of BioMAJ 3)."""
        return {k: self.file_value(k) or "" for k in self.keys()}

    def _origin(self, key: str) -> str:
        name = env_name(key)
        if self.environ.get(name):
            return f"environment variable {name}"
        return str(self.source_of(key) or self.global_path)


def _check_global(global_path: str | os.PathLike) -> Path:
    path = Path(global_path)
    if not path.is_file():
        raise ConfigError(f"{path}: global properties file not found; expected the path of global.properties")
    return path


class GlobalProperties(_Properties):
    """global.properties alone, for service-wide keys (conf.dir, data.dir, db.url ...)."""

    path: Path

    @classmethod
    def load(cls, global_path: str | os.PathLike, environ: Mapping[str, str] | None = None) -> "GlobalProperties":
        """Read ``global_path``; ConfigError when missing or invalid."""
        path = _check_global(global_path)
        text, keys = _parse(path)
        return cls._build(path, text, keys, environ)

    @classmethod
    def _build(cls, path: Path, text: str, keys: list[str], environ: Mapping[str, str] | None) -> "GlobalProperties":
        parser = configparser.ConfigParser()
        parser.read_string(text, source=str(path))
        props = cls(parser, {k: path for k in keys}, global_path=path, environ=environ)
        props.path = path
        return props


class BankProperties(_Properties):
    """A bank: global.properties merged with ``<conf.dir>/<bank>.properties``.

    Attributes: ``name`` (file base name, the bank's identity), ``path``, ``global_path``,
    ``last_modified`` (mtime of the bank file, whole seconds) and ``warnings``, a list of
    ``(key, message)`` for keys that BioMAJ 3 never reads.
    """

    name: str
    path: Path
    last_modified: int
    warnings: list[tuple[str, str]]

    @classmethod
    def load(
        cls,
        global_path: str | os.PathLike,
        bank: str | os.PathLike,
        *,
        conf_dir: str | os.PathLike | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> "BankProperties":
        """Load bank ``bank``: a name (``<conf.dir>/<bank>.properties``) or a path to its file.

        conf.dir is read from the global file unless ``conf_dir`` is given. Raises UnknownBank
        when the bank file does not exist, ConfigError when a file is missing or invalid.
        """
        gpath = _check_global(global_path)
        gtext, gkeys = _parse(gpath)
        if isinstance(bank, os.PathLike):
            path = Path(bank)
            if not path.is_file():
                raise UnknownBank(f"bank '{path.stem}': no file {path}")
        else:
            if not bank or "/" in bank or os.sep in bank or bank.startswith("."):
                raise UnknownBank(f"bank '{bank}': not a bank name; expected the base name of a file of conf.dir")
            if conf_dir is None:
                conf_dir = _global_conf_dir(gpath, gtext, gkeys, environ)
            path = Path(conf_dir) / f"{bank}{SUFFIX}"
            if not path.is_file():
                raise UnknownBank(f"bank '{bank}': no file {path}")
        btext, bkeys = _parse(path)

        parser = configparser.ConfigParser()
        parser.read_string(gtext, source=str(gpath))
        parser.read_string(btext, source=str(path))
        sources = {k: gpath for k in gkeys} | {k: path for k in bkeys}
        props = cls(parser, sources, global_path=gpath, environ=environ)
        props.name = path.stem
        props.path = path
        props.last_modified = int(path.stat().st_mtime)
        props.warnings = [
            (k, f"{k} (in {sources[k].name}) is not read by BioMAJ 3 and is ignored")
            for k in props.keys()
            if k != "db.post.process" and _is_legacy(k)
        ]
        return props


def _is_legacy(key: str) -> bool:
    setting = find_setting(key)
    return bool(setting and setting.legacy)


def _global_conf_dir(gpath: Path, gtext: str, gkeys: list[str], environ: Mapping[str, str] | None) -> str:
    # BioMAJ 3 reads conf.dir from the global parser directly: no environment override.
    conf_dir = GlobalProperties._build(gpath, gtext, gkeys, environ).file_value("conf.dir")
    if not conf_dir:
        raise ConfigError(f"{gpath}: conf.dir is not set; expected the directory holding the <bank>.properties files")
    return conf_dir
