"""workspace/ in WholeTale mode: the tale's workspace folder on the server, read-write.

Listings are the server's (cached for ``metadata_ttl``) with the files written here and not yet
uploaded laid over them. A file is read from its local write-back copy if it has one, else
from the host cache (landed like any other object, keyed by the item and its ``updated``).
Writes go to the local copy and are uploaded when the file is closed or fsynced
(``store.wt_workspace.WorkspaceSync``). The server's ids change with every rename, so nodes
are keyed by a number of their own and follow their path when renamed.
"""

from __future__ import annotations

import errno
import itertools
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ..dm.base import DataManager
from ..errors import AccessDenied, DiskFull, Exists, IsADirectory, NotEmpty, NotFound
from ..posix import RENAME_NOREPLACE
from ..store.wt_workspace import WorkspaceServer, WorkspaceSync, WsEntry
from .base import Attr, Caller, FdFile, Node, OpenFile, SetAttr, wants_write

#: Attributes change through other clients and through uploads: the kernel asks again soon.
ATTR_TTL = 1.0


class WsTree:
    """The nodes of one workspace, by path; ``owner`` is the lock owner in the host cache."""

    def __init__(self, sync: WorkspaceSync, dm: DataManager, owner: str) -> None:
        self.sync = sync
        self.server: WorkspaceServer = sync.server
        self.dm = dm
        self.owner = owner
        self.nodes: dict[str, WsNode] = {}
        self._serial = itertools.count(1)
        self.root = WsDir(self, "", next(self._serial))
        self.started_ns = time.time_ns()
        sync.on_moved = self.moved

    def node(self, rel: str, is_dir: bool) -> WsNode:
        found = self.nodes.get(rel)
        if found is None or isinstance(found, WsDir) != is_dir:
            found = (WsDir if is_dir else WsFile)(self, rel, next(self._serial))
            self.nodes[rel] = found
        return found

    def below(self, rel: str) -> set[str]:
        """``rel`` and the paths below it that a node or a journal row holds: what a rename of
        it must lock, so that no close, fsync or upload of a file below runs meanwhile."""
        prefix = rel + "/"
        return {rel} | {r for r in itertools.chain(self.nodes, self.sync.rows) if r.startswith(prefix)}

    def moved(self, old: str, new: str) -> None:
        """Nodes follow a rename (and those below a renamed directory)."""
        for rel in [r for r in self.nodes if r == old or r.startswith(old + "/")]:
            node = self.nodes.pop(rel)
            node.rel = new + rel[len(old) :]
            self.nodes[node.rel] = node


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _writable(tree: WsTree, rel: str) -> None:
    if not tree.server.writable:
        raise AccessDenied(f"workspace/{rel}: the tale's workspace is shared read-only")


class WsNode(Node):
    def __init__(self, tree: WsTree, rel: str, serial: int) -> None:
        self.tree = tree
        self.rel = rel
        self.key = ("wt-workspace", serial)
        #: Unlinked or replaced by a rename: its path (and journal row) belong to another file now.
        self.detached = False


class WsDir(WsNode):
    async def attr(self) -> Attr:
        entry = await self.tree.server.entry(self.rel) if self.rel else None
        perm = 0o755 if self.tree.server.writable else 0o555
        return Attr.directory(entry.mtime_ns if entry else self.tree.started_ns, perm=perm, ttl=ATTR_TTL)

    async def _children(self) -> dict[str, bool]:
        """Name -> is a directory: the server's listing and this mount's files not yet sent."""
        found = {name: e.is_dir for name, e in (await self.tree.server.children(self.rel)).items()}
        prefix = _join(self.rel, "")
        for rel in self.tree.sync.rows:
            if rel.startswith(prefix) and "/" not in rel[len(prefix) :]:
                found.setdefault(rel[len(prefix) :], False)
        return found

    async def lookup(self, name: str) -> Node:
        is_dir = (await self._children()).get(name)
        if is_dir is None:
            raise NotFound(name)
        return self.tree.node(_join(self.rel, name), is_dir)

    async def listdir(self) -> list[tuple[str, Node]]:
        children = await self._children()
        return [(name, self.tree.node(_join(self.rel, name), children[name])) for name in sorted(children)]

    async def create(self, name: str, mode: int, flags: int, caller: Caller) -> tuple[Node, OpenFile]:
        rel = _join(self.rel, name)
        _writable(self.tree, rel)
        children = await self._children()
        if name in children and (flags & os.O_EXCL or children[name]):
            raise (IsADirectory if children[name] else Exists)(f"workspace/{rel}")
        node = self.tree.node(rel, False)
        assert isinstance(node, WsFile)
        return node, await node.open(flags | os.O_TRUNC if name not in children else flags)

    async def mkdir(self, name: str, mode: int, caller: Caller) -> Node:
        rel = _join(self.rel, name)
        _writable(self.tree, rel)
        if name in await self._children():
            raise Exists(f"workspace/{rel}")
        await self.tree.server.mkdir(rel)
        return self.tree.node(rel, True)

    async def rmdir(self, name: str) -> None:
        rel = _join(self.rel, name)
        _writable(self.tree, rel)
        if self.tree.sync.pending_below(rel):
            raise NotEmpty(f"workspace/{rel}")
        await self.tree.server.rmdir(rel)
        self.tree.nodes.pop(rel, None)

    async def unlink(self, name: str) -> None:
        rel = _join(self.rel, name)
        _writable(self.tree, rel)
        async with self.tree.sync.lock_for(rel):
            entry = await self.tree.server.entry(rel, fresh=True)
            if entry is not None and entry.is_dir:
                raise IsADirectory(f"workspace/{rel}")
            if entry is not None:
                await self.tree.server.unlink(rel)  # first: if it fails, the local changes stay
            elif rel not in self.tree.sync.rows:
                raise NotFound(f"workspace/{rel}")
            await self.tree.sync.dropped(rel)
            gone = self.tree.nodes.pop(rel, None)
            if gone is not None:
                gone.detached = True

    async def rename(self, name: str, new_parent: Node, new_name: str, flags: int) -> None:
        if not isinstance(new_parent, WsDir) or new_parent.tree is not self.tree:
            raise OSError(errno.EXDEV, "rename across trees")
        if flags & ~RENAME_NOREPLACE:
            raise OSError(errno.EINVAL, "RENAME_EXCHANGE is not supported in a WholeTale workspace")
        old, new = _join(self.rel, name), _join(new_parent.rel, new_name)
        _writable(self.tree, old)
        sync, server = self.tree.sync, self.tree.server
        if flags & RENAME_NOREPLACE and new_name in await new_parent._children():
            raise Exists(f"workspace/{new}")
        if old == new:
            return
        async with sync.locked(self.tree.below(old) | self.tree.below(new)):
            if sync.pending_below(new):  # the server may see it empty; files not yet sent are there
                raise NotEmpty(f"workspace/{new}")
            on_server = await server.entry(old, fresh=True)
            if on_server is None and old not in sync.rows:
                raise NotFound(f"workspace/{old}")
            if on_server is not None:
                await server.rename(old, new)
            elif (target := await server.entry(new, fresh=True)) is not None:
                if target.is_dir:
                    raise IsADirectory(f"workspace/{new}")
                await server.unlink(new)  # a file not yet uploaded replaces the server's
            await sync.renamed(old, new)
            replaced = self.tree.nodes.pop(new, None)
            if replaced is not None:
                replaced.detached = True
            self.tree.moved(old, new)  # before the lock goes: a release waiting on it sees ``new``


class WsFile(WsNode):
    def __init__(self, tree: WsTree, rel: str, serial: int) -> None:
        super().__init__(tree, rel, serial)
        #: The copy's disk work, in a worker thread, one call at a time: writes keep their order.
        self.io = trio.CapacityLimiter(1)
        #: A write to the local copy failed (disk full): the copy is incomplete and is dropped
        #: when its last writer closes, the server's copy stays what it was.
        self.spoiled = False

    async def attr(self) -> Attr:
        copy = self.tree.sync.copy_path(self.rel)
        if copy is not None:
            try:
                st = await trio.to_thread.run_sync(os.stat, copy)
                return Attr.file(st.st_size, st.st_mtime_ns, perm=0o644, ttl=ATTR_TTL)
            except FileNotFoundError:
                pass  # uploaded meanwhile: the server's entry
        entry = await self.tree.server.entry(self.rel)
        if entry is None:
            raise NotFound(f"workspace/{self.rel}")
        return Attr.file(entry.size, entry.mtime_ns, perm=0o644 if self.tree.server.writable else 0o444, ttl=ATTR_TTL)

    async def setattr(self, changes: SetAttr) -> Attr:
        """Only a size change (truncate) means something to the server; times and modes are
        the server's own."""
        if changes.size is not None:
            handle = await self.open(os.O_WRONLY)
            try:
                await trio.to_thread.run_sync(os.ftruncate, handle.fd, changes.size, limiter=self.io)
            finally:
                await handle.release()
        return await self.attr()

    async def _entry(self) -> WsEntry | None:
        entry = await self.tree.server.entry(self.rel)
        if entry is not None and entry.is_dir:
            raise IsADirectory(f"workspace/{self.rel}")
        return entry

    async def open(self, flags: int) -> WsHandle:
        sync = self.tree.sync
        if not wants_write(flags):
            copy = sync.copy_path(self.rel)
            if copy is not None:
                try:
                    return WsHandle(await trio.to_thread.run_sync(os.open, copy, os.O_RDONLY | os.O_CLOEXEC))
                except FileNotFoundError:
                    pass  # uploaded and removed meanwhile: read the server's
            return await self._read_server()
        _writable(self.tree, self.rel)
        async with sync.lock_for(self.rel):
            entry = None if self.rel in sync.rows else await self._entry()
            fill = None
            if entry is not None and not flags & os.O_TRUNC:
                fill = await self._read_server(entry)
            try:
                copy = await sync.open_for_writing(self.rel, entry, fill.fd if fill else None)
            finally:
                if fill is not None:
                    await fill.release()
        mode = os.O_RDWR | os.O_CLOEXEC | (flags & (os.O_APPEND | os.O_TRUNC))
        try:
            fd = await trio.to_thread.run_sync(os.open, copy, mode)
        except BaseException:
            async with _path_of(self) as rel:  # renamed meanwhile: the row moved with it
                if not self.detached:
                    await sync.closed(rel)
            raise
        return WsWriter(fd, self)

    async def _read_server(self, entry: WsEntry | None = None) -> WsHandle:
        """The server's bytes, landed in the host cache (or already there)."""
        entry = entry or await self._entry()
        if entry is None:
            raise NotFound(f"workspace/{self.rel}")
        lock = await self.tree.dm.lock(entry.object(), self.tree.owner)
        try:
            fd = await trio.to_thread.run_sync(os.open, lock.path, os.O_RDONLY | os.O_CLOEXEC)
        finally:
            await self.tree.dm.unlock(lock)  # the open descriptor keeps the bytes
        return WsHandle(fd)


class WsHandle(FdFile):
    """A read-only descriptor on a local copy or a landed copy."""

    # neither keep_cache nor direct_io: the kernel drops its pages of the file at each open


class WsWriter(WsHandle):
    """A descriptor on the local write-back copy; closing it hands the copy to the uploader.

    It holds the node, not the path: a file renamed while open (editors save by write, then
    rename, and the kernel's release comes after) is closed and uploaded under its new name."""

    def __init__(self, fd: int, node: WsFile) -> None:
        super().__init__(fd)
        self.node = node
        self.sync = node.tree.sync

    async def write(self, offset: int, data: bytes) -> int:
        try:
            return await trio.to_thread.run_sync(os.pwrite, self.fd, data, offset, limiter=self.node.io)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self.node.spoiled = True
            raise _full(self.node) from None

    async def fsync(self, datasync: bool) -> None:
        await trio.to_thread.run_sync(os.fsync, self.fd, limiter=self.node.io)
        async with _path_of(self.node) as rel:
            if self.node.spoiled:
                raise _full(self.node)  # an incomplete copy never goes to the server
            if not self.node.detached:
                await self.sync.flush(rel)

    async def release(self) -> None:
        async with self.node.io:  # no write of this file still in a thread
            os.close(self.fd)
        async with _path_of(self.node) as rel:
            # a detached node's row went with it
            if not self.node.detached and await self.sync.closed(rel, discard=self.node.spoiled):
                self.node.spoiled = False


def _full(node: WsFile) -> DiskFull:
    return DiskFull(
        f"workspace/{node.rel}: the disk of the local write-back copies is full; "
        "the file keeps its last uploaded contents once closed"
    )


@asynccontextmanager
async def _path_of(node: WsNode) -> AsyncIterator[str]:
    """The node's path, its lock held: no rename moves the node meanwhile."""
    while True:
        rel = node.rel
        async with node.tree.sync.lock_for(rel):
            if node.rel == rel:
                yield rel
                return
