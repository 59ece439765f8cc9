"""The RabbitMQ bus reports the depth of its work queues (for /metrics), on a private vhost so
that the counts are this test's own."""

from __future__ import annotations

import pytest

from biomaj.bus import names, open_bus
from biomaj.bus.messages import JobEvent

pytestmark = pytest.mark.service


async def test_queue_depths_count_ready_messages_of_work_and_dead_letter_queues(vhost_url):
    bus = open_bus(vhost_url)
    try:
        assert await bus.queue_depths() == {}  # nothing declared yet: no entry, no error
        await bus.declare_queue(names.DOWNLOAD)
        for n in range(3):
            await bus.publish(names.DOWNLOAD, JobEvent(job_id=f"j{n}", bank="b", kind="update", state="queued"))
        depths = await bus.queue_depths()
        assert depths[(names.DOWNLOAD, "ready")] == 3
        assert depths[(names.dead_letter_queue(names.DOWNLOAD), "ready")] == 0
        assert (names.JOBS, "ready") not in depths  # never declared on this vhost
        assert bus.is_connected()

        consumer = bus.consume(names.DOWNLOAD)
        delivery = await anext(consumer)
        await delivery.nack(requeue=False, reason="test")  # straight to the dead-letter queue
        await consumer.aclose()  # what it prefetched goes back to ready
        depths = await bus.queue_depths()
        assert depths[(names.DOWNLOAD, "ready")] == 2
        assert depths[(names.dead_letter_queue(names.DOWNLOAD), "ready")] == 1
    finally:
        await bus.close()
