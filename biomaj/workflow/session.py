"""Sessions: one run of a workflow on a bank, stored as BioMAJ 3's session document.

A session is a plain dict (reference ``biomaj3-core-behaviour.md`` 3.3) so that it goes to the
store unchanged; the functions here create it and read or reset its task statuses.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from biomaj.errors import BiomajError

Session = dict[str, Any]

#: The update flow: (task, sub-steps), in order (BioMAJ 3's UpdateWorkflow.FLOW).
UPDATE_FLOW: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("init", ()),
    ("check", ()),
    ("depends", ()),
    ("preprocess", ()),
    ("release", ()),
    ("download", ("checksum", "uncompress", "copy", "copydepends")),
    ("postprocess", ("metadata", "stats")),
    ("publish", ("old_biomaj_api", "publish_s3", "clean_offline", "delete_old", "clean_old_sessions")),
    ("over", ()),
)
UPDATE_TASKS = tuple(task for task, _ in UPDATE_FLOW)

#: The removal of one release (RemoveWorkflow.FLOW).
REMOVE_FLOW: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("init", ()),
    ("removeprocess", ()),
    ("remove_release", ()),
    ("over", ()),
)
REMOVE_TASKS = tuple(task for task, _ in REMOVE_FLOW)

PROCESS_TASKS = ("preprocess", "postprocess", "removeprocess")


class UnknownTask(BiomajError):
    """--from-task, --stop-before or --stop-after names no task of the flow."""

    exit_code = 2


def check_task_name(option: str, task: str | None, tasks: Iterable[str] = UPDATE_TASKS) -> None:
    """Raise UnknownTask unless ``task`` is None or a task of the flow (checked before any work,
    unlike BioMAJ 3 whose check_options result is ignored)."""
    tasks = tuple(tasks)
    if task is not None and task not in tasks:
        raise UnknownTask(f"{option}: no task named {task!r}; tasks: {', '.join(tasks)}")


def new_session(
    action: str,
    *,
    data_dir: str,
    dir_version: str,
    formats: Iterable[str] = (),
    last_modified: float | None = None,
    previous_release: str | None = None,
    flow: Iterable[tuple[str, tuple[str, ...]]] = UPDATE_FLOW,
) -> Session:
    """A fresh session: every task status False, nothing known yet."""
    sid = time.time()
    return {
        "id": sid,
        "action": action,
        "status": {task: False for task, _ in flow},
        "workflow_status": None,
        "update": False,
        "remove": False,
        "release": None,
        "remoterelease": None,
        "previous_release": previous_release,
        "formats": {name: [] for name in formats},
        "process": {"preprocess": {}, "postprocess": {}, "removeprocess": {}},
        "per_process_metadata": {},
        "data_dir": data_dir,
        "dir_version": dir_version,
        "prod_dir": None,
        "log_file": None,
        "last_modified": last_modified,
        "last_update_time": sid,
        "files": [],
        "download_files": [],
        "depends": {},
        "stats": {"workflow": {}, "nb_downloaded_files": 0},
        "fullsize": 0,
        "error": None,
    }


def is_over(session: Session | None) -> bool:
    return bool(session and session.get("status", {}).get("over") is True)


def reset_from_task(session: Session, task: str, tasks: Iterable[str] = UPDATE_TASKS) -> None:
    """--from-task: every task from ``task`` on is to run again; raise BiomajError when a task
    before it did not succeed (BioMAJ 3: "cannot restart after this task")."""
    tasks = tuple(tasks)
    check_task_name("--from-task", task, tasks)
    status = session["status"]
    position = tasks.index(task)
    for earlier in tasks[1:position]:  # init always runs
        if status.get(earlier) is False:
            raise BiomajError(
                f"--from-task {task}: previous task {earlier} was not successful, cannot restart after it"
            )
    for later in tasks[position:]:
        status[later] = False
    session["workflow_status"] = None


def status_label(value: bool | None, over: bool) -> str:
    """BioMAJ 3's --update-status words: over, error, skipped or waiting."""
    if value is True:
        return "over"
    if value is None and over:
        return "skipped"
    if value is False and over:
        return "error"
    return "waiting"
