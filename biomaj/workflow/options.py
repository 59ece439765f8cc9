"""What the front ends may ask of the workflow, declared apart from it: the update options and the
visibilities of a bank.

``biomaj ctl update --help``, the REST schemas and the job checks are built from these (through
:mod:`biomaj.jobs`) without importing the workflow, its downloads, the bus or the mail templates:
this module imports nothing heavier than the task names of :mod:`biomaj.workflow.session`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .session import UPDATE_TASKS

#: What ``biomaj ctl visibility`` and the REST API may set a bank to.
VISIBILITIES = ("public", "private")


def _option(help: str, default: Any = None, *, tasks: tuple[str, ...] = (), aliases: tuple[str, ...] = ()) -> Any:
    """A field of :class:`UpdateOptions` with what every front end shows of it: ``biomaj.jobs``
    turns these fields into the click options, the REST schemas and the checks (``tasks``: the
    value must name one of these tasks; ``aliases``: its other command-line spellings)."""
    return field(default=default, metadata={"help": help, "tasks": tasks, "aliases": aliases})


@dataclass
class UpdateOptions:
    """The options of ``biomaj ctl update`` (BioMAJ 3's --fromscratch, --from-task ...), declared
    once: this is the update job's option list everywhere."""

    fromscratch: bool = _option("Start a new cycle: new session, offline directory wiped, nothing reused.",
                                False, aliases=("-z", "--from-scratch"))
    from_task: str | None = _option("Re-run from this task (the tasks before it must have succeeded).",
                                    tasks=UPDATE_TASKS)
    process: str | None = _option("With --from-task pre/postprocess: restart at this block, meta or process.")
    release: str | None = _option("Work on the session of this release (with --from-task).")
    stop_before: str | None = _option("Stop before this task; the next update resumes.", tasks=UPDATE_TASKS)
    stop_after: str | None = _option("Stop after this task; the next update resumes.", tasks=UPDATE_TASKS)
    publish: bool = _option("Publish the new release at the end (as auto_publish=1).", False)
    dry_run: bool = _option("Detect the release, list the remote files and report what would change and move: "
                            "nothing is downloaded, published or recorded.", False)

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> UpdateOptions:
        known = {k: options[k] for k in cls.__dataclass_fields__ if options.get(k) not in (None, "")}
        return cls(**known)
