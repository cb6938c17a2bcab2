"""A tale item's bytes, downloaded through the server lock this mount holds on it.

The WholeTale data manager lands local copies through the same host-cache machinery as every
other provider (records, leases, partials, GC); this provider is only where the bytes come from.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from ..catalog.girder_api import GirderApi, path_id
from ..catalog.wholetale import download
from ..errors import TransferFailed
from ..groups import first_error
from ..objects import ObjectRef
from .base import Sink


class WholeTaleProvider:
    resumes = False

    def __init__(self, api: GirderApi, held_lock: Callable[[ObjectRef], str]) -> None:
        self.api = api
        self.held_lock = held_lock  # the id of a server lock held on the object (the DM's)

    async def fetch(self, obj: ObjectRef, sink: Sink) -> None:
        path = f"dm/lock/{self.held_lock(obj)}/download"
        await download(self.api, path, sink.write, f"{self.api.api_url}/{path}")


@dataclass
class _Check:
    """An upload's check expected of the next landing of its object."""

    sha256: str  # of what was sent
    local: str | None  # the write-back copy that was sent, unchanged since: landed by a hard link
    got: str | None = None  # sha256 of the server's bytes that landing fetched


class WorkspaceProvider:
    """A file of the tale's workspace: its item's download (no server lock applies to it).

    An upload's check (``expect``, then a landing, then ``digest``) hashes the server's bytes
    as they arrive, in one pass. When the write-back copy that was sent is on the cache's
    filesystem, the server's bytes are only hashed: once they match, the copy itself is linked
    in as the landed copy (no second write of the file, the next read is local all the same)."""

    resumes = False

    def __init__(self, api: GirderApi) -> None:
        self.api = api
        self._checks: dict[str, _Check] = {}  # object id -> the check its next landing is for

    def expect(self, obj: ObjectRef, sha256: str, local: str | None) -> None:
        self._checks[obj.id] = _Check(sha256, local)

    def digest(self, obj: ObjectRef) -> str | None:
        """The sha256 of the server's bytes the landing since ``expect`` fetched (None: nothing
        fetched, the copy was there already or another daemon landed it); forgets the check."""
        check = self._checks.pop(obj.id, None)
        return None if check is None else check.got

    async def fetch(self, obj: ObjectRef, sink: Sink) -> None:
        item = obj.source.split(":", 1)[1]
        path, what = f"item/{path_id(item)}/download", f"workspace item {item}"
        check = self._checks.get(obj.id)
        if check is None:
            await download(self.api, path, sink.write, what)
            return
        check.got = None  # a fetch that fails part-way leaves no digest
        linked = await trio.to_thread.run_sync(_link_beside, check.local, sink.path) if check.local else None
        if linked is not None and self._checks.get(obj.id) is not check:
            # the check ended while the link was made (its path lock is gone: a writer may have
            # written the copy before the link): the server's bytes land instead
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_remove, linked)
            linked = None
        if linked is None:
            check.got = await hashed_download(self.api, path, sink.write, what)
            return
        try:
            check.got = await hashed_download(self.api, path, lambda chunk: None, what, sink.reported)
            if check.got != check.sha256:  # never land a copy that is not the server's
                raise TransferFailed(f"{what}: the server's copy differs from what was sent (sha256 {check.got})")
            sink.adopt(linked)  # a rename and a dup2: short calls, on the loop (progress is reported)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_remove, linked)
            raise


def _link_beside(local: str, temp: str) -> str | None:
    """A second name for ``local`` beside the landing's temp file; None where no hard link can
    be made (another filesystem, the copy gone): the server's bytes are landed instead."""
    if not temp:
        return None
    linked = f"{temp}.sent"
    try:
        os.link(local, linked)
    except OSError:
        return None
    return linked


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


#: Bytes hashed per trip to a worker thread (the download goes on meanwhile).
HASH_BATCH = 8 * 1024 * 1024


async def hashed_download(
    api: GirderApi,
    path: str,
    write: Callable[[bytes], None],
    what: str,
    progress: Callable[[int], None] | None = None,
) -> str:
    """``download`` into ``write``, and the sha256 of the bytes, hashed in a worker thread batch
    by batch while the download goes on (at most two batches waiting: memory stays bounded).
    ``progress``: the bytes so far, as they arrive (a landing's watchdog)."""
    digest = hashlib.sha256()
    batches, hashing = trio.open_memory_channel[list[bytes]](2)
    batch: list[bytes] = []
    held = total = 0

    async def then(chunk: bytes) -> None:
        nonlocal batch, held, total
        batch.append(chunk)
        held += len(chunk)
        total += len(chunk)
        if progress is not None:
            progress(total)
        if held >= HASH_BATCH:
            await batches.send(batch)
            batch, held = [], 0

    async def hasher() -> None:
        async with hashing:
            async for done in hashing:
                await trio.to_thread.run_sync(_update, digest, done)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hasher)
            async with batches:
                await download(api, path, write, what, then)
                await batches.send(batch)
    except BaseExceptionGroup as group:  # the download's failure, as itself
        raise first_error(group) from None
    return digest.hexdigest()


def _update(digest: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)
