"""The processor actor on the real in-process bus and state, running real scripts."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from biomaj.actors.processor import ProcessorActor, ProcessorSettings
from biomaj.bus import MemoryBus, names
from biomaj.bus.messages import CancelJob, JobEvent, ProcessRequest, ProcessResult
from biomaj.runtime.metrics_hooks import MetricsHooks
from biomaj.state import MemoryState
from tests.bus.note import Note
from tests.process.procs import running

RESULTS = names.PROCESS_RESULTS + ".manager1"  # a manager's own results queue
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
TREE = 'echo $$ > "$1"\nsleep 60 &\necho $! >> "$1"\nwait\n'  # leader + one child, both asleep


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def request(tmp_path: Path, exe: Path, *args: str, **extra) -> ProcessRequest:
    fields = dict(
        job_id="job1", bank="demo", session_id="s1", name="META0_PROC0", exe=str(exe), args=list(args),
        env={"PATH": SYSTEM_PATH, "dbname": "demo"}, log_dir=str(tmp_path / "logs"), cwd=str(tmp_path),
        shell_expand=False, results_queue=RESULTS, phase="postprocess",
    )
    fields.update(extra)
    return ProcessRequest(**fields)




async def pids_of(path: Path) -> tuple[int, int]:
    """Wait until the script wrote its own pid and its child's, and return them."""
    async with asyncio.timeout(10):
        while not (path.exists() and len(path.read_text().split()) >= 2):
            await asyncio.sleep(0.02)  # polling a file the child process writes
    leader, child = map(int, path.read_text().split())
    return leader, child


async def next_result(bus, queue: str = RESULTS) -> ProcessResult:
    async with asyncio.timeout(20):
        async for delivery in bus.consume(queue):
            await delivery.ack()
            return delivery.message
    raise AssertionError("no result")


async def next_event(events) -> JobEvent:
    async with asyncio.timeout(5):
        return await anext(aiter(events))


@pytest.fixture
async def rig():
    bus, state = MemoryBus(), MemoryState()
    await bus.declare_queue(names.PROCESS)
    await bus.declare_queue(RESULTS)  # the manager declares its results queue before asking
    events = await bus.subscribe("job.#")
    actor = ProcessorActor(bus, ProcessorSettings(concurrency=2, grace=5, node_id="n1"), state=state,
                           hooks=[MetricsHooks()])
    await actor.start()
    yield bus, state, actor, events
    await actor.stop()
    await events.close()
    await bus.close()


async def test_a_process_result_with_metadata_reaches_the_results_queue(rig, tmp_path):
    bus, _state, _actor, events = rig
    exe = script(tmp_path / "post.sh", (
        'echo "building $dbname"\n'
        "echo '##BIOMAJ#blast#nucleic#organism:hg19,chr:chr1#blast/chr1/chr1db'\n"
    ))
    req = request(tmp_path, exe)
    await bus.publish(names.PROCESS, req)
    result = await next_result(bus)
    await bus.join(names.PROCESS, timeout=10)  # acked once the result was out
    assert result.ok and result.exit_code == 0 and result.error == ""
    assert (result.job_id, result.bank, result.session_id, result.name) == ("job1", "demo", "s1", "META0_PROC0")
    assert result.request_id == req.id and result.node_id == "n1" and result.elapsed > 0
    assert result.metadata == [{"format": "blast", "types": ["nucleic"], "tags": {"organism": "hg19", "chr": "chr1"},
                                "files": ["blast/chr1/chr1db"]}]
    assert (tmp_path / "logs" / "META0_PROC0.out").read_text().startswith("building demo\n")
    event = await next_event(events)
    assert isinstance(event, JobEvent) and event.kind == "process" and event.state == "done"
    assert event.step == "postprocess" and event.job_id == "job1"
    assert event.progress == {"process": "META0_PROC0", "ok": True, "exit_code": 0}


async def test_the_processor_declares_a_results_queue_nobody_declared_yet(rig, tmp_path):
    bus, *_ = rig
    exe = script(tmp_path / "ok.sh", "exit 0\n")
    req = request(tmp_path, exe, results_queue=names.PROCESS_RESULTS + ".late")
    await bus.publish(names.PROCESS, req)
    await bus.join(names.PROCESS, timeout=10)  # acked: the result was published first
    assert await bus.dead_letters(names.PROCESS) == []
    result = await next_result(bus, names.PROCESS_RESULTS + ".late")
    assert result.ok and result.request_id == req.id


async def test_a_failing_process_is_a_failed_result_not_a_redelivery(rig, tmp_path):
    bus, _state, actor, events = rig
    exe = script(tmp_path / "fail.sh", "echo 'makeblastdb: no such file chr1.fa' >&2\nexit 2\n")
    await bus.publish(names.PROCESS, request(tmp_path, exe, phase="preprocess"))
    result = await next_result(bus)
    await bus.join(names.PROCESS, timeout=10)
    assert not result.ok and result.exit_code == 2
    assert result.error == "META0_PROC0 exited with code 2: makeblastdb: no such file chr1.fa"
    assert await bus.dead_letters(names.PROCESS) == [] and actor.hooks[0].actors["processor"].succeeded == 1
    event = await next_event(events)
    assert event.state == "failed" and event.step == "preprocess"
    assert event.progress == {"process": "META0_PROC0", "ok": False, "exit_code": 2}


async def test_a_missing_program_is_answered_too(rig, tmp_path):
    bus, *_ = rig
    await bus.publish(names.PROCESS, request(tmp_path, tmp_path / "not-there.sh"))
    result = await next_result(bus)
    assert not result.ok and result.exit_code is None and "does not exist" in result.error


async def test_a_cancel_broadcast_kills_the_running_process_tree(rig, tmp_path):
    bus, _state, actor, events = rig
    exe = script(tmp_path / "hang.sh", TREE)
    pids = tmp_path / "pids"
    await bus.publish(names.PROCESS, request(tmp_path, exe, str(pids)))
    leader, child = await pids_of(pids)
    assert running(leader, group=True) and actor.in_flight == 1
    await bus.broadcast(names.CANCEL_TOPIC, CancelJob(job_id="other", bank="demo"))  # not this job
    await bus.broadcast(names.CANCEL_TOPIC, CancelJob(job_id="job1", bank="demo"))
    result = await next_result(bus)
    assert not result.ok and result.error == "cancelled"
    assert not running(leader, group=True) and not running(child, group=False)
    await bus.join(names.PROCESS, timeout=10)
    event = await next_event(events)
    assert event.state == "cancelled" and event.progress["ok"] is False


async def test_a_job_cancelled_in_the_state_is_answered_without_running(rig, tmp_path):
    bus, state, *_ = rig
    await state.set_cancel("job1")
    exe = script(tmp_path / "mark.sh", 'touch "$1"\n')
    await bus.publish(names.PROCESS, request(tmp_path, exe, str(tmp_path / "ran")))
    result = await next_result(bus)
    await bus.join(names.PROCESS, timeout=10)
    assert not result.ok and result.error == "cancelled" and result.exit_code is None
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "logs" / "META0_PROC0.out").exists()


async def test_other_messages_are_refused_to_the_dead_letter_queue(rig):
    bus, *_ = rig
    await bus.publish(names.PROCESS, Note(payload="x"))
    await bus.join(names.PROCESS, timeout=10)
    [letter] = await bus.dead_letters(names.PROCESS)
    assert letter.reason == "processor cannot handle test.note" and letter.attempts == 1


async def test_a_timeout_is_a_failed_result(rig, tmp_path):
    bus, *_ = rig
    exe = script(tmp_path / "hang.sh", TREE)
    pids = tmp_path / "pids"
    await bus.publish(names.PROCESS, request(tmp_path, exe, str(pids), timeout=0.5))
    result = await next_result(bus)
    assert not result.ok and result.error == "META0_PROC0 timed out after 0.5 s"
    leader, child = map(int, pids.read_text().split())
    assert not running(leader, group=True) and not running(child, group=False)


async def test_a_stopping_processor_kills_the_process_and_the_request_comes_back(tmp_path):
    bus, state = MemoryBus(), MemoryState()
    await bus.declare_queue(names.PROCESS)
    actor = ProcessorActor(bus, ProcessorSettings(grace=0), state=state)
    await actor.start()
    exe = script(tmp_path / "hang.sh", TREE)
    pids = tmp_path / "pids"
    req = request(tmp_path, exe, str(pids))
    await bus.publish(names.PROCESS, req)
    try:
        leader, child = await pids_of(pids)
        await actor.stop(grace=0)  # a node going away mid-process: the request is not acked
        assert not running(leader, group=True) and not running(child, group=False)
        await bus.declare_queue(RESULTS)
        await bus.join(RESULTS, timeout=1)  # nothing was published: no ready message there
        async with asyncio.timeout(10):
            async for delivery in bus.consume(names.PROCESS):  # still queued, for another processor
                assert delivery.message.id == req.id and delivery.redelivered
                await delivery.ack()
                break
    finally:
        await actor.stop()
        await bus.close()


async def test_the_node_runs_the_processor_for_the_process_role(tmp_path):
    from biomaj.config.service import config_from_mapping
    from biomaj.node.serve import Node

    config = config_from_mapping({"root": str(tmp_path / "root"), "web": {"port": 0}}, None, environ={})
    node = Node(config, ["process"])
    await node.start()
    try:
        [actor] = [a for a in node.actors if a.name == "processor"]
        assert isinstance(actor, ProcessorActor) and actor.state is node.state
        assert actor.settings.node_id == node.node_id and actor.concurrency == config.settings.limits.processes
        exe = script(tmp_path / "ok.sh", "echo '##BIOMAJ#fasta###a.fa'\n")
        await node.bus.declare_queue(RESULTS)
        await node.bus.publish(names.PROCESS, request(tmp_path, exe))
        result = await next_result(node.bus)
        assert result.ok and result.node_id == node.node_id
        assert result.metadata == [{"format": "fasta", "types": [], "tags": {}, "files": ["a.fa"]}]
    finally:
        await node.stop()
