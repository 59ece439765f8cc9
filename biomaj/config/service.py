"""The service configuration, ``config.yml``: declared once, validated, with environment overrides.

Every key is a pydantic field with a default and a description; the description is the help text
of ``config.example.yml`` and ``docs/configuration.md`` (a test keeps them in step). Environment
variables with BioMAJ 3's names (``WEB_PORT``, ``RABBITMQ_*``, ``REDIS_*``, ``MONGO_URL``) override
the file, so that the same image runs in a container without editing it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping
from urllib.parse import quote, urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from biomaj.config.rates import Schedule
from biomaj.errors import ConfigError

#: Sections that a BioMAJ 3 micro-service config.yml carries and that biomaj does not need
#: (Consul, Zipkin, the Flask web apps ...): accepted and ignored, with a warning.
UPSTREAM_IGNORED_SECTIONS = ("consul", "zipkin", "tls", "log_config", "docker", "cron", "prometheus", "biomaj")

DEFAULT_CONFIG_NAME = "config.yml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WebSettings(_Section):
    """The web actor: API, UI, health and metrics endpoints."""

    host: str = Field("127.0.0.1", description="Address the web actor listens on (0.0.0.0 to serve every interface).")
    port: int = Field(5000, ge=0, le=65535, description="TCP port of the web actor (BioMAJ 3's proxy port; env WEB_PORT).")
    secret: SecretStr = Field(
        SecretStr(""),
        description="Secret that signs session cookies; `biomaj init` generates one. Never logged.",
    )
    metrics_public: bool = Field(
        True,
        description="Serve /metrics (Prometheus) to anyone; false: an admin API key is needed, and per-bank series are added.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call /api/... (CORS), e.g. [https://portal.example.org]; [\"*\"]: any, without credentials; []: CORS off.",
    )
    max_request_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body accepted, in bytes; a larger one gets 413."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Reverse proxies (addresses or networks, e.g. [127.0.0.1, 10.0.0.0/8]) whose X-Forwarded-For names "
        "the client, for the web UI's login throttle; []: the header is never trusted, the peer address counts.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {entry!r} is not an IP address or network "
                                 "(such as 127.0.0.1 or 10.0.0.0/8)") from None
        return value


class FtpSettings(_Section):
    """The ftp actor: a read-only FTP view of the published releases (see docs/operations.md)."""

    enabled: bool = Field(
        False, description="Listen for FTP clients; false: the ftp role's actor stays idle (opening a port is a choice).",
    )
    host: str = Field(
        "127.0.0.1",
        description="Address the FTP server listens on (0.0.0.0 to serve every interface; BioMAJ 3's `listen` is read too).",
    )
    port: int = Field(
        2121, ge=0, le=65535,
        description="TCP port of the FTP control connection (21 needs root; 2121 is the port BioMAJ 3's compose file publishes).",
    )
    passive_ports: str = Field(
        "",
        description="Data ports for passive mode, FIRST-LAST (e.g. 30000-30009; BioMAJ 3's passive_ports_start/_end are "
        "read too); each open session holds one; empty: any port the system gives.",
    )
    masquerade_address: str = Field(
        "",
        description="IPv4 address sent in PASV replies when clients reach the server through NAT (env MASQUERADE_ADDRESS); "
        "empty: the address the client connected to.",
    )
    anonymous: bool = Field(
        True,
        description="Accept the logins anonymous, ftp and biomaj_default (BioMAJ 3's) with any password: they see the "
        "public banks only.",
    )
    max_connections: int = Field(64, ge=1, description="FTP sessions served at once; one more gets 421 and is closed.")
    idle_timeout: float = Field(
        300.0, gt=0, description="Seconds a session may send no command while no transfer runs before it is closed.",
    )
    data_timeout: float = Field(
        60.0, gt=0,
        description="Seconds a data connection may wait to be opened or make no progress before the transfer is aborted.",
    )

    @model_validator(mode="before")
    @classmethod
    def _upstream_names(cls, data: Any) -> Any:
        """BioMAJ 3's biomaj-ftp keys: ``listen``, ``passive_ports_start`` and ``passive_ports_end``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "listen" in data:
            data.setdefault("host", data.pop("listen"))
        start, end = data.pop("passive_ports_start", None), data.pop("passive_ports_end", None)
        if start is not None or end is not None:
            data.setdefault("passive_ports", f"{start if start is not None else end}-{end if end is not None else start}")
        return data

    @field_validator("passive_ports")
    @classmethod
    def _port_range(cls, value: str) -> str:
        value = value.strip()
        if value:
            first, sep, last = value.partition("-")
            try:
                low, high = int(first), int(last if sep else first)
            except ValueError:
                raise ValueError("expected FIRST-LAST, such as 30000-30009") from None
            if not 1 <= low <= high <= 65535:
                raise ValueError("expected FIRST-LAST with 1 <= FIRST <= LAST <= 65535")
        return value

    @field_validator("masquerade_address")
    @classmethod
    def _ipv4(cls, value: str) -> str:
        value = value.strip()
        if value:
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                raise ValueError("expected an IPv4 address such as 203.0.113.7 (PASV replies carry no host name)") from None
        return value

    @property
    def data_ports(self) -> range | None:
        """The passive ports, or None for any."""
        if not self.passive_ports:
            return None
        first, _, last = self.passive_ports.partition("-")
        return range(int(first), int(last or first) + 1)


class StorageSettings(_Section):
    """Where banks, sessions, history, users, schedules and jobs are stored."""

    url: str = Field(
        "",
        description="Store URL: empty for SQLite in <root>/db/biomaj.sqlite, sqlite:///PATH, or mongodb://HOST:27017/DATABASE for MongoDB (docs/storage.md); when empty, mongo.url (env MONGO_URL) is used if set.",
    )


class BusSettings(_Section):
    """The message bus between actors."""

    url: str = Field(
        "",
        description="Bus URL: empty or memory:// for the in-process bus, amqp://user:pass@host:5672/vhost for RabbitMQ (env RABBITMQ_*).",
    )


class StateSettings(_Section):
    """Shared live state: progress, cancel flags, bank locks, node registry."""

    url: str = Field(
        "", description="State URL: empty or memory:// for in-process state, redis://host:6379/0 for Redis (env REDIS_*)."
    )


class RabbitMQSettings(_Section):
    """BioMAJ 3's rabbitmq section; when `host` is set and bus.url is empty, it builds the bus URL."""

    host: str = Field("", description="RabbitMQ host (env RABBITMQ_HOST); empty: not used.")
    port: int = Field(5672, ge=1, le=65535, description="RabbitMQ port (env RABBITMQ_PORT).")
    user: str | None = Field(None, description="RabbitMQ user (env RABBITMQ_USER); null: no credentials.")
    password: SecretStr | None = Field(None, description="RabbitMQ password (env RABBITMQ_PASSWORD). Never logged.")
    virtual_host: str = Field("/", description="RabbitMQ virtual host (env RABBITMQ_VHOST).")


class RedisSettings(_Section):
    """BioMAJ 3's redis section; when `host` is set and state.url is empty, it builds the state URL."""

    host: str = Field("", description="Redis host (env REDIS_HOST); empty: not used.")
    port: int = Field(6379, ge=1, le=65535, description="Redis port (env REDIS_PORT).")
    db: int = Field(0, ge=0, description="Redis database number.")
    prefix: str = Field("biomaj", description="Namespace of the Redis keys (env REDIS_PREFIX): keys are biomaj:*, or <prefix>:biomaj:* for another value.")


class MongoSettings(_Section):
    """BioMAJ 3's mongo section; when `url` is set and storage.url is empty, MongoDB is the store."""

    url: str = Field("", description="MongoDB URL (env MONGO_URL); empty: not used.")
    db: str = Field("biomaj", description="MongoDB database when the MongoDB URL names none (env MONGO_DB): BioMAJ 3's db.name.")


class NodeSettings(_Section):
    """This node's identity and heartbeat."""

    id: str = Field("", description="Node id shown in `biomaj ctl nodes`; empty: <hostname>-<pid>-<6 hex digits drawn at start> (unique even for containers sharing a host name and PID 1).")
    heartbeat_interval: float = Field(5.0, gt=0, description="Seconds between two heartbeats of this node.")
    heartbeat_ttl: float = Field(15.0, gt=0, description="Seconds after its last heartbeat before a node is forgotten.")
    stop_grace: float = Field(10.0, ge=0, description="Seconds given to in-flight work to finish on SIGTERM before it is cancelled.")
    lease_ttl: float = Field(30.0, ge=3, description="Seconds a manager's lease on a bank outlives the manager: after a crash, another manager resumes its job this long after.")


class LdapSettings(_Section):
    """Optional LDAP login: a user's password is checked by a bind as the entry the search finds."""

    url: str = Field("", description="LDAP server, ldap://host:389 or ldaps://host:636; empty: no LDAP.")
    base_dn: str = Field("", description="Where users are searched, e.g. ou=People,dc=example,dc=org.")
    user_filter: str = Field("(|(uid={user})(mail={user}))", description="Search filter; {user} is the login name, escaped.")
    bind_dn: str | None = Field(None, description="Service account for the search; null: anonymous search.")
    bind_password: SecretStr | None = Field(None, description="Password of bind_dn. Never logged.")
    start_tls: bool = Field(False, description="Upgrade an ldap:// connection with StartTLS (the certificate is checked).")
    ca_file: str | None = Field(None, description="CA certificates for ldaps:// or StartTLS; null: the system's.")
    timeout: float = Field(10.0, gt=0, description="Seconds to connect and for each LDAP operation.")
    email_attribute: str = Field("mail", description="Attribute holding the user's email address.")


class AuthSettings(_Section):
    """Users and rights."""

    admins: list[str] = Field(default_factory=lambda: ["biomaj"], description="User names with admin rights.")
    ldap: LdapSettings = Field(default_factory=LdapSettings, description=LdapSettings.__doc__)


class LimitsSettings(_Section):
    """Concurrency limits of this node."""

    jobs: int = Field(2, ge=1, description="Bank workflows run in parallel by a manager.")
    downloads: int = Field(8, ge=1, description="Download messages (one big file, or a batch of small ones) a downloader works on at once.")
    per_host: int = Field(
        4, ge=1,
        description="Connections open at once to one remote server, for everything this node opens (listings, release detection, downloads, split segments); with a Redis state (distributed mode), for the whole cluster together. The manager's listings take half of it at most. Formerly limits.downloads_per_host (still read, with a warning).",
    )
    hosts: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        description="Limits of some servers instead of per_host, by host name or host:port, e.g. {ftp.ncbi.nlm.nih.gov: 3}.",
    )
    host_lease_ttl: float = Field(
        30.0, gt=0,
        description="Distributed mode: seconds the connection slots of a node that died (SIGKILL, lost host) stay taken before the other nodes may have them; renewed every third of it.",
    )
    inline_write_max: int = Field(
        262144, ge=0,
        description="Files up to this many bytes are held whole in memory, then written to their name in one call by the downloader's event loop itself (no part file, no trip to a worker thread), and asked for several at a time over HTTP (pipelining); 0 on a network file system, where each write waits on a server.",
    )
    processes: int = Field(2, ge=1, description="Processes run in parallel by a processor.")
    bandwidth: str | None = Field(
        None,
        description="Bandwidth limit of this download node, every transfer together, rclone-style: 10M (bytes/s; K, M, G binary units; a bare number is KiB/s), off, or a timetable of local times such as '08:00,2M 20:00,off'. A bank can have its own (download.bandwidth) on top.",
    )

    @field_validator("bandwidth")
    @classmethod
    def _readable_bandwidth(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                Schedule.parse(value, what="limits.bandwidth")
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value


class SchedulerSettings(_Section):
    """The scheduler actor: cron schedules (`biomaj ctl schedule`) and release-driven updates (schedule.auto); see docs/scheduling.md."""

    tick: float = Field(10.0, gt=0, le=60, description="Seconds between two looks of the scheduler at its schedules.")
    missed: Literal["skip", "catch_up"] = Field(
        "skip", description="A run that no scheduler fired in time (every scheduler node was down): skip it, as cron does, or catch_up: fire it once, late (several missed runs fire once)."
    )
    missed_after: float = Field(300.0, gt=0, description="Seconds after its time when a run not yet fired counts as missed.")
    timezone: str = Field("", description="IANA time zone of the cron expressions, e.g. Europe/Paris; empty: each scheduler node's local time.")
    run_as: str = Field(
        "biomaj", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$",
        description="User the release-driven updates run as (BioMAJ 3's biomaj.run_as): an admin, or the owner of the banks.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_time_zone(cls, value: str) -> str:
        if value:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}; expected an IANA name such as Europe/Paris or UTC") from None
        return value


class LoggingSettings(_Section):
    """Application logs (bank session logs are separate, under log.dir)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Default level of the application log.")
    format: Literal["text", "json"] = Field("text", description="text for people, json for log collectors (one object per line).")
    file: str = Field("", description="Write the application log to this file instead of stderr (relative to root).")
    levels: dict[str, str] = Field(
        default_factory=dict, description="Per-module levels, e.g. {biomaj.bus: DEBUG, aiohttp.access: WARNING}."
    )


def _webhooks():
    """biomaj.notify.webhooks, imported only by a config.yml that declares webhooks (every
    ``biomaj ctl`` command reads config.yml; few of them send anything)."""
    from biomaj.notify import webhooks

    return webhooks


class WebhookSettings(_Section):
    """One webhook: where to POST which events, signed with its secret (docs/notifications.md)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                      description="Its name, in logs and in a bank's notify.webhooks.")
    url: str = Field(description="http:// or https:// URL the events are POSTed to.")
    events: list[str] = Field(
        default_factory=lambda: list(_webhooks().EVENTS), min_length=1,
        description="Events sent: update.started, release.published, update.failed, release.removed.",
    )
    secret: SecretStr | None = Field(None, description="The key of the HMAC-SHA256 signature. Never logged.")
    secret_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Or: the environment variable holding the secret (read when biomaj starts); its name must say it "
        "is a secret (SECRET, TOKEN, PASSWORD or CREDENTIAL in it), as processes never inherit such variables.",
    )
    timeout: float = Field(10.0, gt=0, le=300, description="Seconds one try may take.")
    all_banks: bool = Field(True, description="Every bank's events; false: only those of the banks naming it in notify.webhooks.")

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str) -> str:
        return _webhooks().check_url(value)

    @field_validator("secret_env")
    @classmethod
    def _named_as_a_secret(cls, value: str | None) -> str | None:
        # the pre/post processes get the node's environment without the variables named so
        # (process/environment.py): a secret in HOOK_KEY would reach them
        if value is not None and not re.search(r"secret|token|passw|credential", value, re.IGNORECASE):
            raise ValueError(f"{value}: name a variable with SECRET, TOKEN, PASSWORD or CREDENTIAL in it (e.g. "
                             f"{value}_SECRET): processes never inherit those, they would inherit this one")
        return value

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        known = _webhooks().EVENTS
        for event in value:
            if event not in known:
                raise ValueError(f"unknown event {event!r}; expected some of {', '.join(known)}")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookSettings:
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError(f"webhook {self.name}: set either secret or secret_env (the name of an environment "
                             "variable holding it): every delivery is signed")
        return self


class NotifySettings(_Section):
    """Notifications besides mail (mail.* stays in the properties files): signed webhooks, see docs/notifications.md."""

    webhooks: list[WebhookSettings] = Field(
        default_factory=list,
        description="Webhooks, each {name, url, events, secret or secret_env, timeout, all_banks}: a JSON POST per event, "
        "signed (X-Biomaj-Signature: sha256=HMAC of the body); see docs/notifications.md.",
    )
    webhook_allow: list[str] = Field(
        default_factory=list,
        description="Hosts webhooks may be sent to (hooks.example.org, or *.example.org for its sub-domains); a URL "
        "elsewhere is refused when config.yml is loaded; []: any host.",
    )
    webhook_proxy: str = Field("", description="http(s) proxy every webhook delivery goes through (an egress proxy that restricts targets); empty: none.")
    webhook_retry_delays: list[Annotated[float, Field(ge=0, le=600)]] = Field(
        default_factory=lambda: [1.0, 4.0], max_length=10,
        description="Seconds between two tries of a delivery that failed (connection error, timeout, HTTP 408, 429, 5xx): one more try per entry.",
    )
    webhook_exit_wait: float = Field(
        10.0, ge=0, description="Seconds a stopping biomaj (the end of `ctl update`, a `serve` node's stop) waits for the deliveries still under way.",
    )

    @field_validator("webhook_proxy")
    @classmethod
    def _proxy_url(cls, value: str) -> str:
        if value:
            _webhooks().check_url(value)
        return value

    @model_validator(mode="after")
    def _names_and_hosts(self) -> NotifySettings:
        seen: set[str] = set()
        for hook in self.webhooks:
            if hook.name in seen:
                raise ValueError(f"two webhooks are named {hook.name}: names must be unique")
            seen.add(hook.name)
            host = urlsplit(hook.url).hostname or ""
            if not _webhooks().host_allowed(host, self.webhook_allow):
                raise ValueError(f"webhook {hook.name}: host {host} is not in notify.webhook_allow")
        return self


_NODE_SUFFIX = secrets.token_hex(3)  # drawn once per process


def default_node_id() -> str:
    """``<host>-<pid>-<6 hex digits drawn at start>``: unique per process even where host names
    and PIDs repeat (containers on the host's network are all PID 1 on the same host name), and
    still readable (`ctl nodes`). ``node.id`` / ``--node-id`` override it."""
    return f"{socket.gethostname()}-{os.getpid()}-{_NODE_SUFFIX}"


class ServiceConfig(_Section):
    """The whole of config.yml."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    root: str = Field(".", description="Root of this installation (conf/, db/, lock/ ...); relative to the config file's folder.")
    global_properties: str = Field(
        "conf/global.properties", description="BioMAJ 3 global properties file (relative to root)."
    )
    web: WebSettings = Field(default_factory=WebSettings, description=WebSettings.__doc__)
    ftp: FtpSettings = Field(default_factory=FtpSettings, description=FtpSettings.__doc__)
    storage: StorageSettings = Field(default_factory=StorageSettings, description=StorageSettings.__doc__)
    bus: BusSettings = Field(default_factory=BusSettings, description=BusSettings.__doc__)
    state: StateSettings = Field(default_factory=StateSettings, description=StateSettings.__doc__)
    rabbitmq: RabbitMQSettings = Field(default_factory=RabbitMQSettings, description=RabbitMQSettings.__doc__)
    redis: RedisSettings = Field(default_factory=RedisSettings, description=RedisSettings.__doc__)
    mongo: MongoSettings = Field(default_factory=MongoSettings, description=MongoSettings.__doc__)
    node: NodeSettings = Field(default_factory=NodeSettings, description=NodeSettings.__doc__)
    auth: AuthSettings = Field(default_factory=AuthSettings, description=AuthSettings.__doc__)
    limits: LimitsSettings = Field(default_factory=LimitsSettings, description=LimitsSettings.__doc__)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings, description=SchedulerSettings.__doc__)
    logging: LoggingSettings = Field(default_factory=LoggingSettings, description=LoggingSettings.__doc__)
    notify: NotifySettings = Field(default_factory=NotifySettings, description=NotifySettings.__doc__)


class Config:
    """A loaded config.yml: the validated settings plus the paths they resolve to."""

    def __init__(self, settings: ServiceConfig, path: Path | None, warnings: list[str] | None = None):
        self.settings = settings
        self.path = path
        self.warnings = warnings or []
        base = path.parent if path is not None else Path.cwd()
        self.root = (base / settings.root).resolve()

    # Paths ---------------------------------------------------------------------------------
    def resolve(self, relative: str) -> Path:
        """A path from config.yml, relative to root unless absolute."""
        return (self.root / relative).resolve()

    @property
    def global_properties(self) -> Path:
        return self.resolve(self.settings.global_properties)

    # Effective transport URLs ---------------------------------------------------------------
    @property
    def storage_url(self) -> str:
        s = self.settings
        url = s.storage.url or s.mongo.url or ""
        return _mongo_database(url, s.mongo.db) if url.startswith(("mongodb://", "mongodb+srv://")) else url

    @property
    def bus_url(self) -> str:
        s = self.settings
        if s.bus.url:
            return s.bus.url
        mq = s.rabbitmq
        if not mq.host:
            return "memory://"
        auth = ""
        if mq.user:
            password = mq.password.get_secret_value() if mq.password else ""
            auth = f"{quote(mq.user, safe='')}:{quote(password, safe='')}@"
        return f"amqp://{auth}{mq.host}:{mq.port}/{quote(mq.virtual_host, safe='')}"

    @property
    def state_url(self) -> str:
        s = self.settings
        if s.state.url:
            return s.state.url
        if not s.redis.host:
            return "memory://"
        return f"redis://{s.redis.host}:{s.redis.port}/{s.redis.db}"

    @property
    def state_prefix(self) -> str:
        """What goes before the ``biomaj:`` keys in Redis: nothing with the default
        ``redis.prefix`` (``biomaj``), ``<prefix>:`` with another one (several installations,
        or test runs, sharing one Redis database)."""
        prefix = self.settings.redis.prefix
        return "" if prefix in ("", "biomaj") else f"{prefix}:"

    @property
    def node_id(self) -> str:
        return self.settings.node.id or default_node_id()

    @property
    def web_url(self) -> str:
        host = self.settings.web.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.settings.web.port}"


def _mongo_database(url: str, database: str) -> str:
    """A MongoDB URL naming ``database`` (mongo.db, env MONGO_DB) when it names none itself.

    The store's default database is mongo.db's default, so that URL is left as it is. A database
    in the URL is also the driver's default ``authSource``: a URL with credentials that relied
    on ``admin`` gets ``authSource=admin`` (not for mongodb+srv, whose DNS TXT record may set it).
    """
    parts = urlsplit(url)
    if not database or database == MongoSettings.model_fields["db"].default or parts.path.strip("/"):
        return url
    query = parts.query
    if "@" in parts.netloc and "authsource=" not in query.lower() and parts.scheme == "mongodb":
        query = f"{query}&authSource=admin" if query else "authSource=admin"
    return urlunsplit(parts._replace(path="/" + quote(database, safe=""), query=query))


# Loading -----------------------------------------------------------------------------------

#: env variable -> (section, key, type); BioMAJ 3's Utils.service_config_override names.
ENV_OVERRIDES: dict[str, tuple[str, str, type]] = {
    "WEB_PORT": ("web", "port", int),
    "RABBITMQ_HOST": ("rabbitmq", "host", str),
    "RABBITMQ_PORT": ("rabbitmq", "port", int),
    "RABBITMQ_USER": ("rabbitmq", "user", str),
    "RABBITMQ_PASSWORD": ("rabbitmq", "password", str),
    "RABBITMQ_VHOST": ("rabbitmq", "virtual_host", str),
    "REDIS_HOST": ("redis", "host", str),
    "REDIS_PORT": ("redis", "port", int),
    "REDIS_PREFIX": ("redis", "prefix", str),
    "MONGO_URL": ("mongo", "url", str),
    "MONGO_DB": ("mongo", "db", str),
    "MASQUERADE_ADDRESS": ("ftp", "masquerade_address", str),
}


#: (section, old key) -> new key: renamed settings, still read under their old name with a warning.
RENAMED_KEYS: dict[tuple[str, str], str] = {
    ("limits", "downloads_per_host"): "per_host",
}


def config_path_from(option: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """The config.yml to use: the -c option, else $BIOMAJ_CONFIG, else ./config.yml."""
    environ = os.environ if environ is None else environ
    return Path(option or environ.get("BIOMAJ_CONFIG") or DEFAULT_CONFIG_NAME)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment and validate a config.yml; ConfigError on any problem."""
    environ = os.environ if environ is None else environ
    if not path.exists():
        raise ConfigError(
            f"{path}: no such configuration file; create one with `biomaj init ROOT` or pass -c/--config (or set BIOMAJ_CONFIG)"
        )
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a config.yml file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        raw = _parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: not valid YAML: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (web:, storage: ...), got {type(raw).__name__}")
    return config_from_mapping(raw, path, environ)


def _parse_yaml(text: str) -> Any:
    """``yaml.safe_load``, through libyaml when PyYAML was built with it (10 times faster: every
    ``biomaj ctl`` command reads config.yml). A document that libyaml refuses is read again by the
    pure-Python parser, whose errors (line, column, problem) are the ones reported."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return yaml.load(text, Loader=fast)  # noqa: S506 - CSafeLoader is the safe loader
        except yaml.YAMLError:
            pass
    return yaml.safe_load(text)


def config_from_mapping(raw: dict[str, Any], path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Validate an already parsed config mapping (after environment overrides)."""
    environ = os.environ if environ is None else environ
    where = str(path) if path else "config"
    raw = dict(raw)
    warnings = []
    for section in UPSTREAM_IGNORED_SECTIONS:
        if section in raw:
            raw.pop(section)
            warnings.append(f"{where}: section '{section}' is a BioMAJ 3 micro-service setting that biomaj does not use; ignored")
    for var, (section, key, kind) in ENV_OVERRIDES.items():
        value = environ.get(var)
        if not value:  # BioMAJ 3 counts a variable only when set and non-empty
            continue
        if kind is int:
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(f"environment {var}: expected an integer, got {value!r}") from None
        block = raw.get(section)
        block = dict(block) if isinstance(block, dict) else {}
        block[key] = value
        raw[section] = block
    for (section, old), new in RENAMED_KEYS.items():
        block = raw.get(section)
        if not isinstance(block, dict) or old not in block:
            continue
        block = dict(block)
        value = block.pop(old)
        if new in block:
            warnings.append(f"{where}: {section}.{old} is the old name of {section}.{new}, set too; {section}.{old} ignored")
        else:
            block[new] = value
            warnings.append(f"{where}: {section}.{old} is deprecated: name it {section}.{new}")
        raw[section] = block
    try:
        settings = ServiceConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(exc)}") from None
    return Config(settings, path, warnings)


#: Keys whose value an error message never repeats (a secret, a URL whose path may be one).
_UNSHOWN = ("secret", "password", "bind_password", "url", "webhook_proxy")


def _describe(exc: ValidationError) -> str:
    """One line per problem: the dotted key, what is expected, what was found (not for a secret,
    nor a whole section, which may hold one)."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        message = err["msg"][:1].lower() + err["msg"][1:]  # names and values in it keep their case
        if err["type"] == "extra_forbidden":
            parts.append(f"{key}: unknown key")
        elif isinstance(value, (dict, list)) or (err["loc"] and str(err["loc"][-1]) in _UNSHOWN):
            parts.append(f"{key}: {message}")
        else:
            parts.append(f"{key}: {message}, got {value!r}")
    return "; ".join(parts)


def iter_settings(model: type[BaseModel] = ServiceConfig, prefix: str = ""):
    """Yield (dotted key, default, description) for every leaf setting, in declaration order."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from iter_settings(annotation, f"{prefix}{name}.")
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        yield f"{prefix}{name}", default, field.description or ""
