"""Publish a scanned tree into a Girder folder: folders first, then files by ``jobs`` workers.

Nothing is ever created twice: folders and items are found by name before being created (and
created with ``reuseExisting``), so a rerun after a crash reuses what the crashed run made. The
journal only decides how much work can be skipped or resumed; Girder's listing decides what
exists. ``meta.sha256`` is written last, after Girder's size matched: an item carrying it is
complete.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import trio

from ..catalog.girder_api import Unreachable
from ..confine import REFUSED_ERRNOS, open_file
from ..errors import AccessDenied, Exists, TransferFailed, WtfsError
from ..retry import Backoff
from .args import CHUNK_SIZE
from .journal import Journal, Record, State
from .progress import Tally
from .remote import Doc, Remote, is_file
from .tree import LocalFile, LocalTree

CHUNK_RETRY = Backoff(0.25, attempts=4)
#: Done rows of small files written to the journal together (one SQLite transaction).
BATCH = 64
#: New files up to READ_BYTES in all, at most READ_FILES of them, are read by one worker-thread
#: trip: a thread hop costs more than reading a small file.
READ_FILES = 16
READ_BYTES = 1024**2


@dataclass(frozen=True)
class Options:
    wtfs_meta: dict[str, Any]
    jobs: int = 4
    chunk_size: int = CHUNK_SIZE
    overwrite: bool = True


@dataclass
class Failure:
    rel: str
    error: WtfsError

    def __str__(self) -> str:
        return f"{self.rel}: {self.error}"


def _sha256_of(item: Doc | None) -> str | None:
    value = (item or {}).get("meta", {}).get("sha256")
    return value if isinstance(value, str) else None


def _pread(fd: int, size: int, offset: int) -> bytes:
    """Exactly ``size`` bytes at ``offset``; fewer means the file shrank under us."""
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise TransferFailed("changed while being uploaded (it shrank); publish it again")
    return data


def _hash_prefix(fd: int, digest: Any, size: int, chunk: int) -> None:
    """Hash the first ``size`` bytes: the part of a resumed upload Girder already holds."""
    for start in range(0, size, chunk):
        digest.update(_pread(fd, min(chunk, size - start), start))


def _open_scanned(local: LocalFile) -> int:
    """An fd on the very file the scan saw: walked to without following links, a regular file
    (a FIFO swapped in must not block us), the same device, inode and size; else one line."""
    try:
        fd = open_file(str(local.path))
    except OSError as exc:
        if exc.errno in REFUSED_ERRNOS:
            raise TransferFailed("replaced by a symbolic link since it was scanned; left out") from None
        raise
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino, st.st_size) != (local.dev, local.ino, local.size):
            raise TransferFailed("replaced or resized since it was scanned; publish it again")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_whole(fd: int, size: int) -> tuple[bytes, str]:
    data = _pread(fd, size, 0)
    return data, hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Read:
    """A small file read whole: its bytes, their sha256, and its size and mtime once read."""

    data: bytes
    digest: str
    held: tuple[int, int]


def _read_small(files: list[LocalFile]) -> list[Read | WtfsError | OSError]:
    """Each file opened (as scanned), read whole, hashed and closed, in one worker-thread trip;
    a file that cannot be gets its error, reported by the worker that sends it."""
    reads: list[Read | WtfsError | OSError] = []
    for local in files:
        try:
            fd = _open_scanned(local)
            try:
                data, digest = _read_whole(fd, local.size)
                st = os.fstat(fd)
            finally:
                os.close(fd)
        except (WtfsError, OSError) as exc:
            reads.append(exc)
            continue
        reads.append(Read(data, digest, (st.st_size, st.st_mtime_ns)))
    return reads


def _hash_file(fd: int, chunk: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while block := os.pread(fd, chunk, offset):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()


async def _thread(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


@dataclass
class Publisher:
    remote: Remote
    journal: Journal
    options: Options
    tally: Tally
    failures: list[Failure] = field(default_factory=list)
    folders: dict[str, str] = field(default_factory=dict)  # relative dir -> folder id
    items: dict[str, dict[str, Doc]] = field(default_factory=dict)  # relative dir -> name -> item
    not_started: int = 0  # files left alone once the publish halted
    unwritten: list[Record] = field(default_factory=list)  # small files done, not yet in the journal
    todo: deque[LocalFile] = field(default_factory=deque)  # files no worker has taken yet

    async def publish(self, tree: LocalTree, root_id: str) -> None:
        self.folders[""] = root_id
        self.items[""] = await self.remote.items(root_id)
        await self._make_folders(tree.dirs)
        self.todo.extend(tree.files)
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(self.options.jobs):
                    nursery.start_soon(self._worker)
        finally:
            with trio.CancelScope(shield=True):
                await self._write_done(0)

    @property
    def halted(self) -> WtfsError | None:
        """Girder stopped answering or refuses us: starting more files would only fail the same way."""
        return next((f.error for f in self.failures if isinstance(f.error, Unreachable | AccessDenied)), None)

    # -- folders -----------------------------------------------------------------------------

    async def _make_folders(self, dirs: list[str]) -> None:
        """Parents before children; a folder found by name is reused and its items listed."""
        children: dict[str, dict[str, str]] = {}
        for rel in dirs:
            parent, _, name = rel.rpartition("/")
            parent_id = self.folders.get(parent)
            if parent_id is None or self.halted:
                continue  # its parent failed: its files report it
            try:
                await self._make_folder(rel, name, parent_id, children)
            except WtfsError as exc:
                self.failures.append(Failure(rel + "/", exc))

    async def _make_folder(self, rel: str, name: str, parent_id: str, children: dict[str, dict[str, str]]) -> None:
        if parent_id not in children:
            children[parent_id] = await self.remote.subfolders(parent_id)
        found = children[parent_id].get(name)
        if found is not None:
            self.folders[rel], self.items[rel] = found, await self.remote.items(found)
            return
        created = await self.remote.create_folder(parent_id, name, {"wtfs": self.options.wtfs_meta})
        self.folders[rel], self.items[rel], children[created] = created, {}, {}

    # -- files -------------------------------------------------------------------------------

    async def _worker(self) -> None:
        """Takes the next file, or the next run of new small files (read in one thread trip,
        when this worker is ready to send them), until none is left."""
        while self.todo:
            first = self.todo.popleft()
            if self.halted or not self._new_small(first):
                await self._one(first, None)
                continue
            files = self._run_from(first)
            reads = await _thread(_read_small, files)
            for local, read in zip(files, reads, strict=True):
                await self._one(local, read)

    def _run_from(self, first: LocalFile) -> list[LocalFile]:
        """``first`` and the new small files after it, up to READ_FILES and READ_BYTES."""
        files, size = [first], first.size
        while self.todo and len(files) < READ_FILES and self._new_small(self.todo[0]):
            size += self.todo[0].size
            if size > READ_BYTES:
                break
            files.append(self.todo.popleft())
        return files

    def _new_small(self, local: LocalFile) -> bool:
        """In a published folder, not yet in Girder, and at most one chunk (one request)."""
        items = self.items.get(local.folder)
        return items is not None and local.name not in items and local.size <= self.options.chunk_size

    async def _one(self, local: LocalFile, read: Read | WtfsError | OSError | None) -> None:
        """One file to the end: counted as uploaded, already there, or failed (one line)."""
        if self.halted:
            self.not_started += 1
            self.tally.files_failed += 1
            return
        try:
            sent = await self._publish_file(local, read)
        except (WtfsError, OSError) as exc:  # OSError: the local file (gone, unreadable)
            error = exc if isinstance(exc, WtfsError) else TransferFailed(exc.strerror or str(exc))
            self.failures.append(Failure(local.rel, error))
            self.tally.files_failed += 1
            return
        self.tally.counters.n_files_processed += 1
        self.tally.bytes_done += local.size
        if sent:
            self.tally.files_uploaded += 1
        else:
            self.tally.files_skipped += 1

    async def _publish_file(self, local: LocalFile, read: Read | WtfsError | OSError | None) -> bool:
        """True if bytes were sent; False when Girder already holds these bytes. ``read``: the
        file read whole, for a new small file."""
        folder_id = self.folders.get(local.folder)
        if folder_id is None:
            raise TransferFailed(f"its folder {local.folder!r} could not be published")
        if read is not None:
            return await self._publish_new_small(local, folder_id, read)
        existing = self.items[local.folder].get(local.name)
        record: Record | None = await _thread(self.journal.get, local.rel)
        if _unchanged(local, record, existing):
            return False
        fd: int = await _thread(_open_scanned, local)
        try:
            return await self._send_file(local, fd, folder_id, existing, record)
        finally:
            os.close(fd)  # no thread still reads it: trio waits for its worker threads

    async def _publish_new_small(self, local: LocalFile, folder_id: str, read: Read | WtfsError | OSError) -> bool:
        """Most files of a tree: new, and small. Read whole (its size and mtime checked once read:
        the bytes sent are those bytes), sent in Girder's init request (which makes the item only
        once all bytes are in), then checked and given ``meta``: two calls. Nothing to resume, so
        no journal row before."""
        if not isinstance(read, Read):
            raise read
        self._count_read(len(read.data), whole=True)
        await self._held_still(local, read.held)
        doc = await self.remote.start_upload(("folder", folder_id), None, local.name, local.size, read.data)
        self.tally.counters.n_bytes_processed += len(read.data)
        await self._complete(local, str(doc.get("itemId")), doc, read.digest)
        return True

    async def _send_file(
        self, local: LocalFile, fd: int, folder_id: str, existing: Doc | None, record: Record | None
    ) -> bool:
        resuming = _resumable(local, record, existing)
        if existing is not None and not resuming and await self._in_place(local, fd, existing, record):
            return False
        item = existing or await self.remote.create_item(folder_id, local.name, {"wtfs": self.options.wtfs_meta})
        await self._upload(local, fd, item, record if resuming else None, new=existing is None)
        return True

    async def _in_place(self, local: LocalFile, fd: int, item: Doc, record: Record | None) -> bool:
        """An item by that name exists: True if it holds these bytes; refused under --no-overwrite
        if it holds others (an empty item, or one of our unfinished uploads, is filled in)."""
        remote_sha = _sha256_of(item)
        if remote_sha is None and (record is not None or not await self.remote.item_files(str(item["_id"]))):
            return False  # ours, unfinished: upload into it
        if remote_sha is not None:
            digest = await _thread(_hash_file, fd, self.options.chunk_size)
            self.tally.counters.n_files_read += 1
            self.tally.counters.n_bytes_read += local.size
            if digest == remote_sha and item.get("meta", {}).get("size") == local.size:
                await self._record_in_place(local, item, digest)
                return True
        if not self.options.overwrite:
            raise Exists("already in Girder with other contents (--no-overwrite)")
        return False

    async def _record_in_place(self, local: LocalFile, item: Doc, digest: str) -> None:
        files = await self.remote.item_files(str(item["_id"]))
        file_id = str(files[0]["_id"]) if files else ""
        await _thread(self.journal.done, local.rel, local.size, local.mtime_ns, str(item["_id"]), file_id, digest)

    async def _upload(self, local: LocalFile, fd: int, item: Doc, record: Record | None, new: bool) -> None:
        item_id = str(item["_id"])
        upload_id, offset = await self._resume_point(record)
        if upload_id is None:
            files = [] if new else await self.remote.item_files(item_id)
            target = str(files[0]["_id"]) if files else None
            if local.size <= self.options.chunk_size:
                doc, digest = await self._upload_whole(local, fd, ("item", item_id), target)
                return await self._finish(local, fd, item_id, doc, digest)
            upload = await self.remote.start_upload(("item", item_id), target, local.name, local.size, None)
            upload_id, offset = str(upload["_id"]), 0
            await _thread(self.journal.uploading, local.rel, local.size, local.mtime_ns, item_id, upload_id, 0)
        doc, digest = await self._send_chunks(local, fd, item_id, upload_id, offset)
        await self._finish(local, fd, item_id, doc, digest)

    async def _resume_point(self, record: Record | None) -> tuple[str | None, int]:
        """Girder's offset in the journal's upload, if Girder still has it."""
        if record is None or record.upload_id is None:
            return None, 0
        offset = await self.remote.upload_offset(record.upload_id)
        return (None, 0) if offset is None else (record.upload_id, offset)

    async def _upload_whole(
        self, local: LocalFile, fd: int, parent: tuple[str, str], target: str | None
    ) -> tuple[Doc, str]:
        """A file of at most one chunk: read, hashed and sent in one request."""
        data, digest = await _thread(_read_whole, fd, local.size)
        self._count_read(len(data), whole=True)
        doc = await self.remote.start_upload(parent, target, local.name, local.size, data)
        self.tally.counters.n_bytes_processed += len(data)
        return doc, digest

    async def _send_chunks(
        self, local: LocalFile, fd: int, item_id: str, upload_id: str, offset: int
    ) -> tuple[Doc, str]:
        """From Girder's offset to the end; the journal follows each acknowledged chunk. While a
        chunk is sent, it is hashed and the next one read, in threads: the disk, the hash and
        the network overlap."""
        digest = hashlib.sha256()
        doc: Doc = {}
        await _thread(_hash_prefix, fd, digest, offset, self.options.chunk_size)  # Girder holds it
        self._count_read(offset, whole=False)
        data = await self._read(fd, local, offset)
        while data:
            following: list[bytes] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_thread, digest.update, data)
                nursery.start_soon(self._read_into, following, fd, local, offset + len(data))
                doc = await self._chunk(upload_id, offset, data)
            offset += len(data)
            self.tally.counters.n_bytes_processed += len(data)
            if offset < local.size:
                args = (local.rel, local.size, local.mtime_ns, item_id, upload_id, offset)
                await _thread(self.journal.uploading, *args)
            data = following[0]
        return doc, digest.hexdigest()

    async def _read(self, fd: int, local: LocalFile, offset: int) -> bytes:
        """The chunk at ``offset`` (empty at the end), counted as read."""
        size = min(self.options.chunk_size, local.size - offset)
        data: bytes = await _thread(_pread, fd, size, offset) if size > 0 else b""
        self._count_read(len(data), whole=size > 0 and offset + size == local.size)
        return data

    async def _read_into(self, out: list[bytes], fd: int, local: LocalFile, offset: int) -> None:
        out.append(await self._read(fd, local, offset))

    async def _chunk(self, upload_id: str, offset: int, data: bytes) -> Doc:
        """One chunk; when its answer is lost, Girder's offset says whether it landed."""
        for attempt in CHUNK_RETRY.tries():
            try:
                return await self.remote.send_chunk(upload_id, offset, data)
            except TransferFailed:
                if attempt.last:
                    raise
            landed = await self.remote.upload_offset(upload_id)
            if landed == offset + len(data) and offset + len(data) > 0:
                return {"received": landed}  # it landed; only its answer was lost
            if landed != offset:
                raise TransferFailed(f"Girder's upload is at {landed}, expected {offset}")
            await attempt.pause()
        raise AssertionError("unreachable")

    async def _finish(self, local: LocalFile, fd: int, item_id: str, doc: Doc, digest: str) -> None:
        """Check Girder's size and that the file held still; only then set meta.sha256."""
        st = await _thread(os.fstat, fd)  # the file whose bytes were sent, not what its path names now
        await self._held_still(local, (st.st_size, st.st_mtime_ns))
        await self._complete(local, item_id, doc, digest)

    async def _held_still(self, local: LocalFile, held: tuple[int, int]) -> None:
        """The file's size and mtime, read after its bytes, are still those the scan saw."""
        if held != (local.size, local.mtime_ns):
            await _thread(self.journal.pending, local.rel, *held)
            raise TransferFailed("changed while being uploaded; publish it again")

    async def _complete(self, local: LocalFile, item_id: str, doc: Doc, digest: str) -> None:
        """Girder's size checked, then meta.sha256 set: the item is complete; journaled."""
        _check_received(local, doc)
        meta = {"sha256": digest, "size": local.size, "wtfs": self.options.wtfs_meta}
        await self.remote.set_item_meta(item_id, meta)
        done = Record(
            local.rel, State.DONE, local.size, local.mtime_ns, None, local.size, item_id, str(doc["_id"]), digest
        )
        self.unwritten.append(done)
        # A file that had an upload row is written at once (else a rerun would resume it); small
        # ones in batches: a done row lost to a crash costs a rerun one hash, Girder's sha256 says done.
        await self._write_done(BATCH if local.size <= self.options.chunk_size else 0)

    async def _write_done(self, batch: int) -> None:
        """Journal the files done so far, in one transaction, once more than ``batch`` wait."""
        if len(self.unwritten) > batch:
            rows, self.unwritten = self.unwritten, []
            await _thread(self.journal.done_many, rows)

    def _count_read(self, nbytes: int, whole: bool) -> None:
        self.tally.counters.n_bytes_read += nbytes
        self.tally.counters.n_files_read += int(whole)


def _check_received(local: LocalFile, doc: Doc) -> None:
    """Girder finished the upload and holds as many bytes as the file has."""
    if not is_file(doc):
        raise TransferFailed("Girder did not complete the upload; publish it again")
    if int(doc.get("size", -1)) != local.size:
        raise TransferFailed(f"Girder holds {doc.get('size')} bytes, {local.size} were sent")


def _unchanged(local: LocalFile, record: Record | None, item: Doc | None) -> bool:
    """Done before, the local file untouched, and Girder's item still carries that sha256."""
    if not _recorded(State.DONE, local, record, item):
        return False
    assert record is not None and item is not None
    return _sha256_of(item) == record.sha256 and item.get("meta", {}).get("size") == local.size


def _resumable(local: LocalFile, record: Record | None, item: Doc | None) -> bool:
    """An upload of these very bytes into this very item was under way."""
    return _recorded(State.UPLOADING, local, record, item)


def _recorded(state: State, local: LocalFile, record: Record | None, item: Doc | None) -> bool:
    """The journal has ``local`` as it is now in ``state``, for the item Girder still has."""
    return (
        record is not None
        and record.state == state
        and record.describes(local.size, local.mtime_ns)
        and item is not None
        and str(item["_id"]) == record.item_id
    )
