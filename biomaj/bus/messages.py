"""Bus messages: frozen, versioned dataclasses serialised to JSON.

Each message class declares a wire ``TYPE`` and a ``VERSION`` and is registered with
:func:`message`, which also makes it a frozen dataclass. :meth:`Message.encode` gives::

    {"type": "job.request", "version": 1, "id": "<uuid4 hex>", "created": 1700000000.0,
     "fields": {"job_id": "...", ...}}

and :func:`decode` turns those bytes back into the same message, or raises :class:`MessageError`
for bad JSON, an unknown type, a version newer than this node understands, or bad fields.

Compatibility rule: adding a field with a default keeps ``VERSION``; renaming, removing or
changing the meaning of a field bumps it, and the class overrides :meth:`Message.upgrade` to
read the older shape. A node never guesses at a newer version: it refuses it.

Routing: work messages name their queue (``QUEUE``), events their topic (:meth:`Message.topic`).
Retry state (delivery attempts, max deliveries) lives in the bus envelope, see
:class:`biomaj.bus.base.Delivery`, because it changes while the message itself stays frozen.
Fields must be JSON values; messages may carry credentials in ``remote``/``env``, so log a
message by ``TYPE`` and ``id``, never by its repr.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import types
import typing
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, TypeVar

from . import names

__all__ = [
    "CancelJob",
    "DeadLettered",
    "DownloadRequest",
    "DownloadResult",
    "FileOutcome",
    "FileSpec",
    "JobEvent",
    "JobRequest",
    "Message",
    "MessageError",
    "NodeHeartbeat",
    "ProcessRequest",
    "ProcessResult",
    "decode",
    "message",
    "registered_types",
]

M = TypeVar("M", bound="Message")

_RESERVED = frozenset({"fields", "encode", "topic", "upgrade", "describe"})
_REGISTRY: dict[str, type[Message]] = {}
_HINTS: dict[type[Message], dict[str, Any]] = {}


class MessageError(ValueError):
    """A message cannot be encoded or decoded (bad JSON, unknown type, version, bad fields)."""


@dataclass(frozen=True)
class Message:
    """Base of every bus message. Subclass it and decorate the subclass with :func:`message`."""

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    QUEUE: ClassVar[str | None] = None  # the work queue this message goes to, if any

    id: str = field(default_factory=lambda: uuid.uuid4().hex, kw_only=True)
    created: float = field(default_factory=time.time, kw_only=True)

    def __post_init__(self) -> None:
        hints = _HINTS.get(type(self))
        if hints is None:
            raise MessageError(f"{type(self).__name__} is not registered: decorate it with @message")
        for name, hint in hints.items():
            value = getattr(self, name)
            if not _checker(hint)(value):
                raise MessageError(
                    f"{self.TYPE}: field {name!r} must be {_describe(hint)}, "
                    f"got {type(value).__name__}"
                )

    def fields(self) -> dict[str, Any]:
        """The message's own fields (without ``id`` and ``created``)."""
        return {name: getattr(self, name) for name in _HINTS[type(self)] if name not in ("id", "created")}

    def encode(self) -> bytes:
        """Serialise to UTF-8 JSON bytes."""
        body = {
            "type": self.TYPE,
            "version": self.VERSION,
            "id": self.id,
            "created": self.created,
            "fields": self.fields(),
        }
        try:
            return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise MessageError(f"{self.TYPE}: fields are not plain JSON values: {exc}") from None

    def topic(self) -> str:
        """Topic this message is broadcast on; only event messages have one."""
        raise MessageError(f"{self.TYPE} is not an event message: it has no topic")

    @classmethod
    def upgrade(cls, fields: dict[str, Any], version: int) -> dict[str, Any]:
        """Turn the fields of an older ``version`` into this version's fields. Default: as is."""
        return fields

    def describe(self) -> str:
        """Short, secret-free text for logs: ``type id``."""
        return f"{self.TYPE} {self.id}"


@typing.dataclass_transform(frozen_default=True, field_specifiers=(field,))
def message(cls: type[M]) -> type[M]:
    """Class decorator: make ``cls`` a frozen dataclass and register its ``TYPE`` for decoding."""
    if not (isinstance(cls, type) and issubclass(cls, Message)):
        raise TypeError("@message decorates subclasses of Message")
    if not cls.TYPE or not isinstance(cls.TYPE, str):
        raise TypeError(f"{cls.__name__}: set a TYPE string before registering")
    if not isinstance(cls.VERSION, int) or cls.VERSION < 1:
        raise TypeError(f"{cls.__name__}: VERSION must be an int >= 1")
    other = _REGISTRY.get(cls.TYPE)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise TypeError(f"message type {cls.TYPE!r} is already registered by {other.__qualname__}")
    cls = dataclass(frozen=True)(cls)
    hints = typing.get_type_hints(cls)
    _HINTS[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    clash = sorted(set(_HINTS[cls]) & _RESERVED)
    if clash:
        raise TypeError(f"{cls.__name__}: field name(s) {', '.join(clash)} are Message methods")
    _REGISTRY[cls.TYPE] = cls
    return cls


def registered_types() -> dict[str, type[Message]]:
    """A copy of the registry: wire type -> class."""
    return dict(_REGISTRY)


def decode(data: bytes | str) -> Message:
    """Parse bytes made by :meth:`Message.encode`; raise :class:`MessageError` when they are bad."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(f"not a JSON message: {exc}") from None
    if not isinstance(raw, dict) or not {"type", "version", "fields"} <= raw.keys():
        raise MessageError("a message is a JSON object with 'type', 'version' and 'fields'")
    mtype, version, fields = raw["type"], raw["version"], raw["fields"]
    cls = _REGISTRY.get(mtype) if isinstance(mtype, str) else None
    if cls is None:
        raise MessageError(f"unknown message type {mtype!r} (known: {', '.join(sorted(_REGISTRY))})")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise MessageError(f"{mtype}: bad version {version!r}")
    if version > cls.VERSION:
        raise MessageError(
            f"{mtype}: version {version} is newer than this node understands ({cls.VERSION}); "
            "upgrade biomaj on this node"
        )
    if not isinstance(fields, dict):
        raise MessageError(f"{mtype}: 'fields' must be a JSON object")
    if version < cls.VERSION:
        fields = cls.upgrade(dict(fields), version)
    own = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("id", "created")}
    unknown = sorted(set(fields) - own.keys())
    if unknown:
        raise MessageError(f"{mtype}: unknown field(s) {', '.join(unknown)}")
    missing = sorted(
        name
        for name, f in own.items()
        if name not in fields
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise MessageError(f"{mtype}: missing field(s) {', '.join(missing)}")
    envelope: dict[str, Any] = {}
    if "id" in raw:
        envelope["id"] = raw["id"]
    if "created" in raw:
        envelope["created"] = raw["created"]
    try:
        return cls(**fields, **envelope)
    except TypeError as exc:  # MessageError (a ValueError) passes through untouched
        raise MessageError(f"{mtype}: {exc}") from None


# --- field checking --------------------------------------------------------------------------


def _conforms(value: Any, hint: Any) -> bool:
    """True when ``value`` fits the annotation ``hint`` (the JSON-able subset messages use)."""
    return _checker(hint)(value)


@functools.lru_cache(maxsize=None)
def _checker(hint: Any) -> Callable[[Any], bool]:
    """A function telling whether a value fits ``hint``, built once per annotation (messages are
    checked on every encode and decode: thousands per second on a busy node)."""
    if hint is Any:
        return lambda value: True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        checks = tuple(_checker(arg) for arg in args)
        return lambda value: any(check(value) for check in checks)
    if hint is type(None):
        return lambda value: value is None
    if hint is bool:
        return lambda value: isinstance(value, bool)
    if hint is int:
        return lambda value: isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return lambda value: isinstance(value, str)
    if hint is list or origin is list:
        item = _checker(args[0]) if args else None
        return lambda value: isinstance(value, list) and (item is None or all(item(v) for v in value))
    if hint is dict or origin is dict:
        item = _checker(args[1]) if args else None
        return lambda value: (isinstance(value, dict) and all(isinstance(k, str) for k in value)
                              and (item is None or all(item(v) for v in value.values())))
    if isinstance(hint, type):
        return lambda value: isinstance(value, hint)
    return lambda value: False


def _describe(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


# --- the messages ------------------------------------------------------------------------------


@message
class JobRequest(Message):
    """Ask the manager to run a bank job (``kind``: update, remove, remove-all, repair, ...)."""

    TYPE = "job.request"
    QUEUE = names.JOBS

    job_id: str
    kind: str
    bank: str
    options: dict[str, Any] = field(default_factory=dict)
    user: str | None = None


@message
class CancelJob(Message):
    """Ask every node to stop a job, or a round of its download requests (``job_id`` is then the
    round's :attr:`DownloadRequest.group`); broadcast on :data:`names.CANCEL_TOPIC`."""

    TYPE = "job.cancel"

    job_id: str
    bank: str

    def topic(self) -> str:
        return names.CANCEL_TOPIC


@message
class JobEvent(Message):
    """A job changed state or made progress; broadcast on ``job.<bank>``."""

    TYPE = "job.event"

    job_id: str
    bank: str
    kind: str
    state: str  # queued, running, done, failed, cancelled
    step: str | None = None
    message: str = ""
    progress: dict[str, Any] = field(default_factory=dict)

    def topic(self) -> str:
        if self.kind == "download" and self.progress.get("batch"):
            return names.file_topic(self.bank)
        return names.job_topic(self.bank)


@dataclass(frozen=True)
class FileSpec:
    """One file of a :class:`DownloadRequest`: fetch remote ``path`` to ``<offline_dir>/<save_as>``;
    ``size``/``mtime``/``hash`` as listed, ``digest`` (md5, sha256) to compute while receiving."""

    path: str
    save_as: str
    size: int | None = None
    mtime: float | None = None
    hash: str | None = None
    digest: str | None = None
    size_hint: int | None = None  # a rounded size from the listing, when ``size`` is None
    checksum: str | None = None  # "algo:hex" the file must have (a provider's manifest), checked before its rename

    def to_dict(self) -> dict[str, Any]:
        return {name: value for name in _FILE_SPEC_FIELDS if (value := getattr(self, name)) is not None}

    @classmethod
    def from_dict(cls, item: Any) -> FileSpec:
        """MessageError when ``item`` is not a file of a download request."""
        return _from_dict(cls, item, "download.request: a file")


@dataclass(frozen=True)
class FileOutcome:
    """What became of one file of a :class:`DownloadRequest`."""

    save_as: str
    ok: bool
    size: int | None = None
    mtime: float | None = None
    hash: str | None = None
    digest: str | None = None
    transferred: int = 0  # bytes received (0: the file was already complete)
    attempts: int = 0
    skipped: bool = False  # already complete in the offline directory
    error: str = ""
    retryable: bool = False
    elapsed: float = 0.0
    got_checksum: str | None = None  # "algo:hex" the file had when it did not match FileSpec.checksum
    dead_letter: bool = False  # its message was given up on (it crashed the workers that took it): never retried

    def to_dict(self) -> dict[str, Any]:
        return {name: value for name, default in _FILE_OUTCOME_DEFAULTS.items()
                if (value := getattr(self, name)) != default or name in ("save_as", "ok")}

    @classmethod
    def from_dict(cls, item: Any) -> FileOutcome:
        """MessageError when ``item`` is not a file of a download result."""
        return _from_dict(cls, item, "download.result: a file")


_FILE_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(FileSpec))
_FILE_OUTCOME_DEFAULTS = {f.name: f.default for f in dataclasses.fields(FileOutcome)}


@functools.lru_cache(maxsize=None)
def _field_checks(cls: type) -> dict[str, tuple[Any, Callable[[Any], bool]]]:
    """name -> (annotation, its checker) for each field of ``cls`` (built once: thousands of
    files per second go through here)."""
    return {name: (hint, _checker(hint)) for name, hint in typing.get_type_hints(cls).items()}


def _from_dict(cls: type, item: Any, what: str) -> Any:
    if not isinstance(item, dict):
        raise MessageError(f"{what} must be a JSON object, got {type(item).__name__}")
    checks = _field_checks(cls)
    for name, value in item.items():
        check = checks.get(name)
        if check is None:
            raise MessageError(f"{what}: unknown field {name!r}")
        if not check[1](value):
            raise MessageError(f"{what}: field {name!r} must be {_describe(check[0])}, "
                               f"got {type(value).__name__}")
    try:
        return cls(**item)
    except TypeError as exc:  # a required field is missing
        raise MessageError(f"{what}: {exc}") from None


_SINGLE_FILE_FIELDS = ("path", "save_as", "size", "mtime", "hash", "digest")
_SINGLE_OUTCOME_FIELDS = tuple(f.name for f in dataclasses.fields(FileOutcome))


@message
class DownloadRequest(Message):
    """Download a batch of remote files (``files``, see :class:`FileSpec`) into ``offline_dir``,
    resuming partial files.

    Small files travel many to a message so that the per-message costs (bus, config, events)
    are paid once per batch; a big file travels alone. The request is acked when every file has
    an outcome; a downloader that dies mid-batch leaves it unacked, and the next one finds the
    files already complete (``skipped``) and resumes the others.

    ``remote`` holds the RemoteConfig fields the protocol client needs, without secrets:
    ``secrets`` maps a secret field (``credentials``, ``proxy_auth``) to the bank property that
    holds it (``server.credentials`` ...), which the downloader reads from the bank file itself.
    Messages wait in queues and dead-letter lists; passwords never travel in them.
    """

    TYPE = "download.request"
    VERSION = 3  # 2: results_queue; 3: a batch of files instead of one
    QUEUE = names.DOWNLOAD

    job_id: str
    bank: str
    session_id: str
    remote: dict[str, Any]
    offline_dir: str
    files: list[dict[str, Any]]  # FileSpec.to_dict() of each file
    secrets: dict[str, str] = field(default_factory=dict)
    check_archive: bool = True
    stop_condition: str | None = None  # BioMAJ retry strings (options.stop_condition, .wait_policy)
    wait_policy: str | None = None
    results_queue: str = names.DOWNLOAD_RESULTS  # where the result goes: the sending manager's own queue
    split_min_size: int | None = None  # download.split.min_size in bytes (None: the downloader's default)
    split_max: int | None = None  # download.split.max (None: the downloader's default)
    bandwidth: str | None = None  # download.bandwidth: the bank's limit on each downloader
    #: The round of requests this one belongs to, when its sender may stop the round without
    #: cancelling the job (a failure budget spent): a cancel of this key stops it as a job cancel does.
    group: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.files:
            raise MessageError(f"{self.TYPE}: 'files' is empty")
        # checked once, kept: the downloader reads them without building them again
        object.__setattr__(self, "_specs", [FileSpec.from_dict(item) for item in self.files])

    def specs(self) -> list[FileSpec]:
        """The files to fetch."""
        return list(self._specs)

    @classmethod
    def upgrade(cls, fields: dict[str, Any], version: int) -> dict[str, Any]:
        if version < 3:  # one file per message
            fields["files"] = [{k: fields.pop(k) for k in _SINGLE_FILE_FIELDS if fields.get(k) is not None}]
            for k in _SINGLE_FILE_FIELDS:
                fields.pop(k, None)
        return fields


@message
class DownloadResult(Message):
    """Outcomes of the files of one :class:`DownloadRequest` (``request_id`` is its id).

    A downloader working through a batch sends the outcomes it has every few tenths of a second
    (``final`` false), then the rest in the ``final`` result, published before the request is
    acked. A redelivered batch reports again files that a dead downloader already reported:
    the manager counts each file once.
    """

    TYPE = "download.result"
    VERSION = 2  # 2: a batch of file outcomes, partial results
    QUEUE = names.DOWNLOAD_RESULTS

    job_id: str
    bank: str
    session_id: str
    request_id: str
    files: list[dict[str, Any]]  # FileOutcome.to_dict() of each file
    final: bool = True
    node_id: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        # checked once, kept: the manager reads them without building them again
        object.__setattr__(self, "_outcomes", [FileOutcome.from_dict(item) for item in self.files])

    def outcomes(self) -> list[FileOutcome]:
        """The file outcomes this result carries."""
        return list(self._outcomes)

    @classmethod
    def upgrade(cls, fields: dict[str, Any], version: int) -> dict[str, Any]:
        if version < 2:  # one file per result
            fields["files"] = [{k: fields.pop(k) for k in _SINGLE_OUTCOME_FIELDS if k in fields}]
        return fields


@message
class ProcessRequest(Message):
    """Run one pre/post/remove process of a bank (BioMAJ 3's process contract).

    ``args`` are already substituted (``${var}``) and split; with ``shell_expand`` the command
    line ``exe args...`` goes through ``/bin/sh -c`` (BioMAJ 3's default ``.expand=true``), else
    ``exe`` is executed directly with ``args``. ``env`` is the whole process environment BioMAJ 3
    exports (bank properties and special variables, secrets left out); ``cwd`` is process.dir.
    stdout and stderr go to ``<log_dir>/<name>.out`` / ``.err``. ``docker`` (image, sudo, workdir,
    volumes as [host, container, mode]) runs the command in a container instead.
    """

    TYPE = "process.request"
    VERSION = 2  # 2: log_dir, cwd, docker, results_queue
    QUEUE = names.PROCESS

    job_id: str
    bank: str
    session_id: str
    name: str  # <META>_<PROC>
    exe: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    phase: str = "postprocess"  # preprocess, postprocess, removeprocess
    block: str = ""
    meta: str = ""
    log_dir: str = ""
    cwd: str = ""
    shell_expand: bool = True
    timeout: float | None = None
    docker: dict[str, Any] | None = None
    results_queue: str = names.PROCESS_RESULTS


@message
class ProcessResult(Message):
    """Outcome of one :class:`ProcessRequest`; ``metadata`` holds its ``##BIOMAJ#`` lines, parsed."""

    TYPE = "process.result"
    QUEUE = names.PROCESS_RESULTS

    job_id: str
    bank: str
    session_id: str
    request_id: str
    name: str
    exit_code: int | None
    ok: bool
    metadata: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    elapsed: float = 0.0
    node_id: str = ""


@message
class DeadLettered(Message):
    """A work message was given up on and moved to its queue's dead-letter queue; broadcast on
    :data:`names.DEAD_LETTER_TOPIC` by the bus that moved it."""

    TYPE = "bus.dead_lettered"

    queue: str  # the work queue it failed on
    message_id: str
    message_type: str
    reason: str
    attempts: int

    def topic(self) -> str:
        return names.DEAD_LETTER_TOPIC


@message
class NodeHeartbeat(Message):
    """A node is alive; broadcast every few seconds on :data:`names.NODE_TOPIC`."""

    TYPE = "node.heartbeat"

    node_id: str
    host: str
    pid: int
    roles: list[str]
    actors: list[str]
    version: str
    in_flight: int
    started: float
    at: float

    def topic(self) -> str:
        return names.NODE_TOPIC
