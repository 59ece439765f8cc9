"""run_process with real scripts: exit codes, log files, environment, shell or no shell, working
directory, metadata, timeouts and cancels that stop the whole process tree, docker command lines."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from biomaj.bus.messages import ProcessRequest
from biomaj.process.docker import docker_command
from biomaj.process.execute import run_process
from tests.process.procs import running

NAME = "META0_PROC0"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def request(tmp_path: Path, exe: str, args=(), **extra) -> ProcessRequest:
    fields = dict(
        job_id="job1", bank="demo", session_id="s1", name=NAME, exe=exe, args=list(args),
        env={"PATH": f"{tmp_path / 'bin'}:{SYSTEM_PATH}", "dbname": "demo"},
        log_dir=str(tmp_path / "logs"), cwd=str(tmp_path), shell_expand=False,
    )
    fields.update(extra)
    return ProcessRequest(**fields)




async def until(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)  # polling a file the child process writes


def pids_written(path: Path, count: int = 2):
    return lambda: path.exists() and len(path.read_text().split()) >= count


TREE = 'echo $$ > "$1"\nsleep 60 &\necho $! >> "$1"\nwait\n'  # leader + one child, both asleep


# --- exit status and log files ------------------------------------------------------------------


async def test_success_writes_out_and_err_and_parses_biomaj_lines(tmp_path):
    exe = script(tmp_path / "bin" / "ok.sh", (
        "echo hello\n"
        "echo '##BIOMAJ#blast#nucleic#organism:hg19,chr:chr1#blast/chr1/chr1db'\n"
        "echo warning >&2\n"
        "echo '##BIOMAJ#fasta#nucleic#organism:hg19#fasta/chr1.fa,fasta/chr2.fa'\n"
    ))
    outcome = await run_process(request(tmp_path, str(exe)))
    assert outcome.ok and outcome.exit_code == 0 and outcome.error == ""
    logs = tmp_path / "logs"
    assert (logs / f"{NAME}.out").read_text().splitlines()[0] == "hello"
    assert (logs / f"{NAME}.err").read_text() == "warning\n"
    assert outcome.metadata == [
        {"format": "blast", "types": ["nucleic"], "tags": {"organism": "hg19", "chr": "chr1"},
         "files": ["blast/chr1/chr1db"]},
        {"format": "fasta", "types": ["nucleic"], "tags": {"organism": "hg19"},
         "files": ["fasta/chr1.fa", "fasta/chr2.fa"]},
    ]
    assert outcome.elapsed > 0 and not outcome.timed_out and not outcome.cancelled


async def test_metadata_is_found_in_a_large_output(tmp_path):
    exe = script(tmp_path / "bin" / "big.sh", "seq 1 300000\necho '##BIOMAJ#last###end.txt'\nseq 1 1000\n")
    outcome = await run_process(request(tmp_path, str(exe)))
    assert outcome.ok
    assert (tmp_path / "logs" / f"{NAME}.out").stat().st_size > 1_000_000
    assert outcome.metadata == [{"format": "last", "types": [], "tags": {}, "files": ["end.txt"]}]


async def test_log_files_are_truncated_by_a_new_run(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / f"{NAME}.out").write_text("old output\n" * 100)
    exe = script(tmp_path / "bin" / "ok.sh", "echo new\n")
    assert (await run_process(request(tmp_path, str(exe)))).ok
    assert (logs / f"{NAME}.out").read_text() == "new\n"
    assert (logs / f"{NAME}.err").read_text() == ""


async def test_failure_gives_the_exit_code_and_the_stderr_tail(tmp_path):
    exe = script(tmp_path / "bin" / "fail.sh", (
        "echo '##BIOMAJ#blast###x'\n"
        "for i in 1 2 3 4 5 6 7 8; do echo \"err line $i\" >&2; done\n"
        "exit 3\n"
    ))
    outcome = await run_process(request(tmp_path, str(exe)))
    assert not outcome.ok and outcome.exit_code == 3
    assert outcome.error.startswith(f"{NAME} exited with code 3: ")
    for i in range(4, 9):
        assert f"err line {i}" in outcome.error
    for i in range(1, 4):
        assert f"err line {i}" not in outcome.error
    assert outcome.metadata == []  # a failed process declares nothing


async def test_the_stderr_tail_is_bounded(tmp_path):
    exe = script(tmp_path / "bin" / "fail.sh", "i=0; while [ $i -lt 3000 ]; do printf x >&2; i=$((i+1)); done; exit 1\n")
    outcome = await run_process(request(tmp_path, str(exe)))
    assert outcome.exit_code == 1
    assert len(outcome.error) < 600 and outcome.error.endswith("xxxx")


async def test_a_process_killed_by_a_signal_says_so(tmp_path):
    exe = script(tmp_path / "bin" / "die.sh", "kill -KILL $$\n")
    outcome = await run_process(request(tmp_path, str(exe)))
    assert not outcome.ok and outcome.exit_code == -9
    assert outcome.error == f"{NAME} was killed by signal SIGKILL"


# --- environment, shell, arguments, working directory -------------------------------------------


async def test_the_environment_is_exactly_the_requests(tmp_path):
    env = {"PATH": SYSTEM_PATH, "dbname": "demo", "db.name": "demo", "localrelease": "demo_1.0"}
    outcome = await run_process(request(tmp_path, "env", env=env))
    assert outcome.ok, outcome.error
    printed = (tmp_path / "logs" / f"{NAME}.out").read_text().splitlines()
    assert sorted(printed) == sorted(f"{k}={v}" for k, v in env.items())


async def test_a_script_sees_the_bank_variables(tmp_path):
    exe = script(tmp_path / "bin" / "dbname.sh", 'echo "bank=$dbname"\n')
    outcome = await run_process(request(tmp_path, "dbname.sh"))  # found on the request's PATH
    assert outcome.ok, outcome.error
    assert (tmp_path / "logs" / f"{NAME}.out").read_text() == "bank=demo\n"
    assert exe.exists()


async def test_shell_expand_runs_the_joined_command_line_through_the_shell(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    outcome = await run_process(request(tmp_path, "echo", ["$dbname", ">", "x"], cwd=str(work), shell_expand=True))
    assert outcome.ok, outcome.error
    assert (work / "x").read_text() == "demo\n"


ARGS = ["$dbname", "1;touch pwned", "$(touch pwned2)", "`touch pwned3`", "a b", "*", ""]


async def test_direct_exec_passes_arguments_literally(tmp_path):
    work = tmp_path / "work"
    (work / "file").mkdir(parents=True)
    exe = script(tmp_path / "bin" / "argv.sh", 'for a in "$@"; do printf "[%s]\\n" "$a"; done\n')
    outcome = await run_process(request(tmp_path, str(exe), ARGS, cwd=str(work)))
    assert outcome.ok, outcome.error
    printed = (tmp_path / "logs" / f"{NAME}.out").read_text().splitlines()
    assert printed == [f"[{a}]" for a in ARGS]
    assert sorted(p.name for p in work.iterdir()) == ["file"]  # no pwned*: nothing was interpreted


async def test_the_same_arguments_are_interpreted_with_shell_expand(tmp_path):
    """The counterpart of the test above: with the shell, ';' and '$(...)' do run commands."""
    work = tmp_path / "work"
    work.mkdir()
    outcome = await run_process(request(tmp_path, "echo", ["1;touch pwned;", "$(touch pwned2)"], cwd=str(work),
                                        shell_expand=True))
    assert outcome.ok, outcome.error
    assert (work / "pwned").exists() and (work / "pwned2").exists()


async def test_the_working_directory(tmp_path):
    work = tmp_path / "process.dir"
    work.mkdir()
    outcome = await run_process(request(tmp_path, "pwd", cwd=str(work)))
    assert outcome.ok
    assert (tmp_path / "logs" / f"{NAME}.out").read_text().strip() == str(work)
    outcome = await run_process(request(tmp_path, "pwd", cwd=""))
    assert outcome.ok
    assert (tmp_path / "logs" / f"{NAME}.out").read_text().strip() == str(tmp_path / "logs")


async def test_a_relative_exe_is_taken_from_the_working_directory(tmp_path):
    work = tmp_path / "process.dir"
    script(work / "local.sh", "echo local\n")
    outcome = await run_process(request(tmp_path, "./local.sh", cwd=str(work)))
    assert outcome.ok, outcome.error
    assert (tmp_path / "logs" / f"{NAME}.out").read_text() == "local\n"


async def test_a_missing_program_is_named_with_the_path_searched(tmp_path):
    outcome = await run_process(request(tmp_path, "no-such-program"))
    assert not outcome.ok and outcome.exit_code is None
    assert "no-such-program not found in PATH" in outcome.error and SYSTEM_PATH in outcome.error
    outcome = await run_process(request(tmp_path, str(tmp_path / "nope.sh")))
    assert outcome.error == f"{NAME}: {tmp_path / 'nope.sh'} does not exist"
    plain = tmp_path / "plain.sh"
    plain.write_text("echo never\n")
    outcome = await run_process(request(tmp_path, str(plain)))
    assert outcome.error == f"{NAME}: {plain} is not executable" and outcome.exit_code is None


async def test_a_missing_working_directory_fails_cleanly(tmp_path):
    outcome = await run_process(request(tmp_path, "pwd", cwd=str(tmp_path / "gone")))
    assert not outcome.ok and outcome.exit_code is None
    assert "cannot start pwd" in outcome.error and "gone" in outcome.error


# --- timeouts and cancels stop the whole tree ---------------------------------------------------


async def test_a_timeout_kills_the_whole_process_group(tmp_path):
    exe = script(tmp_path / "bin" / "hang.sh", TREE)
    pids = tmp_path / "pids"
    outcome = await run_process(request(tmp_path, str(exe), [str(pids)], timeout=1))
    assert outcome.timed_out and not outcome.ok and not outcome.cancelled
    assert outcome.error == f"{NAME} timed out after 1 s"
    assert outcome.elapsed < 5  # SIGTERM was enough: no wait for the SIGKILL grace
    leader, child = map(int, pids.read_text().split())
    assert not running(leader, group=True)
    assert not running(child, group=False)


async def test_a_tree_ignoring_sigterm_is_sigkilled_after_the_grace(tmp_path):
    exe = script(tmp_path / "bin" / "stubborn.sh", "trap '' TERM\n" + TREE)
    pids = tmp_path / "pids"
    outcome = await run_process(request(tmp_path, str(exe), [str(pids)], timeout=0.5), kill_grace=0.5)
    assert outcome.timed_out and outcome.exit_code == -9
    leader, child = map(int, pids.read_text().split())
    assert not running(leader, group=True) and not running(child, group=False)


async def test_the_cancel_event_kills_the_whole_process_group(tmp_path):
    exe = script(tmp_path / "bin" / "hang.sh", TREE)
    pids = tmp_path / "pids"
    cancel = asyncio.Event()
    task = asyncio.create_task(run_process(request(tmp_path, str(exe), [str(pids)]), cancelled=cancel))
    await until(pids_written(pids))
    leader, child = map(int, pids.read_text().split())
    assert running(leader, group=True)  # the tree is alive before the cancel
    cancel.set()
    async with asyncio.timeout(10):
        outcome = await task
    assert outcome.cancelled and outcome.error == "cancelled" and not outcome.ok and not outcome.timed_out
    assert not running(leader, group=True) and not running(child, group=False)


async def test_an_already_set_cancel_event_runs_nothing(tmp_path):
    exe = script(tmp_path / "bin" / "mark.sh", "touch \"$1\"\n")
    cancel = asyncio.Event()
    cancel.set()
    outcome = await run_process(request(tmp_path, str(exe), [str(tmp_path / "ran")]), cancelled=cancel)
    assert outcome.cancelled and outcome.exit_code is None
    assert not (tmp_path / "ran").exists()


async def test_cancelling_the_awaiting_task_kills_the_group_then_propagates(tmp_path):
    exe = script(tmp_path / "bin" / "hang.sh", TREE)
    pids = tmp_path / "pids"
    task = asyncio.create_task(run_process(request(tmp_path, str(exe), [str(pids)])))
    await until(pids_written(pids))
    leader, child = map(int, pids.read_text().split())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await task
    assert not running(leader, group=True) and not running(child, group=False)


async def test_processes_left_behind_by_a_successful_run_are_stopped(tmp_path):
    exe = script(tmp_path / "bin" / "leave.sh", 'sleep 60 &\necho $! > "$1"\necho $$ >> "$1"\n')
    pids = tmp_path / "pids"
    outcome = await run_process(request(tmp_path, str(exe), [str(pids)]))
    assert outcome.ok, outcome.error
    child, leader = map(int, pids.read_text().split())
    assert not running(child, group=False) and not running(leader, group=True)


# --- docker -------------------------------------------------------------------------------------

RECORD_ARGV = 'for a in "$@"; do printf "%s\\n" "$a"; done > "{out}"\n'


def docker_request(tmp_path, **extra) -> ProcessRequest:
    fields = dict(
        exe="makeblastdb", args=["-in", "chr1.fa", "-dbtype", "nucl"],
        env={"PATH": f"{tmp_path / 'bin'}:{SYSTEM_PATH}", "HOME": "/home/biomaj", "dbname": "demo",
             "localrelease": "demo_1.0"},
        docker={"image": "biocontainers/blast:2.2.31", "workdir": "/db/demo/current/demo_1.0",
                "volumes": [["/srv/db/demo/current", "/db/demo/current"], ["/db/dep/dep_3", "/db/dep/dep_3", "ro"]]},
    )
    fields.update(extra)
    return request(tmp_path, **fields)


def expected_docker_argv(tail: list[str]) -> list[str]:
    return [
        "run", "--rm", "--user", f"{os.getuid()}:{os.getgid()}", "-w", "/db/demo/current/demo_1.0",
        "-v", "/srv/db/demo/current:/db/demo/current", "-v", "/db/dep/dep_3:/db/dep/dep_3:ro",
        "-e", "dbname=demo", "-e", "localrelease=demo_1.0", "biocontainers/blast:2.2.31", *tail,
    ]


async def test_docker_runs_the_image_with_mounts_variables_and_the_command(tmp_path):
    argv_file = tmp_path / "docker.argv"
    docker = script(tmp_path / "bin" / "docker", RECORD_ARGV.format(out=argv_file)
                    + "echo '##BIOMAJ#blast#nucleic##blast/chr1db'\n")
    req = docker_request(tmp_path)
    assert docker_command(req)[0] == str(docker)  # found on the request's PATH
    outcome = await run_process(req)
    assert outcome.ok, outcome.error
    assert argv_file.read_text().splitlines() == expected_docker_argv(["makeblastdb", "-in", "chr1.fa", "-dbtype", "nucl"])
    assert outcome.metadata == [{"format": "blast", "types": ["nucleic"], "tags": {}, "files": ["blast/chr1db"]}]


async def test_docker_with_shell_expand_runs_a_shell_in_the_container(tmp_path):
    argv_file = tmp_path / "docker.argv"
    script(tmp_path / "bin" / "docker", RECORD_ARGV.format(out=argv_file))
    outcome = await run_process(docker_request(tmp_path, shell_expand=True))
    assert outcome.ok, outcome.error
    assert argv_file.read_text().splitlines() == expected_docker_argv(
        ["/bin/sh", "-c", "makeblastdb -in chr1.fa -dbtype nucl"])


async def test_docker_with_sudo(tmp_path):
    sudo_argv, docker_argv = tmp_path / "sudo.argv", tmp_path / "docker.argv"
    script(tmp_path / "bin" / "sudo", RECORD_ARGV.format(out=sudo_argv) + 'exec "$@"\n')
    docker = script(tmp_path / "bin" / "docker", RECORD_ARGV.format(out=docker_argv))
    req = docker_request(tmp_path)
    req = docker_request(tmp_path, docker={**req.docker, "sudo": True})
    outcome = await run_process(req)
    assert outcome.ok, outcome.error
    expected = expected_docker_argv(["makeblastdb", "-in", "chr1.fa", "-dbtype", "nucl"])
    assert sudo_argv.read_text().splitlines() == [str(docker), *expected]
    assert docker_argv.read_text().splitlines() == expected


async def test_docker_failures_are_reported(tmp_path):
    req = docker_request(tmp_path)
    only_ours = str(tmp_path / "bin")  # no docker there (yet)
    outcome = await run_process(docker_request(tmp_path, env={**req.env, "PATH": only_ours}))
    assert outcome.exit_code is None and outcome.error == f"{NAME}: docker not found in PATH {only_ours}"
    script(tmp_path / "bin" / "docker", "echo 'Unable to find image' >&2\nexit 125\n")
    outcome = await run_process(docker_request(tmp_path))
    assert outcome.exit_code == 125 and "Unable to find image" in outcome.error
    outcome = await run_process(docker_request(tmp_path, docker={"image": ""}))
    assert outcome.error == f"{NAME}: docker: no image given"
    outcome = await run_process(docker_request(tmp_path, docker={"image": "x", "volumes": [["/only-one"]]}))
    assert "docker volume must be" in outcome.error and outcome.exit_code is None
