"""RemoteConfig from bank properties, and to/from download messages (without secrets)."""

from __future__ import annotations

import posixpath
from dataclasses import asdict, fields
from typing import Any, Callable, Mapping
from urllib.parse import quote, urlencode, urlsplit

from biomaj.buckets import BANK_KEYS, bank_access
from biomaj.config.properties import BankProperties
from biomaj.config.settings import DEFAULTS
from biomaj.errors import ConfigError
from biomaj.protocols import DIRECT_PROTOCOLS
from biomaj.protocols.base import HttpParse, RemoteConfig
from biomaj.redaction import HIDDEN, is_secret

#: secret RemoteConfig parts -> the bank property holding them (for the main remote)
SECRET_PROPERTIES = {"credentials": "server.credentials", "proxy_auth": "proxy_auth"}

# BioMAJ's stock index regexps (its DEFAULTS and the ones global.properties.example ships): a bank
# that only carries one of these gets auto-detection, which parses them and Apache 2.4/nginx too.
_STOCK_DIR_LINES = {
    DEFAULTS["http.parse.dir.line"],
    r'<a[\s]+href="([\S]+)/".*alt="\[DIR\]">.*([\d]{2}-[\w\d]{2,5}-[\d]{4}\s[\d]{2}:[\d]{2})',
}
_STOCK_FILE_LINES = {
    DEFAULTS["http.parse.file.line"],
    r'<a[\s]+href="([\S]+)".*([\d]{2}-[\w\d]{2,5}-[\d]{4}\s[\d]{2}:[\d]{2})[\s]+([\d\.]+[MKG]{0,1})',
}


def _unquote(regexp: str | None) -> str | None:
    """``\\"`` and ``"`` mean the same in a regexp; global.properties.example writes the former."""
    return regexp.replace('\\"', '"') if regexp else regexp


def split_server(server: str, key: str = "server") -> tuple[str, int | None]:
    """``host[:port]`` -> (host, port); ConfigError on a bad port."""
    server = server.strip()
    if server.startswith("["):  # [ipv6]:port
        host, _, rest = server[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif server.count(":") == 1:
        host, _, port_text = server.partition(":")
    else:
        host, port_text = server, ""
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{key}={server!r}: expected host or host:port with a port from 1 to 65535")
    return host, int(port_text)


def split_credentials(value: str | None, key: str = "server.credentials") -> tuple[str | None, str | None]:
    """``user:password`` -> (user, password); the password may contain ':'."""
    if not value:
        return None, None
    user, sep, password = value.partition(":")
    if not sep:
        raise ConfigError(f"{key}: expected user:password")
    return user, password


def credentials_key(props: BankProperties, prefix: str = "") -> str | None:
    """The property holding the remote's ``user:password``, None when none is set: the release
    remote's own ``release.credentials``, else ``server.credentials`` (BioMAJ 3 falls back to the
    main keys for every ``release.*`` key)."""
    for key in ((f"{prefix}credentials",) if prefix else ()) + ("server.credentials",):
        if props.get(key):
            return key
    return None


def _http_parse(props: BankProperties) -> HttpParse:
    dir_line, file_line = props.get("http.parse.dir.line"), props.get("http.parse.file.line")
    if _unquote(dir_line) in _STOCK_DIR_LINES and _unquote(file_line) in _STOCK_FILE_LINES:
        return HttpParse(file_date_format=props.get("http.group.file.date_format"))
    return HttpParse(
        dir_line=dir_line,
        file_line=file_line,
        dir_name=props.get_int("http.group.dir.name"),
        dir_date=props.get_int("http.group.dir.date"),
        file_name=props.get_int("http.group.file.name"),
        file_date=props.get_int("http.group.file.date"),
        file_size=props.get_int("http.group.file.size"),
        file_date_format=props.get("http.group.file.date_format"),
    )


def remote_config(props: BankProperties, *, prefix: str = "") -> RemoteConfig:
    """The bank's remote (``prefix="release."`` for the release file's own remote, falling back
    to the main keys as BioMAJ 3 does)."""

    def get(key: str) -> str | None:
        return (props.get(prefix + key) if prefix else None) or props.get(key)

    protocol = (get("protocol") or "").lower()
    if not protocol:
        raise ConfigError(f"bank {props.name}: protocol is not set")
    remote_dir = get("remote.dir") or "/"
    options = {name: props.get(f"options.{name}") or "" for name in props.get_list("options.names")}
    if protocol == "s3":  # server is an endpoint, maybe a URL; the bucket's keys travel as options
        settings = {key: get(key) for key in BANK_KEYS}
        access = bank_access(get("server") or "", remote_dir, settings, prefix=prefix)
        endpoint = urlsplit(access.endpoint)
        host, port = endpoint.hostname or "", endpoint.port
        options.update({key: value for key, value in settings.items() if value})
        options["s3.endpoint"] = access.endpoint
    else:
        host, port = split_server(get("server") or "", prefix + "server")
    root, direct_file = remote_dir, ""
    if protocol in DIRECT_PROTOCOLS:
        path = remote_dir.rstrip("/")
        root, direct_file = posixpath.dirname(path) or "/", posixpath.basename(path)
    credentials = credentials_key(props, prefix)
    user, password = split_credentials(props.get(credentials) if credentials else None, credentials or "")
    names = props.get_list("url.params") if not prefix else []
    params = {name: props.get(f"{name}.value") or "" for name in names}
    timeout = props.get_int("timeout.download")
    return RemoteConfig(
        protocol=protocol,
        host=host,
        port=port,
        root=root if protocol != "local" or root else "/",
        direct_file=direct_file,
        user=user,
        password=password,
        method=(get("url.method") or "GET").upper(),
        params=params,
        proxy=get("proxy"),
        proxy_auth=get("proxy_auth"),
        read_timeout=float(timeout) if timeout else 300.0,
        options=options,
        http_parse=_http_parse(props),
    )


_SECRET_FIELDS = {"password", "proxy_auth"}


def to_message(config: RemoteConfig) -> dict[str, Any]:
    """The RemoteConfig fields for a DownloadRequest, secrets left out."""
    doc = asdict(config)
    for name in _SECRET_FIELDS:
        doc.pop(name, None)
    doc["params"] = dict(config.params)
    doc["options"] = dict(config.options)
    return doc


def from_message(doc: Mapping[str, Any], secrets: Mapping[str, str], read_secret: Callable[[str], str | None]) -> RemoteConfig:
    """Rebuild a RemoteConfig; `read_secret(property)` reads a secret from the bank file."""
    known = {f.name for f in fields(RemoteConfig)}
    values = {k: v for k, v in doc.items() if k in known and k not in _SECRET_FIELDS}
    values["http_parse"] = HttpParse(**(doc.get("http_parse") or {}))
    if "credentials" in secrets:
        user, password = split_credentials(read_secret(secrets["credentials"]), secrets["credentials"])
        values["user"], values["password"] = user, password
    if "proxy_auth" in secrets:
        values["proxy_auth"] = read_secret(secrets["proxy_auth"])
    return RemoteConfig(**values)


def remote_url(config: RemoteConfig, path: str) -> str | None:
    """The URL of the remote file ``path`` (relative to the config's root) as records keep it: no
    credentials, the value of a secret-looking GET parameter hidden. None for ``protocol=local``:
    its remote is a path of this server, which a published record must not tell."""
    if config.protocol == "local":
        return None
    full = posixpath.join(config.root.strip("/"), path.lstrip("/"))
    url = f"{config.server_url}/{quote(full)}"
    if config.params and config.method == "GET":
        shown = {name: HIDDEN if is_secret(name, value) else value for name, value in config.params.items()}
        url += "?" + urlencode(shown, safe="*")
    return url
