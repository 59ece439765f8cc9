"""How the download task cuts its files into download messages."""

from __future__ import annotations

from biomaj.protocols.base import RemoteConfig, RemoteEntry
from biomaj.workflow.fetching import BATCH_FILE_SIZE, BATCH_MAX_BYTES, BATCH_MAX_FILES, BATCH_MIN_COUNT, batches
from biomaj.workflow.remote_files import Wanted

CONFIG = RemoteConfig(protocol="http", host="example.org", root="/pub/")


def wanted(n: int, size: int | None = 1000, hint: int | None = None) -> list[Wanted]:
    return [Wanted(CONFIG, RemoteEntry(f"f{i:05d}", size, size_hint=hint), f"f{i:05d}") for i in range(n)]


def names(groups: list[list[Wanted]]) -> list[str]:
    return [w.save_as for group in groups for w in group]


def test_many_small_files_go_many_to_a_message_and_none_is_lost():
    items = wanted(20_000)
    groups = batches(items, len(items))
    assert names(groups) == [w.save_as for w in items]  # every file once, in order
    assert max(len(g) for g in groups) == BATCH_MAX_FILES and len(groups) == -(-20_000 // BATCH_MAX_FILES)


def test_a_small_job_is_still_spread_over_several_messages():
    items = wanted(100)
    groups = batches(items, len(items))
    assert len(groups) >= BATCH_MIN_COUNT - 1 and names(groups) == [w.save_as for w in items]
    assert [len(g) for g in batches(wanted(3), 3)] == [1, 1, 1]


def test_big_files_and_files_of_unknown_size_travel_alone():
    items = wanted(3, size=BATCH_FILE_SIZE + 1) + wanted(2, size=None) + wanted(2, size=None, hint=64_000)
    groups = batches(items, 1000)
    assert [len(g) for g in groups] == [1, 1, 1, 1, 1, 2]  # an index's rounded size is enough to group


def test_a_message_holds_at_most_its_byte_budget():
    size = BATCH_FILE_SIZE // 2
    groups = batches(wanted(40, size=size), 10_000)
    assert all(sum(w.entry.size for w in g) <= BATCH_MAX_BYTES for g in groups)
    assert sum(len(g) for g in groups) == 40
