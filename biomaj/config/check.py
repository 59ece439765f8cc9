"""Validate a bank configuration: every rule of BioMAJ 3's ``BiomajConfig.check``, and more.

``check_bank`` returns a list of :class:`Problem`; the bank is valid (BioMAJ 3's ``check()``
returns True) when there is no error, see :func:`verdict`. Beyond BioMAJ 3, it also reports
bad ``%`` interpolations, values that are not integers, regexps that do not compile, enum values
out of range (warning), keys that BioMAJ 3 never reads (warning) and a top-level
``db.post.process``, which BioMAJ 3 ignores (warning).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Literal

from biomaj.buckets import BANK_KEYS, bank_access, endpoint_url, split_bucket_path
from biomaj.config.properties import BankProperties, to_bool
from biomaj.config.rates import Allowance, Schedule, parse_size
from biomaj.config.settings import PROPERTIES, find_setting
from biomaj.errors import ConfigError

REQUIRED_DIRS = ("data.dir", "conf.dir", "log.dir", "process.dir", "lock.dir", "cache.dir")
RELATIVE_DIRS = ("offline.dir.name", "dir.version")
NO_REMOTE = ("multi", "none")  # protocols without server / remote.dir / remote.files
IRODS_KEYS = ("irods.user", "irods.password", "irods.port", "irods.protocol")
# In remote.files and local.files, `**/*` means every file, recursively: it is not a regexp.
MATCH_EVERYTHING = "**/*"


@dataclass(frozen=True)
class Problem:
    """One finding: an ``error`` makes the bank invalid, a ``warning`` does not."""

    level: Literal["error", "warning"]
    key: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


def verdict(problems: Iterable[Problem]) -> bool:
    """True when no problem is an error (what BioMAJ 3's ``check()`` would return)."""
    return not any(p.level == "error" for p in problems)


def refuse_invalid(props: BankProperties) -> None:
    """ConfigError listing every error when the bank file would fail BioMAJ 3's check or uses
    what biomaj does not support: a job on such a bank is refused before anything runs."""
    problems = check_bank(props) + check_support(props)
    if not verdict(problems):
        errors = "; ".join(str(p) for p in problems if p.level == "error")
        raise ConfigError(f"bank {props.name}: wrong configuration, update refused: {errors}")


class _Checker:
    """Collects problems; keys whose value cannot be read are reported once, then skipped."""

    def __init__(self, props: BankProperties) -> None:
        self.props = props
        self.problems: list[Problem] = []
        self.unreadable: set[str] = set()

    def get(self, key: str) -> str | None:
        if key.lower() in self.unreadable:
            return None
        try:
            return self.props.get(key)
        except ConfigError as exc:
            self.unreadable.add(key.lower())
            self.error(key, str(exc))
            return None

    def flag(self, key: str) -> bool:
        return to_bool(self.get(key))

    def items(self, key: str) -> list[str]:
        if self.get(key) is None:
            return []
        return self.props.get_list(key)

    def error(self, key: str | None, message: str) -> None:
        # The same failure can be met twice, e.g. a bad db.source is also read through depends.
        if all(p.message != message for p in self.problems):
            self.problems.append(Problem("error", key, message))

    def warn(self, key: str | None, message: str) -> None:
        self.problems.append(Problem("warning", key, message))

    def missing(self, key: str, message: str) -> None:
        if key.lower() not in self.unreadable:
            self.error(key, message)


def _help(key: str) -> str:
    """The declared help of ``key`` as the end of a sentence, without its "Required:" prefix."""
    text = find_setting(key).help.rstrip(".")
    if text.startswith("Required"):
        text = text.split(": ", 1)[1]
    return text[0].lower() + text[1:]


def _check_interpolation(c: _Checker) -> None:
    for key in c.props.keys():
        c.get(key)


def _check_required_dirs(c: _Checker) -> None:
    for key in REQUIRED_DIRS:
        if not c.get(key):
            c.missing(key, f"{key} is not set: {_help(key)}")


def _check_ldap(c: _Checker) -> None:
    # BioMAJ 3 tests the raw string (so use_ldap=0 would count as set); the reference means "true".
    if c.flag("use_ldap"):
        for key in ("ldap.host", "ldap.port", "ldap.dn"):
            if not c.get(key):
                c.missing(key, f"{key} is required when use_ldap is true")


def _check_elastic(c: _Checker) -> None:
    if c.flag("use_elastic"):
        for key in ("elastic_nodes", "elastic_index"):
            if not c.get(key):
                c.missing(key, f"{key} is required when use_elastic is true")


def _check_mail(c: _Checker) -> None:
    if not c.get("mail.smtp.host"):
        c.warn("mail.smtp.host", "mail.smtp.host is not set: no mail will be sent")
    elif not c.get("mail.from"):
        c.missing("mail.from", "mail.from is required when mail.smtp.host is set: the sender address")


def _check_relative_dirs(c: _Checker) -> None:
    for key in RELATIVE_DIRS:
        value = c.get(key)
        if not value:
            c.missing(key, f"{key} is not set: {_help(key)}")
        elif value.startswith("/"):
            c.error(key, f"{key} must be a relative path (under data.dir), got {value!r}")


def _check_remote(c: _Checker) -> None:
    protocol = c.get("protocol")
    allowed = find_setting("protocol").enum_values
    if not protocol:
        c.missing("protocol", f"protocol is not set: expected one of {', '.join(allowed)}")
        return
    if protocol not in allowed:
        c.error("protocol", f"protocol must be one of {', '.join(allowed)}, got {protocol!r}")
    if protocol not in NO_REMOTE:
        if protocol != "local" and not c.get("server"):
            c.missing("server", f"server is required for protocol {protocol}: the remote host name")
        if not c.get("remote.dir"):
            c.missing("remote.dir", f"remote.dir is required for protocol {protocol}: the remote base directory")
        if not protocol.startswith("direct") and not c.get("remote.files") and not c.get("remote.list"):
            c.missing(
                "remote.files",
                f"remote.files (or remote.list) is required for protocol {protocol}: "
                "whitespace-separated regexps of the remote files",
            )
    if c.get("remote.checksums") and (protocol in NO_REMOTE or protocol.startswith("direct")):
        c.error("remote.checksums", f"remote.checksums needs a listed remote, not protocol {protocol}: the manifests are "
                "found in the listing of the wanted files' folders (use protocol ftp, http ... with remote.files)")
    if "irods" in protocol:
        for key in IRODS_KEYS:
            if not c.get(key):
                c.missing(key, f"{key} is required for protocol {protocol}")


def _check_s3(c: _Checker) -> None:
    """protocol=s3: the endpoint, the bucket and the s3.* keys, read as the download reads them."""
    if c.get("protocol") != "s3":
        return
    server, path = c.get("server"), c.get("remote.dir")
    for key, value, check in (("server", server, endpoint_url), ("remote.dir", path, split_bucket_path)):
        if value:
            try:
                check(value, key)
            except ConfigError as exc:
                c.error(key, str(exc))
                return
    credentials = c.get("server.credentials")
    if credentials and ":" not in credentials:
        c.error("server.credentials", "server.credentials: expected ACCESS_KEY:SECRET for protocol s3")
    if server and path:
        try:
            bank_access(server, path, {key: c.get(key) for key in BANK_KEYS})
        except ConfigError as exc:
            c.error(_key_of(exc), str(exc))


def _key_of(exc: ConfigError) -> str:
    """The key a bucket setting's error names first (``s3.region='x': ...`` -> ``s3.region``)."""
    match = re.match(r"[\w.]+", str(exc))
    return match.group(0) if match else ""


def _check_unsupported(c: _Checker) -> None:
    """BioMAJ 3 features biomaj does not have: refused when the bank relies on them to get its
    release or its files (an update would be wrong), a warning otherwise."""
    if c.get("protocol") == "irods":
        c.error("protocol", "protocol irods is not supported by biomaj (no iRODS client)")
    for key in ("release.plugin", "remote.plugin"):
        if c.get(key):
            c.error(key, f"{key}: plugins are not supported by biomaj; use release.file/release.regexp or remote.list")
    procs = set()
    for key in ("db.pre.process", "db.remove.process", *(f"{b}.db.post.process" for b in c.items("BLOCKS"))):
        for meta in c.items(key):
            procs.update(c.items(meta))
    for proc in sorted(procs):
        if c.flag(f"{proc}.cluster"):
            c.warn(f"{proc}.cluster", f"{proc}.cluster: DRMAA clusters are not supported; the process runs on a processor")


def _check_publish(c: _Checker) -> None:
    """publish.s3 and its keys: a bucket address, KEY:SECRET credentials, a known profile."""
    from biomaj import buckets

    target = c.get("publish.s3")
    if not target:
        for key in ("publish.s3.credentials", "publish.s3.region", "publish.s3.addressing", "publish.s3.profile"):
            if c.get(key):
                c.warn(key, f"{key} is set but publish.s3 is not: nothing is published to a bucket")
        return
    try:
        endpoint, bucket, prefix = buckets.parse_target(target, "publish.s3")
        buckets.access_of(endpoint, bucket, prefix, {k: c.get(k) for k in ("publish.s3.region", "publish.s3.addressing")},
                          keys="publish.s3.")
    except ConfigError as exc:
        c.error(_key_of(exc), str(exc))
    given = c.get("publish.s3.credentials")
    if given is not None and given.strip():
        key, sep, secret = given.partition(":")
        if not (sep and key.strip() and secret.strip()):  # the value itself is never repeated
            c.error("publish.s3.credentials", "publish.s3.credentials must be KEY:SECRET (an access key, ':', "
                    "its secret key)")
    profile = c.get("publish.s3.profile")
    if profile and not (given or "").strip():
        try:
            buckets.credentials(buckets.BucketAccess("https://" + buckets.AWS_ENDPOINT, "bucket", profile=profile))
        except ConfigError as exc:
            c.error("publish.s3.profile", str(exc).replace("s3.profile=", "publish.s3.profile="))


def _check_local_files(c: _Checker) -> None:
    if not c.get("local.files"):
        c.missing("local.files", f"local.files is not set: {_help('local.files')}")


def _check_processes(c: _Checker) -> None:
    seen: set[str] = set()
    for key in ("db.remove.process", "db.pre.process"):
        for meta in c.items(key):
            _check_meta(c, meta, key, seen)
    for block in c.items("BLOCKS"):
        key = f"{block}.db.post.process"
        metas = c.items(key)
        if not metas:
            c.missing(key, f"block {block} is listed in BLOCKS but {key} is not set: expected a comma list of META names")
        for meta in metas:
            _check_meta(c, meta, key, seen)


def _check_meta(c: _Checker, meta: str, listed_in: str, seen: set[str]) -> None:
    if meta in seen:
        return
    seen.add(meta)
    if not c.get(meta):
        c.missing(meta, f"META {meta} (listed in {listed_in}) is not defined: expected {meta}=<comma list of process ids>")
        return
    for proc in c.items(meta):
        if proc in seen:
            continue
        seen.add(proc)
        for field in ("name", "exe"):
            key = f"{proc}.{field}"
            if not c.get(key):
                c.missing(key, f"process {proc} (in META {meta}) has no {key}: {_help(key)}")
        key = f"{proc}.args"
        if c.get(key) is None:
            c.missing(key, f"process {proc} (in META {meta}) has no {key}: expected {key}= (the value may be empty)")


def _check_descriptions(c: _Checker) -> None:
    if not c.get("db.fullname"):
        c.warn("db.fullname", "db.fullname is not set: expected a description of the bank")
    if not c.get("db.formats"):
        c.warn("db.formats", "db.formats is not set: expected the comma-separated formats produced, e.g. fasta,blast")


def _check_legacy(c: _Checker) -> None:
    for key, message in c.props.warnings:
        c.warn(key, message)
    post = c.get("db.post.process")
    if post and post.strip():
        if c.get("BLOCKS"):
            c.warn("db.post.process", "db.post.process is ignored by BioMAJ 3: only the <BLOCK>.db.post.process of BLOCKS run")
        else:
            c.warn(
                "db.post.process",
                f"db.post.process is ignored by BioMAJ 3: use BLOCKS, e.g. BLOCKS=POST and POST.db.post.process={post.strip()}",
            )


def _candidate_keys(c: _Checker) -> list[str]:
    """Keys whose value is checked: every key of the files and every declared key."""
    names = [s.name.lower() for s in PROPERTIES if not s.is_pattern]
    return list(dict.fromkeys(c.props.keys() + names))


def _check_values(c: _Checker) -> None:
    for key in _candidate_keys(c):
        setting = find_setting(key)
        if setting is None or setting.legacy:
            continue
        value = c.get(key)
        if value is None or not value.strip():
            continue
        if setting.kind == "int":
            try:
                c.props.get_int(key)
            except ConfigError as exc:
                c.error(key, str(exc))
        elif setting.kind in ("size", "rate", "allowance"):
            parse = {"size": parse_size, "rate": Schedule.parse, "allowance": Allowance.parse}[setting.kind]
            try:
                parse(value, what=key)
            except ConfigError as exc:
                c.error(key, str(exc))
        elif setting.kind == "regex":
            _check_regexp(c, key, value)
        elif setting.kind == "space-list":
            for pattern in value.split():
                if pattern != MATCH_EVERYTHING:
                    _check_regexp(c, key, pattern)
        elif setting.enum_values and key not in ("protocol", "publish.s3.addressing") and value not in setting.enum_values:
            c.warn(key, f"{key} should be one of {', '.join(setting.enum_values)}, got {value!r}")


def _check_regexp(c: _Checker, key: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        c.error(key, f"{key}: {pattern!r} is not a valid regular expression ({exc}); expected a Python regexp")


_RULES = (
    _check_interpolation,
    _check_required_dirs,
    _check_ldap,
    _check_elastic,
    _check_mail,
    _check_relative_dirs,
    _check_remote,
    _check_s3,
    _check_local_files,
    _check_publish,
    _check_processes,
    _check_descriptions,
    _check_legacy,
    _check_values,
)


def check_bank(props: BankProperties) -> list[Problem]:
    """Every problem of a bank configuration, errors and warnings, in rule order (BioMAJ 3's
    check(): the verdict is the one BioMAJ 3 would give)."""
    checker = _Checker(props)
    for rule in _RULES:
        rule(checker)
    return checker.problems


def check_support(props: BankProperties) -> list[Problem]:
    """What biomaj cannot do for this bank although BioMAJ 3 could (plugins, iRODS, DRMAA):
    errors when an update would be wrong, warnings otherwise."""
    checker = _Checker(props)
    _check_unsupported(checker)
    return checker.problems
