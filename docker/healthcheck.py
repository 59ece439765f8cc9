"""The image's HEALTHCHECK: GET /healthz of this container's web actor, exit 0 when it answers ok.

Host and port come from the container's config.yml ($BIOMAJ_CONFIG) with its environment overrides
(WEB_PORT), read by biomaj itself; a wildcard host (0.0.0.0, ::) is asked on the loopback.
"""

import json
import sys
import urllib.request

from biomaj.config.service import config_path_from, load_config

try:
    web = load_config(config_path_from(None)).settings.web
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(web.host, web.host)
    if ":" in host:
        host = f"[{host}]"
    with urllib.request.urlopen(f"http://{host}:{web.port}/healthz", timeout=4) as answer:
        status = json.load(answer).get("status")
except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", said in one line
    sys.exit(f"unhealthy: {type(exc).__name__}: {exc}")
if status != "ok":
    sys.exit(f"unhealthy: /healthz says {status!r}")
print("healthy")
