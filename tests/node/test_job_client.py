"""The job client of `biomaj ctl`: a job nobody runs is reported, and stays cancellable."""

from __future__ import annotations

import asyncio
import logging

from biomaj.bus import MemoryBus
from biomaj.node import job_client
from biomaj.node.job_client import JobClient
from biomaj.state import MemoryState
from biomaj.storage import open_store


async def test_a_job_nobody_runs_is_reported_once_then_cancelled(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(job_client, "QUEUED_WARNING", 0.3)
    monkeypatch.setattr(job_client, "STORE_POLL", 0.05)
    client = JobClient(open_store("", tmp_path), MemoryBus(), MemoryState(), "alice")  # no manager anywhere
    submitted: list[str] = []
    async with client:
        with caplog.at_level(logging.WARNING, logger="biomaj.node.job_client"):
            running = asyncio.create_task(client.run_job("update", "example", {}, on_submitted=submitted.append))
            async with asyncio.timeout(10):
                while not any("still queued" in r.getMessage() for r in caplog.records):
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # more polls: still one warning
            warnings = [r.getMessage() for r in caplog.records if "still queued" in r.getMessage()]
            assert len(warnings) == 1 and f"(job {submitted[0]})" in warnings[0]
            assert "limits.jobs" in warnings[0]  # what to check
            assert not running.done()
            await client.cancel(submitted[0])
            job = await asyncio.wait_for(running, 5)
    assert (job["state"], job["user"]) == ("cancelled", "alice")
