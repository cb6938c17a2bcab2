"""A tale's workspace folder on a WholeTale server: every REST call ``workspace/`` makes.

The workspace is a girder-virtual-resources folder: its children's ids encode their paths, so
they change with every rename. Everything here is therefore addressed by path relative to the
workspace, resolved through listings (``GET /dm/fs/{id}/listing``), which are cached for
``metadata_ttl`` and kept as the last known listing for when the server is unreachable.

Uploads go through the publish uploader's calls (``POST /file``, ``POST /file/chunk``); the
server writes the bytes in place of the item's file. Items of this folder carry no metadata, so
the digest of what was sent is checked against the server's copy by landing it in the host
cache (which the next read then uses).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import trio

from ..catalog.girder import timestamp_ns
from ..catalog.girder_api import GirderApi, Unreachable, path_id
from ..catalog.girder_upload import GirderUploads as Remote
from ..catalog.girder_upload import is_file
from ..catalog.wholetale import WS_SCHEME
from ..errors import DiskFull, Exists, IsADirectory, NotADirectory, NotEmpty, NotFound, TransferFailed, WtfsError
from ..groups import first_error
from ..objects import ObjectRef
from ..retry import Backoff
from .writeback import Pending, WriteBack, remove_copy, workspace_state

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024**2
#: Girder's access level that allows changes (READ 0, WRITE 1, ADMIN 2).
WRITE_ACCESS = 1
#: Girder may take a while to store a chunk: uploads wait this long for an answer.
UPLOAD_TIMEOUT = 120.0


@dataclass(frozen=True)
class WsEntry:
    """One child of a workspace folder as the server lists it."""

    id: str
    name: str
    is_dir: bool
    size: int
    updated: str

    @property
    def mtime_ns(self) -> int:
        return timestamp_ns(self.updated)

    def object(self) -> ObjectRef:
        """The host cache's key of this version of the file (a new ``updated``: a new copy)."""
        return ObjectRef.for_source(f"{WS_SCHEME}:{self.id}", self.size, None, self.updated)


def _entry(doc: dict[str, object], is_dir: bool) -> WsEntry:
    size = 0 if is_dir else int(str(doc.get("size") or 0))
    return WsEntry(str(doc["_id"]), str(doc["name"]), is_dir, size, str(doc.get("updated") or ""))


class WorkspaceServer:
    """The workspace folder ``root_id``; paths are relative to it ('' is the folder itself)."""

    def __init__(self, api: GirderApi, root_id: str, ttl: float, writable: bool = True) -> None:
        self.api = api
        self.writable = writable  # False: a tale shared read-only with us (EACCES for changes)
        self.remote = Remote(api.with_read_timeout(UPLOAD_TIMEOUT))
        self.root_id = root_id
        self.ttl = ttl
        self._listings: dict[str, tuple[float, dict[str, WsEntry]]] = {}  # folder rel -> (when, children)

    # -- listings ---------------------------------------------------------------------------

    async def children(self, rel: str, fresh: bool = False) -> dict[str, WsEntry]:
        """Name -> entry of a folder; cached for the TTL, the last known one while unreachable."""
        known = self._listings.get(rel)
        if known is not None and not fresh and time.monotonic() - known[0] < self.ttl:
            return known[1]
        folder_id = await self.folder_id(rel)
        try:
            listing = await self.api.get(f"dm/fs/{path_id(folder_id)}/listing", what=f"workspace/{rel}")
        except Unreachable:
            if known is None:
                raise
            return known[1]
        assert isinstance(listing, dict)
        found = {doc["name"]: _entry(doc, True) for doc in listing.get("folders", [])}
        found.update({doc["name"]: _entry(doc, False) for doc in listing.get("files", [])})
        self._listings[rel] = (time.monotonic(), found)
        return found

    async def entry(self, rel: str, fresh: bool = False, files_only: bool = False) -> WsEntry | None:
        """The entry at ``rel`` from the cached listing, or (``fresh``) asked of the server by
        name: one item (and one folder) query, whatever the folder's size."""
        parent, _, name = rel.rpartition("/")
        if not fresh:
            return (await self.children(parent)).get(name)
        folder_id = await self.folder_id(parent)
        queries = [("item", {"folderId": folder_id, "name": name})]
        if not files_only:
            queries.append(("folder", {"parentType": "folder", "parentId": folder_id, "name": name}))
        for kind, params in queries:
            found = await self.api.get(kind, params, f"workspace/{rel}")
            if found:
                assert isinstance(found, list)
                return _entry(found[0], kind == "folder")
        return None

    async def folder_id(self, rel: str) -> str:
        if not rel:
            return self.root_id
        found = await self.entry(rel)
        if found is None:
            raise NotFound(f"workspace/{rel}")
        if not found.is_dir:
            raise NotADirectory(f"workspace/{rel}")
        return found.id

    def _known(self, parent: str, name: str, entry: WsEntry | None) -> None:
        """What we just did to a folder, written into its cached listing (which keeps its age:
        other clients' changes still show within the TTL)."""
        known = self._listings.get(parent)
        if known is not None:
            children = {k: v for k, v in known[1].items() if k != name}
            if entry is not None:
                children[name] = entry
            self._listings[parent] = (known[0], children)

    def changed(self, *rels: str) -> None:
        """Listings of these folders (and what is below them) are no longer what we know."""
        for rel in rels:
            for known, (_, children) in list(self._listings.items()):
                if known == rel or known.startswith(rel + "/") or not rel:
                    self._listings[known] = (-math.inf, children)  # still the last known one

    # -- changes ----------------------------------------------------------------------------

    async def mkdir(self, rel: str) -> None:
        parent, _, name = rel.rpartition("/")
        if await self.entry(rel, fresh=True) is not None:
            raise Exists(f"workspace/{rel}")
        params = {"parentType": "folder", "parentId": await self.folder_id(parent), "name": name}
        made = await self.api.call("POST", "folder", params, f"workspace/{rel}")
        self._known(parent, name, _entry(made, True))
        self._listings[rel] = (time.monotonic(), {})

    async def rmdir(self, rel: str) -> None:
        """Girder deletes a folder with its contents: refuse a non-empty one ourselves."""
        found = await self.entry(rel, fresh=True)
        if found is None:
            raise NotFound(f"workspace/{rel}")
        if not found.is_dir:
            raise NotADirectory(f"workspace/{rel}")
        if await self.children(rel, fresh=True):
            raise NotEmpty(f"workspace/{rel}")
        await self.api.call("DELETE", f"folder/{path_id(found.id)}", what=f"workspace/{rel}")
        self._known(*_split(rel), None)
        self._listings.pop(rel, None)

    async def unlink(self, rel: str) -> None:
        found = await self.entry(rel, fresh=True)
        if found is None:
            raise NotFound(f"workspace/{rel}")
        if found.is_dir:
            raise IsADirectory(f"workspace/{rel}")
        await self.api.call("DELETE", f"item/{path_id(found.id)}", what=f"workspace/{rel}")
        self._known(*_split(rel), None)

    async def rename(self, old: str, new: str) -> None:
        """rename(2) on the server: a file replaces a file, a directory an empty directory."""
        found = await self.entry(old, fresh=True)
        if found is None:
            raise NotFound(f"workspace/{old}")
        target = await self.entry(new, fresh=True)
        if target is not None:
            if target.is_dir != found.is_dir:
                raise (IsADirectory if target.is_dir else NotADirectory)(f"workspace/{new}")
            await (self.rmdir(new) if target.is_dir else self.unlink(new))
        new_parent, _, name = new.rpartition("/")
        kind = "folder" if found.is_dir else "item"
        params = {"name": name, ("parentId" if found.is_dir else "folderId"): await self.folder_id(new_parent)}
        moved = await self.api.call("PUT", f"{kind}/{path_id(found.id)}", params, f"workspace/{old}")
        self._known(*_split(old), None)
        self._known(new_parent, name, _entry(moved, found.is_dir))
        self.changed(old, new)  # ids below a moved folder changed with their paths

    async def upload(self, rel: str, fd: int, size: int, existing: WsEntry | None) -> tuple[WsEntry, str]:
        """The bytes of ``fd`` as the file ``rel`` (created, or replacing ``existing``); the
        server's entry and the sha256 of what was sent."""
        parent, name = _split(rel)
        folder_id = await self.folder_id(parent)
        if existing is not None and size == 0:  # an empty upload leaves the old bytes: delete first
            await self.unlink(rel)
        digest = hashlib.sha256()
        doc = await self._send(folder_id, name, fd, size, digest)
        assert isinstance(doc, dict)
        if not is_file(doc) or int(str(doc.get("size", -1))) != size:
            raise TransferFailed(f"workspace/{rel}: the server did not take the whole file")
        entry = WsEntry(str(doc["itemId"]), name, False, size, str(doc.get("updated") or ""))
        self._known(parent, name, entry)
        return entry, digest.hexdigest()

    async def _send(self, folder_id: str, name: str, fd: int, size: int, digest: hashlib._Hash) -> dict[str, object]:
        """One request for a small file; else chunks, each read and hashed (in a worker thread)
        while the one before it is sent: at most two chunks in memory."""
        if size <= CHUNK_SIZE:
            first = await trio.to_thread.run_sync(_read, fd, size, 0, digest)
            return await self.remote.start_upload(("folder", folder_id), None, name, size, first)
        upload = await self.remote.start_upload(("folder", folder_id), None, name, size, None)
        doc = upload
        chunks, ready = trio.open_memory_channel[Chunk](0)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read_chunks, chunks, fd, size, digest)
                async with ready:
                    async for offset, data in ready:
                        doc = await self.remote.send_chunk(str(upload["_id"]), offset, data)
        except BaseExceptionGroup as group:  # the reader's or the sender's failure, as itself
            raise first_error(group) from None
        return doc


def _split(rel: str) -> tuple[str, str]:
    parent, _, name = rel.rpartition("/")
    return parent, name


def _truncate(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.truncate(path, 0)


Chunk = tuple[int, bytes]


async def _read_chunks(out: trio.MemorySendChannel[Chunk], fd: int, size: int, digest: hashlib._Hash) -> None:
    """The chunks of ``fd`` in order, with their offsets, read ahead of the sender by one."""
    async with out:
        for offset in range(0, size, CHUNK_SIZE):
            data = await trio.to_thread.run_sync(_read, fd, min(size - offset, CHUNK_SIZE), offset, digest)
            await out.send((offset, data))


def _read(fd: int, size: int, offset: int, digest: hashlib._Hash) -> bytes:
    """Exactly ``size`` bytes (fewer: the copy shrank, a later upload sends it), hashed."""
    data = os.pread(fd, size, offset) if size > 0 else b""
    if len(data) != size:
        raise TransferFailed("the local copy changed while it was sent")
    digest.update(data)
    return data


#: Check the server's copy (entry) against the sha256 sent; the local copy sent, if unchanged.
Verify = Callable[[WsEntry, str, str | None], Awaitable[None]]
#: How long ``mkdir versions/X`` waits for the workspace's pending uploads.
VERSION_WAIT = 120.0
#: How long an unmount waits for pending uploads (the rest goes out at the next mount).
STOP_WAIT = 30.0
#: How long it waits for files still open for writing to be closed (their release may lag).
OPEN_GRACE = 2.0
#: Retries of uploads while the server is unreachable: 1 s doubling to 30 s, unbounded.
UPLOAD_RETRY = Backoff(1.0, maximum=30.0)


class Failed(TransferFailed):
    """An upload the server refused or got wrong (logged once; fsync reports it as EIO)."""


def conflict_name(rel: str, host: str) -> str:
    return f"{rel} (conflict from {host})"


class WorkspaceSync:
    """The write-back copies and the server, kept consistent: every change of a path takes the
    path's lock, so an upload never races a rename or unlink of the same file.

    ``verify(entry, digest, local)`` checks the server's copy and lands it in the host cache; the
    uploader loop runs in the daemon's nursery and retries while the server is unreachable."""

    def __init__(self, server: WorkspaceServer, journal: WriteBack, verify: Verify, host: str) -> None:
        self.server = server
        self.journal = journal
        self.verify = verify
        self.host = host
        self.rows: dict[str, Pending] = {}
        self._locks: dict[str, trio.Lock] = {}
        self._wake = trio.Event()
        self._idle = trio.Event()
        self._failed: dict[str, int] = {}  # rel -> gen that failed for good (until changed)
        #: The view's nodes follow a row the uploader moves (a conflict copy still being written).
        self.on_moved: Callable[[str, str], None] = lambda old, new: None

    async def start(self, nursery: trio.Nursery) -> None:
        await trio.to_thread.run_sync(self.journal.reopened_all)
        self.rows = {row.rel: row for row in await trio.to_thread.run_sync(self.journal.all)}
        if self.rows:
            log.info("workspace: %d file(s) a previous mount left to upload", len(self.rows))
        nursery.start_soon(self._run)

    def lock_for(self, rel: str) -> trio.Lock:
        return self._locks.setdefault(rel, trio.Lock())

    @contextlib.asynccontextmanager
    async def locked(self, rels: Iterable[str]) -> AsyncIterator[None]:
        """The locks of several paths, taken in one global order (sorted, each once): two
        changes that touch the same paths (a→b and b→a) never wait on each other."""
        async with contextlib.AsyncExitStack() as held:
            for rel in sorted(set(rels)):
                await held.enter_async_context(self.lock_for(rel))
            yield

    def copy_path(self, rel: str) -> Path | None:
        row = self.rows.get(rel)
        return None if row is None else self.journal.copy_path(row)

    def _refresh(self, rel: str, row: Pending | None) -> None:
        if row is None:
            self.rows.pop(rel, None)
        else:
            self.rows[rel] = row

    # -- what the view asks for -------------------------------------------------------------

    async def open_for_writing(self, rel: str, base: WsEntry | None, fill: int | None) -> Path:
        """The local copy of ``rel`` (made from ``fill`` if new), counted as open for writing."""
        row = await trio.to_thread.run_sync(self.journal.start, rel, base.updated if base else "", fill)
        self._refresh(rel, row)
        self._failed.pop(rel, None)
        return self.journal.copy_path(row)

    async def closed(self, rel: str, discard: bool = False) -> bool:
        """A writer closed: the copy is on disk and journalled; the uploader takes it. With
        ``discard`` (a write to the copy failed), the last writer's close drops the copy
        instead: the server's file stays as it was. True once no writer is left."""
        copy = self.copy_path(rel)
        if discard and copy is not None:  # its blocks first: the journal may need them
            await trio.to_thread.run_sync(_truncate, copy)
        row = await trio.to_thread.run_sync(self.journal.closed, rel)
        if row is not None and discard and not row.open:
            log.warning("workspace/%s: a write to the local copy failed; the copy is dropped", rel)
            await self.dropped(rel)
            return True
        self._refresh(rel, row)
        self._kick()
        return row is None or not row.open

    async def flush(self, rel: str) -> None:
        """fsync: upload now (still open for writing) and wait for the server's copy. The caller
        holds ``lock_for(rel)`` (it must know the path stays the file's while it waits)."""
        row = self.rows.get(rel)
        if row is not None:
            await self._upload(row)

    async def dropped(self, rel: str) -> None:
        await trio.to_thread.run_sync(self.journal.drop, rel)
        self._refresh(rel, None)

    async def renamed(self, old: str, new: str) -> None:
        await trio.to_thread.run_sync(self.journal.rename, old, new)
        self.rows = {row.rel: row for row in await trio.to_thread.run_sync(self.journal.all)}

    def pending_below(self, rel: str) -> list[str]:
        prefix = rel + "/" if rel else ""
        return [r for r in self.rows if r.startswith(prefix)]

    async def drain(self, timeout: float) -> bool:
        """Wait (bounded) until nothing closed waits to be uploaded; True if so, else a warning.

        The kernel sends a file's release after close(2) has returned, so files still open get
        a short grace to be closed first."""
        with trio.move_on_after(timeout):
            with trio.move_on_after(OPEN_GRACE):
                while any(row.open for row in self.rows.values()):
                    await trio.sleep(0.02)
            while self._waiting():
                self._kick()
                self._idle = trio.Event()
                await self._idle.wait()
            return True
        left = self._waiting()
        if left:
            log.warning("workspace: %d upload(s) still pending after %.0fs", len(left), timeout)
        return not left

    def _waiting(self) -> list[Pending]:
        return [r for r in self.rows.values() if not r.open and self._failed.get(r.rel) != r.gen]

    def report(self) -> dict[str, object]:
        return {"pending_uploads": len(self.rows), "failed_uploads": sorted(self._failed)}

    # -- the uploader -----------------------------------------------------------------------

    def _kick(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        retry = UPLOAD_RETRY.tries()
        while True:
            todo = self._waiting()
            if not todo:
                self._idle.set()
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            try:
                for row in todo:
                    async with self.lock_for(row.rel):
                        current = self.rows.get(row.rel)
                        if current is not None and not current.open:
                            with contextlib.suppress(Failed):
                                await self._upload(current)
            except (Unreachable, DiskFull):
                await next(retry).pause()  # the server is down or our disk full: the rows wait
                continue
            retry = UPLOAD_RETRY.tries()

    async def _upload(self, row: Pending) -> None:
        """One row to the server; a file changed there since it was read is not overwritten: the
        local copy goes beside it as ``NAME (conflict from HOST)``."""
        try:
            target, existing = await self._target(row)
            fd = await trio.to_thread.run_sync(os.open, self.journal.copy_path(row), os.O_RDONLY | os.O_CLOEXEC)
            try:
                size = os.fstat(fd).st_size
                entry, digest = await self.server.upload(target, fd, size, existing)
            finally:
                os.close(fd)
            if target == row.rel:
                await trio.to_thread.run_sync(self.journal.rebase, row.rel, entry.updated)
            # the copy, unchanged while no writer holds it (under the row's lock), may become
            # the host cache's copy; a later writer gets a copy of its own (``WriteBack.start``)
            unchanged = target == row.rel and not row.open
            await self.verify(entry, digest, str(self.journal.copy_path(row)) if unchanged else None)
            await self._sent(row, target, entry)
        except (Unreachable, DiskFull):
            raise  # for a while only: tried again
        except (WtfsError, OSError) as exc:
            self._failed[row.rel] = row.gen  # not tried again until the file changes
            reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
            log.error("workspace/%s: upload failed, the local copy is kept: %s", row.rel, reason)
            failed = Failed(f"workspace/{row.rel}: {reason}")
            failed.errno = exc.errno or failed.errno  # EACCES for a share we may not write, ...
            raise failed from None

    async def _sent(self, row: Pending, target: str, entry: WsEntry) -> None:
        """The server holds the row's bytes at ``target``: the journal forgets what it can."""
        if target != row.rel:  # the conflict copy is on the server; the name keeps theirs
            current = self.rows.get(row.rel)
            if current is not None and (current.open or current.gen != row.gen):
                await self._keep_as(current, target, entry)  # still being written
            else:
                await self.dropped(row.rel)
            return
        done = await trio.to_thread.run_sync(self.journal.uploaded, row.rel, row.gen, entry.updated)
        if done:
            await trio.to_thread.run_sync(remove_copy, self.journal.copy_path(row))
        self._refresh(row.rel, await trio.to_thread.run_sync(self.journal.get, row.rel))

    async def _keep_as(self, row: Pending, target: str, entry: WsEntry) -> None:
        """A conflict copy still open for writing: its row (and the writer's node) moves to the
        conflict name, based on what was just sent there, so later writes go there too. The
        caller holds the row's lock; the target's sorts after it (it starts with the row's path)."""
        async with self.lock_for(target):
            await self.renamed(row.rel, target)
            await trio.to_thread.run_sync(self.journal.rebase, target, entry.updated)
            self._refresh(target, await trio.to_thread.run_sync(self.journal.get, target))
            self.on_moved(row.rel, target)

    async def _target(self, row: Pending) -> tuple[str, WsEntry | None]:
        """Where the row goes, and what is there now (a folder there: the server refuses it)."""
        current = await self.server.entry(row.rel, fresh=True, files_only=True)
        if current is None or current.updated == row.base:
            return row.rel, current
        target = conflict_name(row.rel, self.host)
        log.warning("workspace/%s changed on the server since it was read: the local copy goes to %r", row.rel, target)
        return target, await self.server.entry(target, fresh=True, files_only=True)


async def open_workspace(
    api: GirderApi, tale_id: str, ttl: float, state_dir: Path, verify: Verify, host: str, nursery: trio.Nursery
) -> WorkspaceSync:
    """The tale's workspace folder (its ``workspaceId``) and this mount's journal for it, the
    uploader started (it first finishes what a previous mount left)."""
    tale = await api.get(f"tale/{tale_id}", what=f"tale {tale_id}")
    folder = await api.get(f"folder/{tale['workspaceId']}", what=f"the workspace of tale {tale_id}")
    writable = int(folder.get("_accessLevel", 0)) >= WRITE_ACCESS
    journal = await trio.to_thread.run_sync(WriteBack, workspace_state(state_dir, api.api_url, tale_id))
    sync = WorkspaceSync(WorkspaceServer(api, str(tale["workspaceId"]), ttl, writable), journal, verify, host)
    await sync.start(nursery)
    return sync
