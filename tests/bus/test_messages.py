"""Message encoding, decoding, versioning and field checks."""

from __future__ import annotations

import json
import re
from dataclasses import FrozenInstanceError, field
from typing import Any

import pytest

from biomaj.bus import names
from biomaj.bus.messages import (
    JobEvent,
    JobRequest,
    Message,
    MessageError,
    NodeHeartbeat,
    decode,
    message,
)
from tests.bus.note import Note


@message
class Renamed(Message):
    """Version 2 renamed ``path`` to ``local_path`` and added ``size``."""

    TYPE = "test.renamed"
    VERSION = 2

    local_path: str
    size: int = 0
    tags: list[str] = field(default_factory=list)

    @classmethod
    def upgrade(cls, fields: dict[str, Any], version: int) -> dict[str, Any]:
        if version == 1:
            fields["local_path"] = fields.pop("path")
        return fields


def envelope(**overrides: Any) -> bytes:
    body = {"type": "test.note", "version": 1, "id": "a" * 32, "created": 1.0, "fields": {"payload": "x"}}
    body.update(overrides)
    return json.dumps(body).encode()


def test_encode_gives_the_documented_envelope() -> None:
    job = JobRequest(job_id="update:alu", kind="update", bank="alu", options={"fromscratch": True})
    body = json.loads(job.encode())
    assert body == {
        "type": "job.request",
        "version": 1,
        "id": job.id,
        "created": job.created,
        "fields": {"job_id": "update:alu", "kind": "update", "bank": "alu",
                   "options": {"fromscratch": True}, "user": None},
    }
    assert re.fullmatch(r"[0-9a-f]{32}", job.id)
    assert decode(job.encode()) == job


def test_ids_are_unique_and_defaults_are_not_shared() -> None:
    a = JobRequest(job_id="j", kind="update", bank="alu")
    b = JobRequest(job_id="j", kind="update", bank="alu")
    assert a.id != b.id
    assert a.options is not b.options


def test_messages_are_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        Note().payload = "changed"  # type: ignore[misc]


def test_routing_is_carried_by_the_message() -> None:
    assert JobRequest.QUEUE == names.JOBS
    event = JobEvent(job_id="j", bank="my.bank", kind="update", state="done")
    assert event.topic() == "job.my_bank"
    assert NodeHeartbeat.topic is not Message.topic
    with pytest.raises(MessageError):
        Note().topic()


def test_unknown_type() -> None:
    with pytest.raises(MessageError, match="unknown message type 'nope'"):
        decode(envelope(type="nope"))


def test_newer_version_is_refused() -> None:
    with pytest.raises(MessageError, match="newer than this node understands"):
        decode(envelope(version=2))


@pytest.mark.parametrize("version", [0, -1, "1", True, None])
def test_bad_version(version: Any) -> None:
    with pytest.raises(MessageError):
        decode(envelope(version=version))


def test_older_version_is_upgraded() -> None:
    old = json.dumps({"type": "test.renamed", "version": 1, "id": "b" * 32, "created": 2.0,
                      "fields": {"path": "/data/x"}})
    msg = decode(old)
    assert msg == Renamed(local_path="/data/x", id="b" * 32, created=2.0)


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"\xff\xfe", b"[]", b"42", b'{"type": "ping"}', b'"ping"'],
)
def test_bad_json(data: bytes) -> None:
    with pytest.raises(MessageError):
        decode(data)


def test_fields_must_be_an_object() -> None:
    with pytest.raises(MessageError, match="'fields' must be a JSON object"):
        decode(envelope(fields=["x"]))


def test_unknown_and_missing_fields() -> None:
    with pytest.raises(MessageError, match="unknown field"):
        decode(envelope(fields={"payload": "x", "extra": 1}))
    body = json.loads(JobRequest(job_id="j", kind="update", bank="alu").encode())
    del body["fields"]["bank"]
    with pytest.raises(MessageError, match="missing field.*bank"):
        decode(json.dumps(body))


def test_field_types_are_checked_on_decode_and_construction() -> None:
    with pytest.raises(MessageError, match="'payload' must be str"):
        decode(envelope(fields={"payload": 3}))
    with pytest.raises(MessageError, match="'in_flight'"):
        NodeHeartbeat(node_id="n", host="h", pid=1, roles=[], actors=[], version="v",
                      in_flight="two", started=0.0, at=0.0)  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="'tags'"):
        Renamed(local_path="x", tags=["ok", 3])  # type: ignore[list-item]
    with pytest.raises(MessageError, match="'size'"):
        Renamed(local_path="x", size=True)  # bool is not an int here
    with pytest.raises(MessageError, match="'id'"):
        decode(envelope(id=5))


def test_fields_must_be_json() -> None:
    with pytest.raises(MessageError, match="not plain JSON"):
        JobRequest(job_id="j", kind="update", bank="alu", options={"when": object()}).encode()
    with pytest.raises(MessageError, match="not plain JSON"):
        JobEvent(job_id="j", bank="b", kind="k", state="s", progress={"rate": float("nan")}).encode()
    with pytest.raises(MessageError, match="'options'"):
        JobRequest(job_id="j", kind="update", bank="alu", options={1: "x"})  # type: ignore[dict-item]


def test_registration_rules() -> None:
    with pytest.raises(TypeError, match="already registered"):

        @message
        class Impostor(Message):
            TYPE = "test.note"

    with pytest.raises(TypeError, match="set a TYPE"):

        @message
        class Nameless(Message):
            pass

    with pytest.raises(TypeError, match="Message methods"):

        @message
        class Clash(Message):
            TYPE = "test.clash"
            topic: str = ""

    with pytest.raises(MessageError, match="not registered"):
        Message()


def test_the_downloaders_events_have_a_topic_of_their_own():
    from biomaj.bus.base import topic_matches
    from biomaj.bus.messages import JobEvent

    step = JobEvent(job_id="j", bank="alu", kind="update", state="running", step="download",
                    progress={"files_done": 3, "files_total": 9})
    per_file = JobEvent(job_id="j", bank="alu", kind="download", state="done", step="download",
                        progress={"batch": "r1", "files": {"downloaded": 2}, "bytes": 12})
    assert step.topic() == "job.alu" and per_file.topic() == "job.alu.files"
    assert topic_matches("job.*", step.topic()) and not topic_matches("job.*", per_file.topic())
    assert topic_matches("job.#", per_file.topic())  # a live view of every file still gets them


def test_a_one_file_download_message_of_an_older_node_reads_as_a_batch_of_one():
    from biomaj.bus.messages import DownloadRequest, DownloadResult, FileOutcome, FileSpec

    old_request = {"type": "download.request", "version": 2, "id": "r" * 32, "created": 1.0, "fields": {
        "job_id": "j", "bank": "alu", "session_id": "s", "remote": {"protocol": "ftp"}, "path": "alu.n.gz",
        "offline_dir": "/o", "save_as": "alu.n.gz", "size": 12, "mtime": None, "digest": "md5"}}
    request = decode(json.dumps(old_request))
    assert isinstance(request, DownloadRequest)
    assert request.specs() == [FileSpec("alu.n.gz", "alu.n.gz", size=12, digest="md5")]
    old_result = {"type": "download.result", "version": 1, "id": "a" * 32, "created": 1.0, "fields": {
        "job_id": "j", "bank": "alu", "session_id": "s", "request_id": "r" * 32, "save_as": "alu.n.gz",
        "ok": False, "error": "550", "node_id": "n1"}}
    result = decode(json.dumps(old_result))
    assert isinstance(result, DownloadResult) and result.final and result.node_id == "n1"
    assert result.outcomes() == [FileOutcome("alu.n.gz", ok=False, error="550")]


@pytest.mark.parametrize("files", [[], [{"save_as": "x"}], [{"path": "x", "save_as": 3}], ["x"],
                                   [{"path": "x", "save_as": "x", "colour": "red"}]])
def test_a_download_request_with_bad_files_is_refused(files: Any) -> None:
    body = {"type": "download.request", "version": 3, "id": "r" * 32, "created": 1.0, "fields": {
        "job_id": "j", "bank": "alu", "session_id": "s", "remote": {}, "offline_dir": "/o", "files": files}}
    with pytest.raises(MessageError):
        decode(json.dumps(body))
