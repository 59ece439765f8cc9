"""The one "this local file is the remote file" rule, as the manager, the downloader and the reuse
of the last release all apply it."""

import calendar
import os

from biomaj.download.same_file import FileFacts, facts_of_record, local_facts, same_file, same_time
from biomaj.protocols.base import RemoteEntry
from biomaj.download.same_file import facts_of_entry

NOON = calendar.timegm((2026, 12, 7, 12, 30, 17))  # a date with seconds
MINUTE = calendar.timegm((2026, 12, 7, 12, 30, 0))  # "Dec  7 12:30" in a listing
DAY = calendar.timegm((2025, 12, 7, 0, 0, 0))  # "Dec  7  2025" in a listing


def test_dates_compare_at_the_coarser_precision():
    assert same_time(NOON, NOON)
    assert not same_time(NOON, NOON + 1)  # both have seconds: to the second
    assert same_time(MINUTE, NOON)  # a listing without seconds: to the minute
    assert not same_time(MINUTE, NOON + 60)
    assert same_time(DAY, DAY + 3 * 3600 + 17)  # a listing with a day only: to the day
    assert not same_time(DAY, DAY + 86400 + 5)


def test_size_must_match_and_dates_at_their_precision(tmp_path):
    path = tmp_path / "f.gz"
    path.write_bytes(b"x" * 10)
    os.utime(path, (NOON, NOON))
    local = local_facts(path)
    assert local == FileFacts(10, NOON)
    assert same_file(local, FileFacts(10, NOON))
    assert same_file(local, FileFacts(10, MINUTE))  # FTP LIST gives the minute
    assert not same_file(local, FileFacts(11, NOON))
    assert not same_file(local, FileFacts(10, NOON + 3600))
    assert same_file(local, FileFacts(10, None))  # no date at all: the size decides


def test_a_checksum_known_on_both_sides_wins_over_size_and_date():
    assert same_file(FileFacts(10, NOON, checksum="md5:AB"), FileFacts(10, NOON + 86400 * 3, checksum="md5:ab"))
    assert not same_file(FileFacts(10, NOON, checksum="md5:ab"), FileFacts(10, NOON, checksum="md5:cd"))


def test_a_version_token_that_changed_means_another_file():
    assert not same_file(FileFacts(10, NOON, token="e1"), FileFacts(10, NOON, token="e2"))
    assert same_file(FileFacts(10, NOON, token="e1"), FileFacts(10, NOON, token="e1"))


def test_unknown_remote_size_needs_the_exact_remote_date_that_only_a_finished_download_sets(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    entry = RemoteEntry("f", None, MINUTE, size_hint=1000)
    assert not same_file(local_facts(path), facts_of_entry(entry))  # written now: not the remote date
    os.utime(path, (MINUTE, MINUTE))
    assert same_file(local_facts(path), facts_of_entry(entry))


def test_no_local_file_and_folders_are_never_the_remote_file(tmp_path):
    assert local_facts(tmp_path / "missing") is None
    assert local_facts(tmp_path) is None
    assert not same_file(None, FileFacts(1, NOON))


def test_release_records_compare_by_the_same_rule_and_old_day_only_records_to_the_day():
    new = facts_of_entry(RemoteEntry("a", 5, NOON, hash="h"))
    assert same_file(facts_of_record({"size": 5, "mtime": NOON, "hash": "h"}), new)
    assert not same_file(facts_of_record({"size": 5, "mtime": NOON, "hash": "other"}), new)
    assert same_file(facts_of_record({"size": 5, "year": 2026, "month": 12, "day": 7}), new)  # a BioMAJ 3 record
    assert not same_file(facts_of_record({"size": 5, "year": 2026, "month": 12, "day": 6}), new)
    assert not same_file(facts_of_record({"size": None, "mtime": NOON}), new)  # nothing to compare
