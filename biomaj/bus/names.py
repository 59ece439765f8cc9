"""Every queue, topic, header and store key name biomaj uses, in one place.

Nothing else in biomaj spells a queue name or a key prefix: import it from here (dramatiq's
``common.py``, arq's ``constants.py``). Queue and topic names are AMQP-style dotted words; store
keys are Redis-style colon-separated.
"""

from __future__ import annotations

# --- work queues (one consumer group per actor kind) -------------------------------------------

JOBS = "biomaj.jobs"
"""Bank jobs (update, remove, repair, ...) consumed by the manager."""

DOWNLOAD = "biomaj.download"
"""One message per file to download, consumed by downloaders."""

PROCESS = "biomaj.process"
"""One message per pre/post/remove process to run, consumed by processors."""

DOWNLOAD_RESULTS = "biomaj.download.results"
"""Per-file download outcomes. Each manager reads its own ``DOWNLOAD_RESULTS.<instance id>``
(named in each request), so that results reach the manager that asked, whatever their number."""

PROCESS_RESULTS = "biomaj.process.results"
"""Per-process outcomes; each manager reads its own ``PROCESS_RESULTS.<instance id>``."""

WORK_QUEUES = (JOBS, DOWNLOAD, PROCESS, DOWNLOAD_RESULTS, PROCESS_RESULTS)

DEFAULT_MAX_DELIVERIES = 5
MAX_DELIVERIES = {JOBS: 3}
"""Deliveries before a message is dead-lettered, per queue; others use the default.

A job is redelivered only when its manager died mid-run (the workflow resumes from its last
persisted step), so few attempts suffice.
"""


def max_deliveries(queue: str) -> int:
    """The delivery limit a queue gets when declared without an explicit one."""
    return MAX_DELIVERIES.get(queue, DEFAULT_MAX_DELIVERIES)

DEAD_LETTER_SUFFIX = ".dead"
"""A queue ``q`` sends messages it gives up on to ``q + DEAD_LETTER_SUFFIX``."""


def dead_letter_queue(queue: str) -> str:
    """Name of the dead-letter queue of ``queue``."""
    return queue + DEAD_LETTER_SUFFIX


def is_dead_letter_queue(queue: str) -> bool:
    """True for names reserved to dead-letter queues."""
    return queue.endswith(DEAD_LETTER_SUFFIX)


# --- events (topic exchange) -------------------------------------------------------------------

EVENTS_EXCHANGE = "biomaj.events"
"""The topic exchange that carries broadcasts (job events, heartbeats, cancels)."""

JOB_TOPIC = "job"
"""Job events are broadcast on ``job.<bank>``; subscribe to ``job.*`` for every bank."""

NODE_TOPIC = "node.heartbeat"
"""Node heartbeats (:class:`~biomaj.bus.messages.NodeHeartbeat`)."""

DEAD_LETTER_TOPIC = "bus.dead_letter"
"""A work message was dead-lettered (:class:`~biomaj.bus.messages.DeadLettered`): whoever waits
for its result learns at once that it will never come."""

CANCEL_TOPIC = "control.cancel"
"""Cancel requests (:class:`~biomaj.bus.messages.CancelJob`); the state cancel flag is the truth."""


FILE_TOPIC_SUFFIX = "files"
"""Per-file events (one per downloaded file) go to ``job.<bank>.files``: ``job.*`` (a command
following a job) does not receive them, ``job.#`` (a live view of every file) does."""


def job_topic(bank: str) -> str:
    """Topic of the events of one bank: ``job.<bank>`` (dots in the name become ``_``).

    A topic word cannot contain a dot, so ``job.*`` always matches exactly the job events.
    """
    return f"{JOB_TOPIC}.{bank.replace('.', '_') or '_'}"


# --- AMQP headers, for the RabbitMQ bus --------------------------------------------------------

ATTEMPTS_HEADER = "x-biomaj-attempts"
"""Deliveries so far, carried when a message is republished after a nack."""

REASON_HEADER = "x-biomaj-reason"
"""Why a message was nacked or dead-lettered."""

# --- state store keys (Redis in distributed mode) ----------------------------------------------

KEY_PREFIX = "biomaj:"
LOCK_PREFIX = KEY_PREFIX + "lock:"
PROGRESS_PREFIX = KEY_PREFIX + "progress:"
CANCEL_PREFIX = KEY_PREFIX + "cancel:"
NODE_PREFIX = KEY_PREFIX + "node:"
SEMAPHORE_PREFIX = KEY_PREFIX + "semaphore:"
THROTTLE_PREFIX = KEY_PREFIX + "throttle:"


def lock_key(name: str) -> str:
    """Store key of the lock ``name`` (usually a bank name)."""
    return LOCK_PREFIX + name


def progress_key(job_id: str) -> str:
    """Store key of a job's progress counters."""
    return PROGRESS_PREFIX + job_id


def cancel_key(job_id: str) -> str:
    """Store key of a job's cancel flag."""
    return CANCEL_PREFIX + job_id


def node_key(node_id: str) -> str:
    """Store key of a node's registry entry."""
    return NODE_PREFIX + node_id


def semaphore_key(name: str) -> str:
    """Store key of the counting semaphore ``name`` (``host:<address>``: a server's connection budget)."""
    return SEMAPHORE_PREFIX + name


def throttle_key(name: str) -> str:
    """Store key of the lowered limit of ``name`` (a server that asked us to slow down)."""
    return THROTTLE_PREFIX + name


def file_topic(bank: str) -> str:
    """Topic of one bank's per-file events: ``job.<bank>.files``."""
    return f"{job_topic(bank)}.{FILE_TOPIC_SUFFIX}"
