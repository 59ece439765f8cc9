"""A bank's releases published to a bucket (``publish.s3``): the target read from the bank's
properties, when a release goes up, the marker switched, the records kept, removals followed.

In the bucket, under the prefix of ``publish.s3``::

    <prefix>/<dir.version>/<release directory>/<every file of the release>
    <prefix>/<dir.version>/current        "<release directory>\\n": the release published

A release is uploaded after the local publish (the update's ``publish`` task, sub-step
``publish_s3``, before old releases are deleted), verified object by object
(:mod:`.bucket_upload`), and only then does the marker name it, in one PUT: a reader that reads
the marker, then the objects of the directory it names, never sees a half release. The
production entry of the release records where it is (``buckets``: url, marker, complete,
current, at). An update that finds nothing new brings a bucket that lags behind the local
``current`` up to date (:func:`catch_up`); ``ctl publish`` switches the marker too, ``ctl
unpublish`` removes it, and removing a release removes its objects.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from biomaj import buckets
from biomaj.config.properties import BankProperties
from biomaj.download.limits import HostBudget
from biomaj.errors import BiomajError, ConfigError
from biomaj.reports import human_size
from biomaj.storage.base import Store

from .bank import Bank, RunContext
from .hashing import PROGRESS_EVERY
from .bucket_upload import MARKER, Journal, Progress, UploadFailed, delete_keys, list_prefix, read_marker, \
    upload_release, write_marker

log = logging.getLogger(__name__)

#: the settings of a publish target besides publish.s3 and its credentials (as publish.<key>)
PUBLISH_KEYS = ("s3.region", "s3.addressing", "s3.profile")

class PublishFailed(BiomajError):
    """The release could not be published to the bucket (the message leads with the cause)."""


@dataclass(frozen=True)
class Target:
    """Where a bank's releases are published: the bucket and how to sign for it."""

    access: buckets.BucketAccess
    creds: buckets.Credentials | None = field(repr=False)

    @classmethod
    def of(cls, props: BankProperties) -> Target | None:
        """The bank's ``publish.s3`` target, None when it has none; ConfigError for a bad value."""
        value = props.get("publish.s3")
        if not value or not value.strip():
            return None
        endpoint, bucket, prefix = buckets.parse_target(value, "publish.s3")
        settings = {f"publish.{key}": props.get(f"publish.{key}") for key in PUBLISH_KEYS}
        access = buckets.access_of(endpoint, bucket, prefix, settings, keys="publish.s3.")
        key, _, secret = (props.get("publish.s3.credentials") or "").partition(":")
        creds = buckets.credentials(access, (key.strip() or None, secret.strip() or None),
                                    source="publish.s3.credentials")
        return cls(access, creds)

    def _key(self, *parts: str) -> str:
        for part in parts:
            if any(word in (".", "..") for word in part.split("/")):
                raise BiomajError(f"publish.s3: '.' and '..' are not allowed in a bucket key ({part!r})")
        return "/".join(p.strip("/") for p in (self.access.prefix, *parts) if p.strip("/"))

    def release_prefix(self, entry: dict) -> str:
        """``<prefix>/<dir_version>/<prod_dir>/``: the keys of a release's objects start so."""
        return self._key(entry["dir_version"], entry["prod_dir"]) + "/"

    def marker_key(self, dir_version: str) -> str:
        return self._key(dir_version, MARKER)

    def release_url(self, entry: dict) -> str:
        return self.access.key_url(self.release_prefix(entry))

    def marker_url(self, dir_version: str) -> str:
        return self.access.key_url(self.marker_key(dir_version))

    def open(self):
        return buckets.open_store(self.access, self.creds)


def target_of(bank: Bank) -> Target | None:
    """The bank's publish target, or None (``publish.s3`` unset)."""
    return Target.of(bank.props)


async def explain(exc: UploadFailed, target: Target, bank: str) -> str:
    """``bank x: <cause> publishing to <url>; <the fix>``, without any secret (the bucket's region
    looked up when the store redirects it elsewhere)."""
    failure, url = exc.failure, target.access.url
    if failure is None:
        return f"bank {bank}: {exc} (publishing to {url})"
    if failure.connection:
        return (f"bank {bank}: cannot reach {target.access.endpoint} ({failure.connection}) publishing to {url}; "
                "check the endpoint of publish.s3")
    failure = await buckets.located(failure, target.access)
    diagnosis = buckets.diagnose(failure, target.access, target.creds, buckets.PUBLISH_KEYS)
    cause, fix = diagnosis if diagnosis is not None else ("the store refused an object", "")
    return f"bank {bank}: {cause} publishing to {url} ({failure.text})" + (f"; {fix}" if fix else "")


def journal_of(bank: Bank, entry: dict, target: Target) -> Journal:
    """The journal of ``entry``'s upload to ``target``, in the bank's cache directory (the
    release directory stays as the update made it)."""
    where = hashlib.sha256(target.release_url(entry).encode()).hexdigest()[:12]
    return Journal(bank.cache_dir / "publish_s3" / f"{bank.name}_{entry['prod_dir']}_{where}.jsonl")


def _events(run: RunContext, bank: str, url: str, step: str) -> Callable[[Progress], Awaitable[None]]:
    """Progress events of an upload, every PROGRESS_EVERY seconds and at its end."""
    loop = asyncio.get_running_loop()
    last = -PROGRESS_EVERY

    async def tell(state: Progress) -> None:
        nonlocal last
        if state.files_done < state.files_total and loop.time() - last < PROGRESS_EVERY:
            return
        last = loop.time()
        await run.event(bank, "running", step=step,
                        message=f"{step}: {url}: {state.files_done}/{state.files_total} files "
                                f"({human_size(state.bytes_done)} of {human_size(state.bytes_total)})",
                        upload_done=state.files_done, upload_total=state.files_total,
                        upload_bytes=state.bytes_done, upload_bytes_total=state.bytes_total)

    return tell


async def publish_release(run: RunContext, bank: Bank, entry: dict, target: Target, *, switch: bool,
                          log: logging.Logger, step: str = "publish") -> dict[str, Any]:
    """Upload the release of production entry ``entry`` (its directory, what is missing only),
    verified, then, ``switch``, make the marker name it. Returns the record of where it is;
    PublishFailed (cause first) when the bucket refuses or a file cannot be read."""
    url = target.release_url(entry)
    release_dir = Bank.production_dir(entry)
    if not release_dir.is_dir():
        raise PublishFailed(f"bank {bank.name}: release directory {release_dir} does not exist: nothing to publish "
                            f"to {url}")
    budget = run.listing.budget if run.listing is not None else HostBudget()
    store = target.open()
    log.info("publish_s3:%s to %s", entry["prod_dir"], url)
    try:
        state = await upload_release(store, target.access, release_dir, target.release_prefix(entry),
                                     journal=journal_of(bank, entry, target), budget=budget,
                                     progress=_events(run, bank.name, url, step), cancelled=run.cancelled)
        if switch:
            await write_marker(store, target.marker_key(entry["dir_version"]), entry["prod_dir"])
    except UploadFailed as exc:
        raise PublishFailed(await explain(exc, target, bank.name)) from None
    log.info("publish_s3:%s: %d files (%s) verified, %d uploaded now, %d stale objects removed%s",
             url, state.files_total, human_size(state.bytes_total), state.uploaded, state.removed,
             f"; {target.marker_url(entry['dir_version'])} names {entry['prod_dir']}" if switch else "")
    return {"url": url, "marker": target.marker_url(entry["dir_version"]), "complete": True, "current": switch,
            "at": time.time(), "files": state.files_total, "size": state.bytes_total}


def incomplete(target: Target, entry: dict) -> dict[str, Any]:
    """The record of a release whose upload failed: the next update finishes it."""
    return {"url": target.release_url(entry), "marker": target.marker_url(entry["dir_version"]), "complete": False,
            "current": False, "at": time.time()}


def names_it(entry: dict) -> bool:
    """True when a bucket's marker names ``entry``'s release (as its records say): the release
    stays while the marker names it, whatever keep.old.version says (the bucket lags behind)."""
    return any(record.get("current") for record in entry.get("buckets") or [])


def _merged(records: list[dict] | None, record: dict) -> list[dict]:
    return [r for r in records or [] if r.get("url") != record["url"]] + [record]


async def record(store: Store, bank: str, release: str, record: dict) -> None:
    """Keep ``record`` in the production entry of ``release`` and, when its marker names it,
    mark the other releases behind the same marker as no longer current."""
    doc = await store.get_bank(bank) or {}
    for entry in doc.get("production") or []:
        if entry.get("release") == release:
            await store.update_production(bank, release, {"buckets": _merged(entry.get("buckets"), record)})
        elif record.get("current"):
            await _not_current(store, bank, entry, record["marker"])


async def _not_current(store: Store, bank: str, entry: dict, marker: str) -> None:
    records = entry.get("buckets") or []
    if any(r.get("marker") == marker and r.get("current") for r in records):
        await store.update_production(bank, entry["release"], {"buckets": [
            {**r, "current": False} if r.get("marker") == marker else r for r in records]})


async def catch_up(run: RunContext, bank: Bank, target: Target, log: logging.Logger) -> bool:
    """The bucket made to match the local ``current`` (publish.s3 just added, an upload that
    failed or was killed): what is missing uploaded, the marker switched. True when it did
    something."""
    doc = await run.store.get_bank(bank.name) or {}
    entry = next((e for e in doc.get("production") or [] if e.get("session") == doc.get("current")), None)
    if entry is None:
        return False
    url = target.release_url(entry)
    mine = next((r for r in entry.get("buckets") or [] if r.get("url") == url), None)
    if mine is not None and mine.get("complete") and mine.get("current"):
        try:
            if await read_marker(target.open(), target.marker_key(entry["dir_version"])) == entry["prod_dir"]:
                return False
        except UploadFailed as exc:
            raise PublishFailed(await explain(exc, target, bank.name)) from None
    log.info("publish_s3:the bucket lags behind the published release %s: bringing it up to date", entry["release"])
    done = await publish_release(run, bank, entry, target, switch=True, log=log)
    await record(run.store, bank.name, entry["release"], done)
    return True


async def unpublish(store: Store, bank: Bank, log: logging.Logger) -> None:
    """Remove the bank's marker from its bucket: no release is current there any more."""
    target = target_of(bank)
    if target is None:
        return
    try:
        await delete_keys(target.open(), [target.marker_key(bank.dir_version)])
    except UploadFailed as exc:
        raise PublishFailed(await explain(exc, target, bank.name)) from None
    marker = target.marker_url(bank.dir_version)
    log.info("publish_s3:%s removed", marker)
    doc = await store.get_bank(bank.name) or {}
    for entry in doc.get("production") or []:
        await _not_current(store, bank.name, entry, marker)


async def remove_release(bank: Bank, entry: dict, log: logging.Logger) -> None:
    """Delete the objects of ``entry``'s release from the bank's bucket (the marker first when it
    names this release: a reader never sees it name a release going away)."""
    target = target_of(bank)
    if target is None:
        if entry.get("buckets"):
            log.warning("publish_s3:publish.s3 is not set any more: the copies of %s in %s stay", entry["release"],
                        ", ".join(r.get("url", "?") for r in entry["buckets"]))
        return
    store = target.open()
    marker = target.marker_key(entry["dir_version"])
    try:
        if await read_marker(store, marker) == entry["prod_dir"]:
            await delete_keys(store, [marker])
        keys = sorted(await list_prefix(store, target.release_prefix(entry)))
        await delete_keys(store, keys)
    except UploadFailed as exc:
        raise PublishFailed(await explain(exc, target, bank.name)) from None
    await asyncio.to_thread(journal_of(bank, entry, target).remove)
    log.info("publish_s3:%s removed (%d objects)", target.release_url(entry), len(keys))
