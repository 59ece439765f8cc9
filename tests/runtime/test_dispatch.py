"""Work messages out, results back to the manager that asked, and a watchdog when nobody answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from biomaj.bus import MemoryBus, names
from biomaj.bus.messages import DownloadRequest, DownloadResult, FileOutcome, ProcessRequest, ProcessResult
from biomaj.runtime.dispatch import Downloads, Processes


def request(name: str) -> ProcessRequest:
    return ProcessRequest(job_id="j", bank="b", session_id="1", name=name, exe="true")


async def answer(bus: MemoryBus) -> None:
    """A stand-in worker: answers every process request on the queue the request names."""
    async with contextlib.aclosing(bus.consume(names.PROCESS)) as deliveries:
        async for delivery in deliveries:
            req = delivery.message
            await bus.publish(req.results_queue, ProcessResult(
                job_id=req.job_id, bank=req.bank, session_id=req.session_id, request_id=req.id, name=req.name,
                exit_code=0, ok=True))
            await delivery.ack()


async def test_two_managers_each_get_their_own_results():
    bus = MemoryBus()
    first, second = Processes(bus, "m1"), Processes(bus, "m2")
    await first.start()
    await second.start()
    worker = asyncio.create_task(answer(bus))
    try:
        seen: list[str] = []

        async def record(result):
            seen.append(result.name)

        got = await asyncio.gather(
            first.run_all([request("a"), request("b")], record, asyncio.Event()),
            second.run_all([request("c")], record, asyncio.Event()))
        assert sorted(r.name for r in got[0]) == ["a", "b"] and [r.name for r in got[1]] == ["c"]
        assert sorted(seen) == ["a", "b", "c"]
    finally:
        worker.cancel()
        await first.stop()
        await second.stop()
        await bus.close()


async def test_a_silent_work_queue_is_reported(caplog):
    bus = MemoryBus()
    dispatcher = Processes(bus, "m1")
    dispatcher.quiet_warning = 0.05
    await dispatcher.start()
    waiting = asyncio.create_task(dispatcher.run_one(request("a"), asyncio.Event()))
    try:
        with caplog.at_level(logging.WARNING, logger="biomaj.runtime.dispatch"):
            for _ in range(100):
                if any("is a worker running?" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
        assert any("1 request(s) waiting on biomaj.process" in r.getMessage() for r in caplog.records)
        assert not waiting.done()  # still waiting: work is never dropped
        worker = asyncio.create_task(answer(bus))
        result = await asyncio.wait_for(waiting, 5)
        assert result.ok and result.name == "a"
        worker.cancel()
    finally:
        waiting.cancel()
        await dispatcher.stop()
        await bus.close()


async def test_a_request_its_workers_give_up_on_fails_with_the_reason():
    """A message that fails every worker ends in the dead-letter queue; the workflow waiting for
    it gets a failed result at once, not silence."""
    bus = MemoryBus()
    dispatcher = Processes(bus, "m1")
    await dispatcher.start()

    async def crash_every_time() -> None:
        async with contextlib.aclosing(bus.consume(names.PROCESS)) as deliveries:
            async for delivery in deliveries:
                await delivery.nack(reason="worker crashed")

    worker = asyncio.create_task(crash_every_time())
    try:
        result = await asyncio.wait_for(dispatcher.run_one(request("poison"), asyncio.Event()), 10)
        assert not result.ok and result.name == "poison"
        assert f"given up after {names.DEFAULT_MAX_DELIVERIES} deliveries (worker crashed)" in result.error
        assert names.dead_letter_queue(names.PROCESS) in result.error
        [dead] = await bus.dead_letters(names.PROCESS)
        assert dead.message.name == "poison"
    finally:
        worker.cancel()
        await dispatcher.stop()
        await bus.close()


async def test_a_dead_lettered_batch_keeps_the_files_reported_complete():
    """A downloader that reports some files of a batch complete, then crashes on the batch every
    time: the batch ends dead-lettered, the files it finished stay complete, the others fail."""
    bus = MemoryBus()
    dispatcher = Downloads(bus, "m1")
    await dispatcher.start()
    batch = DownloadRequest(job_id="j", bank="b", session_id="1", remote={"protocol": "http"}, offline_dir="/o",
                            files=[{"path": "a", "save_as": "a"}, {"path": "b", "save_as": "b"}])

    async def finish_a_then_crash() -> None:
        async with contextlib.aclosing(bus.consume(names.DOWNLOAD)) as deliveries:
            async for delivery in deliveries:
                req = delivery.message
                await bus.publish(req.results_queue, DownloadResult(
                    job_id=req.job_id, bank=req.bank, session_id=req.session_id, request_id=req.id,
                    files=[FileOutcome("a", ok=True, size=1, skipped=delivery.attempts > 1).to_dict()], final=False))
                await delivery.nack(reason="worker crashed")

    seen: dict[str, FileOutcome] = {}

    async def on_result(result: DownloadResult) -> None:
        for outcome in result.outcomes():
            seen[outcome.save_as] = outcome

    worker = asyncio.create_task(finish_a_then_crash())
    try:
        [final] = await asyncio.wait_for(dispatcher.run_all([batch], on_result, asyncio.Event()), 10)
        assert [o.save_as for o in final.outcomes()] == ["b"]
        assert seen["a"].ok and not seen["b"].ok
        assert "given up after" in seen["b"].error
    finally:
        worker.cancel()
        await dispatcher.stop()
        await bus.close()
