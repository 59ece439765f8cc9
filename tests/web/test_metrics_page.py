"""The /metrics text for a fixed set of jobs, nodes, queues, actors, files and requests: every
family, its help, labels and values, byte for byte as tests/web/metrics_page.txt keeps it (the
page as it was before the collector was split into one generator per family)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from biomaj import __version__
from biomaj.runtime.metrics_hooks import ActorCounts, MetricsHooks
from biomaj.web.metrics import Metrics

GOLDEN = Path(__file__).with_name("metrics_page.txt")

JOBS = [  # newest first, as list_jobs gives them
    {"id": "j6", "kind": "update", "bank": "pdb", "state": "running", "started": 500.0},
    {"id": "j5", "kind": "remove", "bank": "alu", "state": "queued"},
    {"id": "j4", "kind": "release-check", "bank": "alu", "state": "cancelled", "started": 300.0, "finished": 301.0},
    {"id": "j3", "kind": "update", "bank": "pdb", "state": "failed", "started": 200.0, "finished": 290.0},
    {"id": "j2", "kind": "update", "bank": "alu", "state": "done", "started": 100.0, "finished": 112.5},
    {"id": "j1", "kind": "update", "bank": "alu", "state": "done", "started": 10.0, "finished": 14.0},
]


class Store:
    async def list_jobs(self, state=None, limit=None, **_filters):
        states = (state,) if isinstance(state, str) else tuple(state or ())
        jobs = [job for job in JOBS if not states or job["state"] in states]
        return jobs if limit is None else jobs[:limit]

    async def get_job(self, job_id):
        return next((job for job in JOBS if job["id"] == job_id), None)


class State:
    async def nodes(self):
        return [SimpleNamespace(roles=("manager", "download", "process")), SimpleNamespace(roles=("download",))]


class Bus:
    async def queue_depths(self):
        return {("biomaj.download", "ready"): 4, ("biomaj.download", "unacked"): 2,
                ("biomaj.download.dead", "ready"): 1, ("biomaj.jobs", "ready"): 0}


def node():
    counted = MetricsHooks()
    for counts in (ActorCounts("manager", 5, 1, 1), ActorCounts("downloader", 120, 3, 4)):
        counted.actors[counts.name] = counts
    return SimpleNamespace(store=Store(), state=State(), bus=Bus(), actor_metrics=counted,
                           actors=[SimpleNamespace(name="manager"), SimpleNamespace(name="web")])


def event(transferred: int, **files: int):
    """A downloader's event for one result message: files counted by outcome."""
    return SimpleNamespace(kind="download", state="failed" if files.get("failed") else "done", message="",
                           progress={"batch": "r1", "files": files, "bytes": transferred})


async def page(public: bool, bare: bool = False) -> str:
    """The page of a node (or of a ``bare`` one: no store, state, bus nor actors)."""
    metrics = Metrics(SimpleNamespace() if bare else node(), public=public)
    for one in (event(1000, downloaded=1, skipped=1), event(10, failed=1, cancelled=1),
                event(0, bogus=3, failed="x")):
        metrics.count_file(one)
    metrics.count_request("GET", "/api/v1/banks", 200, 0.02)
    metrics.count_request("GET", "/api/v1/banks", 200, 0.3)
    metrics.count_request("POST", "/api/v1/banks/{bank}/update", 202, 0.07)
    metrics.count_request("BREW", "unmatched", 404, 0.001)
    metrics.count_request("GET", "/api/v1/jobs/{job_id}", 503, 6.0)
    await metrics.refresh()
    return metrics.render().decode().replace(f'version="{__version__}"', 'version="VERSION"')


CASES = {"public": dict(public=True), "private": dict(public=False), "bare": dict(public=True, bare=True)}


@pytest.mark.parametrize("case", CASES)
async def test_the_metrics_page_is_unchanged(case):
    golden = dict(zip(CASES, GOLDEN.read_text().split("\n--- next ---\n")))
    assert await page(**CASES[case]) == golden[case]
