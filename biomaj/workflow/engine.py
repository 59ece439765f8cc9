"""The task loop shared by every workflow (BioMAJ 3's ``Workflow.start``).

A workflow is an ordered flow of tasks, each with sub-steps, implemented as ``wf_<name>``
coroutines returning True or False. Each task's status is persisted after it runs, so a failed,
cancelled or killed run resumes at the first task that is not True.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

from biomaj.errors import BiomajError

from .session import Session

Persist = Callable[[str], Awaitable[None]]


#: Why a cancelled job stopped: only a user cancels (Ctrl-C, `ctl cancel`, the API, the web UI).
CANCELLED = "cancelled by the user"


class Cancelled(BiomajError):
    """The job was cancelled."""


class TaskFailed(BiomajError):
    """A task gave up with a message for the user (raised inside wf_* methods)."""


class Workflow:
    """Run ``flow`` over ``session``; subclasses implement the ``wf_<task>`` methods."""

    flow: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Tasks whose failure must not release the lock (init failed: someone else holds it).
    keep_lock_on_failure = ("init",)

    def __init__(self, session: Session, log: logging.Logger, *, stop_before: str | None = None,
                 stop_after: str | None = None, is_cancelled: Callable[[], bool] = lambda: False,
                 persist: Persist | None = None):
        self.session = session
        self.log = log
        self.stop_before = stop_before
        self.stop_after = stop_after
        self.is_cancelled = is_cancelled
        self.persist = persist
        self.skip_all = False  # "no need to update": the remaining tasks are skipped
        self.stopped = False  # ended by --stop-before/--stop-after (the session stays resumable)
        self.cancelled = False
        self.error: str | None = None
        self.failed_task: str | None = None

    async def unlock(self) -> None:
        """Release what init took (the bank lock); called on failure, stop and cancel."""

    async def on_task(self, task: str, state: str, message: str = "") -> None:
        """Hook: a task starts ("running"), succeeds ("done"), fails ("failed") or is skipped."""

    async def run(self) -> bool:
        status = self.session["status"]
        for task, steps in self.flow:
            if self.skip_all:
                status[task] = None
                status["over"] = True
                continue
            if task == self.stop_before:
                self.log.info("Workflow:Stop before %s", task)
                self.stopped = True
                await self.unlock()
                break
            if self.is_cancelled():
                return await self._cancel(task)
            if task != "init" and status.get(task) is True:
                self.log.info("Workflow:Skip:%s", task)
                await self.on_task(task, "skipped")
                continue
            started = time.monotonic()
            self.log.info("Workflow:Start:%s", task)
            await self.on_task(task, "running")
            ok = await self._call(task)
            if ok:
                for step in steps:
                    if self.is_cancelled():
                        return await self._cancel(task)
                    self.log.info("Workflow:Start:%s:%s", task, step)
                    if not await self._call(step):
                        ok = False
                        task_failed = f"{task}:{step}"
                        break
                else:
                    task_failed = None
            else:
                task_failed = task
            if self.is_cancelled() and not ok:
                return await self._cancel(task)
            status[task] = ok
            self.session["stats"]["workflow"][task] = round(time.monotonic() - started, 3)
            if self.persist is not None:
                await self.persist(task)
            if not ok:
                self.failed_task = task_failed
                self.log.error("Error during task %s: %s", task_failed, self.error or "failed")
                self.session["error"] = {"task": task_failed, "message": self.error or f"{task_failed} failed"}
                await self.on_task(task, "failed", self.error or "")
                if task not in self.keep_lock_on_failure:
                    await self.unlock()
                if self.persist is not None:
                    await self.persist(task)
                return False
            await self.on_task(task, "done")
            if task == self.stop_after:
                self.log.info("Workflow:Stop after %s", task)
                self.stopped = True
                await self.unlock()
                break
        return True

    async def _call(self, name: str) -> bool:
        method: Callable[[], Awaitable[Any]] = getattr(self, f"wf_{name}")
        try:
            result = await method()
        except Cancelled:
            self.cancelled = True
            self.error = CANCELLED
            return False
        except BiomajError as exc:
            self.error = str(exc)
            return False
        except Exception as exc:  # a bug or an unexpected environment: keep the traceback in the log
            self.log.exception("Workflow:%s crashed", name)
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        return result is not False

    async def _cancel(self, task: str) -> bool:
        self.cancelled = True
        self.error = CANCELLED
        self.session["error"] = {"task": task, "message": CANCELLED}
        self.log.warning("Workflow:cancelled before %s", task)
        await self.unlock()
        if self.persist is not None:
            await self.persist(task)
        return False
