"""Operations: `/metrics` (Prometheus), request logs, CORS and the request size limit.

``setup(app)`` (called last by ``create_app``) adds, from the node's ``web`` settings:

* ``GET /metrics``: Prometheus text, from a registry of this app (never the process-wide default
  one, so that several apps in one process do not mix). Most values are read when scraped from
  the node's live objects: finished and active jobs from the store (every manager of the
  installation writes there), nodes and roles from the state's registry, queue depths from the
  bus where it can tell, and this node's actors' counters (its MetricsHooks). Files and bytes downloaded come from
  the downloaders' events (``job.*.files``), seen cluster-wide through the bus. Request
  counts and durations are counted by the request middleware. Bank names never appear in
  labels while ``web.metrics_public`` is true (anyone may scrape, and a private bank's name is
  private); with it false an admin key is needed and per-bank series are added.
* a request log: one line per request (method, path, status, duration, user) on the logger
  ``biomaj.web.access``, at INFO (DEBUG for ``/healthz``, ``/readyz`` and ``/metrics``); never the
  query string, the API key or any header.
* CORS on ``/api/...`` for ``web.cors_origins`` (off when empty), preflights included.
* ``web.max_request_bytes``: a larger body gets a JSON 413.

Middleware order, outermost first: request log, CORS, JSON errors, identity (``app.py``), size
limit. So the log and CORS see the final answer, errors included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter as Tally
from typing import Any, Awaitable, Callable, Iterable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from biomaj import __version__
from biomaj.errors import ConfigError
from biomaj.jobs import JOB_KINDS

from .auth import identity_of
from .context import NODE_KEY

log = logging.getLogger(__name__)
access_log = logging.getLogger("biomaj.web.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: answered often by probes and scrapers: logged at DEBUG
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
JOB_RESULTS = ("done", "failed", "cancelled")
FILE_RESULTS = ("downloaded", "skipped", "failed", "cancelled")
ERROR_SOURCES = ("job", "download", "http", "actor")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
#: seconds: a bank update takes from seconds (nothing new) to hours
JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400, float("inf"))
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))
SOURCE_TIMEOUT = 5.0  # seconds one backend may take to answer a scrape
CORS_METHODS = "GET, HEAD, POST, PUT, DELETE, PATCH"
CORS_HEADERS = ("authorization", "x-api-key", "content-type")
CORS_MAX_AGE = "600"
#: the classic text format every Prometheus server reads
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def setup(app: web.Application) -> None:
    """Add the operations routes and middlewares to ``app`` (before it starts)."""
    settings = _web_settings(app[NODE_KEY])
    metrics = Metrics(app[NODE_KEY], public=settings.metrics_public)
    app[METRICS_KEY] = metrics
    origins = cors_origins(settings.cors_origins)
    # inserted in reverse: the request log ends up outermost, then CORS, then app.py's own
    if origins:
        Cors(origins).add_to(app)
    app.middlewares.insert(0, observe)
    app.middlewares.append(size_limit(settings.max_request_bytes))
    app.router.add_get("/metrics", metrics_page)
    app.on_startup.append(metrics.start)
    app.on_cleanup.append(metrics.stop)


def _web_settings(node: Any):
    from biomaj.config.service import WebSettings

    config = getattr(node, "config", None)
    settings = getattr(getattr(config, "settings", None), "web", None)
    return settings if isinstance(settings, WebSettings) else WebSettings()


# --- /metrics --------------------------------------------------------------------------------


class Metrics:
    """The metrics of one app: tallies kept here, values read from the node when scraped."""

    def __init__(self, node: Any, *, public: bool = True) -> None:
        self.node = node
        self.public = public
        self.registry = CollectorRegistry()
        self.jobs: Tally[tuple[str, str]] = Tally()  # (kind, result) -> finished jobs
        self.bank_jobs: Tally[tuple[str, str, str]] = Tally()  # (bank, kind, result), admin-only
        self.bank_last_update: dict[str, float] = {}  # bank -> end of its last successful update
        self.files: Tally[str] = Tally()  # result -> files
        self.bytes = 0
        self.http: Tally[tuple[str, str, str]] = Tally()  # (method, route, status) -> requests
        self.http_errors = 0  # answers >= 500
        self.job_duration = Histograms(JOB_BUCKETS)  # (kind,) -> run time of finished jobs
        self.http_duration = Histograms(HTTP_BUCKETS)  # (method, route) -> time to answer
        self.registry.register(_Collector(self))
        self._tracker = JobTracker()
        self._lock = asyncio.Lock()
        self._snapshot: dict[str, Any] = {}
        self._subscription: Any = None
        self._reader: asyncio.Task | None = None

    # lifecycle: follow the downloaders' events while the app runs
    async def start(self, _app: web.Application | None = None) -> None:
        bus = getattr(self.node, "bus", None)
        if bus is None:
            return
        try:
            self._subscription = await bus.subscribe("job.*.files", buffer=10000)
        except Exception as exc:  # noqa: BLE001 - metrics are optional; the API must still serve
            log.warning("metrics: cannot follow download events, file and byte counters stay at 0: %s", exc)
            return
        self._reader = asyncio.create_task(self._read_events(self._subscription), name="metrics-download-events")

    async def stop(self, _app: web.Application | None = None) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.close()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def _read_events(self, subscription: Any) -> None:
        try:
            async for event in subscription:
                if getattr(event, "kind", None) == "download":
                    self.count_file(event)
        except Exception as exc:  # noqa: BLE001 - the bus went away: the counters stop, the API goes on
            log.warning("metrics: stopped following download events: %s", exc)

    def count_file(self, event: Any) -> None:
        """One download result's event: ``progress.files`` counts files by outcome (downloaded,
        skipped, failed, cancelled), ``progress.bytes`` the bytes transferred."""
        progress = event.progress or {}
        transferred = progress.get("bytes") or 0
        if isinstance(transferred, (int, float)) and not isinstance(transferred, bool) and transferred > 0:
            self.bytes += int(transferred)
        counts = progress.get("files")
        if not isinstance(counts, dict):
            return
        for outcome, n in counts.items():
            if outcome in ("downloaded", "skipped", "failed", "cancelled") and type(n) is int and n > 0:
                self.files[outcome] += n

    def count_request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in HTTP_METHODS else "other"
        self.http[(method, route, str(status))] += 1
        self.http_duration.observe((method, route), seconds)
        if status >= 500:
            self.http_errors += 1

    def count_job(self, job: dict) -> None:
        kind, result, bank = str(job.get("kind")), str(job.get("state")), str(job.get("bank"))
        self.jobs[(kind, result)] += 1
        started, finished = job.get("started"), job.get("finished")
        if _number(started) and _number(finished) and finished >= started:
            self.job_duration.observe((kind,), finished - started)
        if not self.public:
            self.bank_jobs[(bank, kind, result)] += 1
            dry_run = bool((job.get("options") or {}).get("dry_run"))  # looked, made nothing
            if kind == "update" and result == "done" and _number(finished) and not dry_run:
                self.bank_last_update[bank] = max(finished, self.bank_last_update.get(bank, 0.0))

    async def refresh(self) -> None:
        """Read the store, the state and the bus; each one may fail alone (its source is down)."""
        async with self._lock:
            node = self.node
            snapshot: dict[str, Any] = {"up": {}}
            store, state, bus = (getattr(node, name, None) for name in ("store", "state", "bus"))
            if store is not None:
                jobs = await _read(snapshot, "store", "the jobs from the store", self._tracker.read(store))
                if jobs is not None:
                    finished, active = jobs
                    for job in finished:
                        self.count_job(job)
                    snapshot["active"] = Tally(str(job.get("state")) for job in active)
            if state is not None:
                snapshot["nodes"] = await _read(snapshot, "state", "the nodes from the state", state.nodes())
            if bus is not None:
                snapshot["queues"] = await _read(snapshot, "bus", "the queue depths from the bus", bus.queue_depths())
            counted = getattr(node, "actor_metrics", None)  # the node's MetricsHooks (runtime/metrics_hooks.py)
            snapshot["actors"] = list(counted.actors.values()) if counted is not None else []
            self._snapshot = {k: v for k, v in snapshot.items() if v is not None}

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def _read(snapshot: dict[str, Any], source: str, what: str, reading: Awaitable[Any]) -> Any:
    """``reading``'s value within SOURCE_TIMEOUT, with ``snapshot["up"][source]`` saying whether
    it came; None (and a warning) when the source failed."""
    try:
        async with asyncio.timeout(SOURCE_TIMEOUT):
            value = await reading
    except Exception as exc:  # noqa: BLE001 - a source that is down must not break /metrics
        log.warning("metrics: cannot read %s: %s", what, exc or type(exc).__name__)
        snapshot["up"][source] = False
        return None
    snapshot["up"][source] = True
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Histograms:
    """Cumulative bucket counts, sum and count per label values (no ``_created`` series)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = buckets
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}  # labels -> (counts, [sum])

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        counts, total = self.series.setdefault(labels, ([0] * len(self.bounds), [0.0]))
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                counts[i] += 1
        total[0] += value

    def family(self, name: str, documentation: str, labels: list[str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=labels)
        for values, (counts, total) in sorted(self.series.items()):
            buckets = [("+Inf" if bound == float("inf") else repr(float(bound)), count) for bound, count in zip(self.bounds, counts)]
            family.add_metric(list(values), buckets, total[0])
        return family


class _Collector:
    """Builds the metric families from the tallies and the last snapshot, at each scrape: one
    small generator per family, or per group of families fed by the same values (:data:`FAMILIES`)."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # collected at scrape time only

    def collect(self) -> Iterable[Metric]:
        m, snap = self.m, self.m._snapshot
        for families in FAMILIES:
            yield from families(m, snap)


Snapshot = dict[str, Any]


def _build_info(_m: Metrics, _snap: Snapshot) -> Iterator[Metric]:
    info = GaugeMetricFamily("biomaj_build_info", "The biomaj version serving these metrics (value 1).", labels=["version"])
    info.add_metric([__version__], 1)
    yield info


def _jobs(m: Metrics, _snap: Snapshot) -> Iterator[Metric]:
    """Finished jobs (read from the store): by kind and result, the updates alone, their run time."""
    jobs = CounterMetricFamily("biomaj_jobs", "Finished jobs of every manager (read from the store), by kind and result.",
                               labels=["kind", "result"])
    updates = CounterMetricFamily("biomaj_updates", "Finished bank updates (jobs of kind update), by result.", labels=["result"])
    kinds = sorted(set(JOB_KINDS) | {kind for kind, _ in m.jobs})
    for kind in kinds:
        for result in sorted(set(JOB_RESULTS) | {r for k, r in m.jobs if k == kind}):
            jobs.add_metric([kind, result], m.jobs[(kind, result)])
    for result in JOB_RESULTS:
        updates.add_metric([result], m.jobs[("update", result)])
    yield jobs
    yield updates
    yield m.job_duration.family("biomaj_job_duration_seconds", "Run time of finished jobs (started to finished), by kind.",
                                ["kind"])


def _active_jobs(_m: Metrics, snap: Snapshot) -> Iterator[Metric]:
    if "active" in snap:
        active = GaugeMetricFamily("biomaj_jobs_active", "Jobs queued (waiting for a manager) or running, from the store.",
                                   labels=["state"])
        for state in ("queued", "running"):
            active.add_metric([state], snap["active"][state])
        yield active


def _downloads(m: Metrics, _snap: Snapshot) -> Iterator[Metric]:
    """Files and bytes, from the downloaders' events."""
    files = CounterMetricFamily("biomaj_download_files", "Files handled by the downloaders (their events, "
                                "seen since this web process started), by result.", labels=["result"])
    for result in FILE_RESULTS:
        files.add_metric([result], m.files[result])
    yield files
    yield CounterMetricFamily("biomaj_download_bytes", "Bytes transferred by the downloaders (their events, since this "
                              "web process started).", value=m.bytes)


def _errors(m: Metrics, snap: Snapshot) -> Iterator[Metric]:
    errors = CounterMetricFamily("biomaj_errors", "Errors by source: failed jobs, failed file downloads, answers >= 500 "
                                 "of this web app, messages whose handler raised in this node's actors.", labels=["source"])
    errors.add_metric(["job"], sum(n for (_, result), n in m.jobs.items() if result == "failed"))
    errors.add_metric(["download"], m.files["failed"])
    errors.add_metric(["http"], m.http_errors)
    errors.add_metric(["actor"], sum(a.failed for a in snap.get("actors", [])))
    yield errors


def _nodes(_m: Metrics, snap: Snapshot) -> Iterator[Metric]:
    """The live nodes of the state's registry: per role, and all of them."""
    from biomaj.config.roles import ROLES

    if "nodes" in snap:
        nodes = GaugeMetricFamily("biomaj_nodes", "Live nodes (state registry) hosting each role.", labels=["role"])
        roles = Tally(role for node in snap["nodes"] for role in node.roles)
        for role in sorted(set(ROLES) | set(roles)):
            nodes.add_metric([role], roles[role])
        yield nodes
        yield GaugeMetricFamily("biomaj_nodes_registered", "Live nodes in the state registry.", value=len(snap["nodes"]))


def _queues(_m: Metrics, snap: Snapshot) -> Iterator[Metric]:
    if snap.get("queues"):
        queues = GaugeMetricFamily("biomaj_bus_queue_messages", "Messages in the bus queues (dead-letter queues end in "
                                   ".dead): ready, and unacked where the bus can tell.", labels=["queue", "state"])
        for (queue, state), count in sorted(snap["queues"].items()):
            queues.add_metric([queue, state], count)
        yield queues


def _actors(_m: Metrics, snap: Snapshot) -> Iterator[Metric]:
    """This node's actors (the ActorCounts of its MetricsHooks): messages handled by outcome, and in flight."""
    actors = snap.get("actors", [])
    if actors:
        handled = CounterMetricFamily("biomaj_actor_messages", "Messages handled by this node's actors, by outcome.",
                                      labels=["actor", "outcome"])
        in_flight = GaugeMetricFamily("biomaj_actor_in_flight", "Messages being handled by this node's actors.", labels=["actor"])
        for actor in actors:
            handled.add_metric([actor.name, "succeeded"], actor.succeeded)
            handled.add_metric([actor.name, "failed"], actor.failed)
            in_flight.add_metric([actor.name], actor.in_flight)
        yield handled
        yield in_flight


def _http(m: Metrics, _snap: Snapshot) -> Iterator[Metric]:
    """The requests this web app answered: counts and durations."""
    http = CounterMetricFamily("biomaj_http_requests", "Requests answered by this web app, by method, route template "
                               "and status.", labels=["method", "route", "status"])
    for (method, route, status), count in sorted(m.http.items()):
        http.add_metric([method, route, status], count)
    yield http
    yield m.http_duration.family("biomaj_http_request_duration_seconds",
                                 "Time to answer a request, by method and route template.", ["method", "route"])


def _sources_up(_m: Metrics, snap: Snapshot) -> Iterator[Metric]:
    up = GaugeMetricFamily("biomaj_metrics_source_up", "1 when the backend answered this scrape, 0 when it failed.",
                           labels=["source"])
    for source, ok in sorted(snap.get("up", {}).items()):
        up.add_metric([source], 1 if ok else 0)
    yield up


def _banks(m: Metrics, _snap: Snapshot) -> Iterator[Metric]:
    """Per-bank series, only when the metrics are not public (a private bank's name is private)."""
    if not m.public:
        bank_jobs = CounterMetricFamily("biomaj_bank_jobs", "Finished jobs by bank, kind and result (admin-only metrics).",
                                        labels=["bank", "kind", "result"])
        for (bank, kind, result), count in sorted(m.bank_jobs.items()):
            bank_jobs.add_metric([bank, kind, result], count)
        yield bank_jobs
        last = GaugeMetricFamily("biomaj_bank_last_update_timestamp_seconds", "End of the last successful update of "
                                 "each bank, epoch seconds (admin-only metrics).", labels=["bank"])
        for bank, when in sorted(m.bank_last_update.items()):
            last.add_metric([bank], when)
        yield last


#: The families of /metrics, in the order of the page.
FAMILIES: tuple[Callable[[Metrics, Snapshot], Iterator[Metric]], ...] = (
    _build_info, _jobs, _active_jobs, _downloads, _errors, _nodes, _queues, _actors, _http, _sources_up, _banks,
)


class JobTracker:
    """Finds the jobs that finished since the last read, without reading the whole job table
    each time: the newest finished jobs (``list_jobs`` gives newest first) down to the first one
    already seen, plus the jobs seen active last time that are no longer active.

    The first read takes every finished job, so the counters start from the store's history.
    """

    WINDOW = 200

    def __init__(self) -> None:
        self.window: list[str] | None = None  # ids of the newest finished jobs at the last read
        self.active: set[str] = set()  # ids of the jobs queued or running at the last read
        self.counted: list[set[str]] = [set(), set()]  # ids counted by the last two reads

    async def read(self, store: Any) -> tuple[list[dict], list[dict]]:
        """(jobs finished since the last read, jobs active now)."""
        from biomaj.storage.base import ACTIVE_JOB_STATES, FINAL_JOB_STATES

        active = await store.list_jobs(state=ACTIVE_JOB_STATES, limit=None)
        active_ids = {job["id"] for job in active}
        previous = set(self.window or ())
        if not previous:
            window = await store.list_jobs(state=FINAL_JOB_STATES, limit=None)
        else:
            limit = self.WINDOW
            while True:
                window = await store.list_jobs(state=FINAL_JOB_STATES, limit=limit)
                if len(window) < limit or any(job["id"] in previous for job in window):
                    break
                limit *= 4
        recent = self.counted[0] | self.counted[1]
        new: dict[str, dict] = {}
        for job in window:
            if job["id"] in previous:
                break  # older ones were counted already, or were active (below)
            if job["id"] not in recent:
                new[job["id"]] = job
        for job_id in self.active - active_ids - new.keys() - recent - previous:
            job = await store.get_job(job_id)
            if job is not None and job.get("state") in FINAL_JOB_STATES:
                new[job_id] = job
        self.window = [job["id"] for job in window[: self.WINDOW]]
        self.active = active_ids
        self.counted = [set(new), self.counted[0]]
        return list(new.values()), active


async def metrics_page(request: web.Request) -> web.Response:
    """Prometheus text format; an admin key is needed when ``web.metrics_public`` is false."""
    metrics = request.app[METRICS_KEY]
    if not metrics.public:
        who = identity_of(request)
        if who is None:
            raise web.HTTPUnauthorized(reason="metrics are not public (web.metrics_public): an admin API key is needed",
                                       headers={"WWW-Authenticate": 'APIKEY realm="biomaj"'})
        if not who.admin:
            raise web.HTTPForbidden(reason="admin rights needed")
    await metrics.refresh()
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})


METRICS_KEY = web.AppKey("metrics", Metrics)


# --- request log and request metrics ----------------------------------------------------------


def route_of(request: web.Request) -> str:
    """The route template (``/api/v1/banks/{bank}``), never the path: no bank name in labels, and
    a fuzzer cannot create a series per URL. ``unmatched`` for 404 and 405."""
    try:
        resource = request.match_info.route.resource
    except (AssertionError, AttributeError):  # not resolved yet
        resource = None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # only redirects get past json_errors
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # cancelled before its answer (nginx's "client closed request")
        raise
    finally:
        seconds = time.perf_counter() - started
        metrics = request.app.get(METRICS_KEY)
        route = route_of(request)
        if metrics is not None:
            metrics.count_request(request.method, route, status, seconds)
        who = identity_of(request)
        level = logging.DEBUG if request.path in QUIET_PATHS else logging.INFO
        if access_log.isEnabledFor(level):
            user = who.name if who is not None else "anonymous"
            path = request.rel_url.raw_path  # as sent, percent-encoded: no CR/LF can forge a log line
            access_log.log(level, "%s %s %d %.1f ms %s", request.method, path, status, seconds * 1000, user,
                           extra={"method": request.method, "path": path, "route": route, "status": status,
                                  "duration_ms": round(seconds * 1000, 2), "user": user, "remote": request.remote})


# --- CORS -------------------------------------------------------------------------------------


def cors_origins(origins: Iterable[str]) -> frozenset[str]:
    """``web.cors_origins`` checked: ``scheme://host[:port]`` each (a trailing / is dropped), or ``*``."""
    clean = set()
    for origin in origins:
        value = origin.strip().rstrip("/")
        if value != "*" and not re.fullmatch(r"[a-z][a-z0-9+.-]*://[^/\s?#]+", value, re.IGNORECASE):
            raise ConfigError(f"web.cors_origins: {origin!r} is not an origin (scheme://host[:port], or *)")
        clean.add(value.lower() if value != "*" else value)
    return frozenset(clean)


def vary_origin(headers: Any) -> None:
    if "origin" not in headers.get("Vary", "").lower():
        headers.add("Vary", "Origin")


class Cors:
    """CORS for ``/api/...``: a listed origin is echoed, with credentials allowed; ``*`` allows any
    origin, never with credentials. The headers are added when the answer is prepared (errors and
    event streams included); a preflight (OPTIONS with Access-Control-Request-Method) from an
    allowed origin is answered 204 at once, without authentication; one from another origin goes
    on to the router, and gets no CORS header."""

    def __init__(self, origins: frozenset[str]) -> None:
        self.origins = origins
        self.any_origin = "*" in origins

    def allowed(self, request: web.BaseRequest) -> str | None:
        """The Access-Control-Allow-Origin value for ``request``, or None."""
        origin = request.headers.get("Origin")
        if not origin or not request.path.startswith("/api/"):
            return None
        if origin.lower() in self.origins:
            return origin
        return "*" if self.any_origin else None

    def add_to(self, app: web.Application) -> None:
        app.middlewares.insert(0, self.preflight)
        app.on_response_prepare.append(self.on_prepare)

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        if not request.path.startswith("/api/"):
            return
        allow = self.allowed(request)
        if allow is None or allow != "*":
            vary_origin(response.headers)  # the answer depends on the Origin header
        if allow is None:
            return
        response.headers["Access-Control-Allow-Origin"] = allow
        if allow != "*":
            response.headers["Access-Control-Allow-Credentials"] = "true"
        if request.method != "OPTIONS":
            response.headers["Access-Control-Expose-Headers"] = "WWW-Authenticate, Retry-After, Allow"

    @web.middleware
    async def preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers \
                or self.allowed(request) is None:
            return await handler(request)
        response = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
        asked = [h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",")]
        granted = [h for h in asked if h in CORS_HEADERS]
        if granted:
            response.headers["Access-Control-Allow-Headers"] = ", ".join(granted)
        response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE
        return response


# --- request size limit -----------------------------------------------------------------------


def size_limit(limit: int) -> Handler:
    """Refuse a body over ``limit`` bytes with 413: at once from its Content-Length, else (chunked)
    when the handler reads past the limit (the request is cloned with that limit)."""

    @web.middleware
    async def size_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length,
                                                reason=f"request body over {limit} bytes (web.max_request_bytes)")
        if request.client_max_size != limit:
            request = request.clone(client_max_size=limit)
        return await handler(request)

    return size_limit_middleware
