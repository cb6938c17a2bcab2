"""data/: the session's data set. stat and readdir come from the catalog; open locks and waits."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

from ..catalog import CatalogDir, CatalogFile, CatalogLink, CatalogNode
from ..dm import DataManager, Lock
from ..dm.base import REQUESTER, Streaming, StreamingDataManager
from ..errors import NoAttribute, NotFound, ReadOnly
from ..objects import ObjectRef
from .base import Attr, FdFile, Node, OpenFile, wants_write
from .readahead import FileReadAhead

STATE_XATTR = "user.wtfs.state"
OBJECT_XATTR = "user.wtfs.object"
PREFETCH_XATTR = "user.wtfs.prefetch"


@dataclass
class DataContext:
    dm: DataManager
    owner: str
    ttl: float
    #: object id -> its path in the mount (``data/…``), for the files opened or prefetched: what
    #: the mount's status shows for a transfer
    paths: dict[str, str] = field(default_factory=dict)
    #: the data manager, where it serves reads before a copy lands; and whether a file (by its
    #: path, ``data/…``) is read so (``stream``)
    streaming: StreamingDataManager | None = None
    stream: Callable[[str], bool] = lambda path: False
    #: ``prefetch_dir``: given a directory's files on its first listing, starts landing them
    #: (bounded); None when off
    prefetch_dir: Callable[[list[ObjectRef]], None] | None = None
    #: ``readahead_files``: how many files ahead of a reader that opens a directory's files one
    #: after another to land, and what lands them (bounded, small files only); None when off
    read_ahead: Callable[[list[ObjectRef]], None] | None = None
    readahead_files: int = 0


def wrap(
    node: CatalogNode, ctx: DataContext, path: str, opened: Callable[[str], None] | None = None
) -> DataDir | DataFile | DataLink:
    if isinstance(node, CatalogFile):
        return DataFile(node, ctx, path, opened)
    if isinstance(node, CatalogLink):
        return DataLink(node, ctx)
    return DataDir(node, ctx, path)


class DataDir(Node):
    def __init__(self, cat: CatalogDir, ctx: DataContext, path: str = "data") -> None:
        self.cat = cat
        self.ctx = ctx
        self.key = ("data", cat)
        self.path = path
        self._nodes: dict[str, DataDir | DataFile | DataLink] = {}  # name -> its node, while its catalog node stays
        self._listed = False  # listed once: prefetch_dir started then, never again
        self._ahead = FileReadAhead(ctx.readahead_files, self._read_ahead) if ctx.read_ahead is not None else None

    async def attr(self) -> Attr:
        return Attr.directory(self.cat.mtime_ns, ttl=self.ctx.ttl)

    async def lookup(self, name: str) -> Node:
        children = await self.cat.children()
        if self._ahead is not None:
            self._ahead.listed(children)
        child = children.get(name)
        if child is None:
            raise NotFound(name)
        return self._node(name, child, self._nodes)

    async def listdir(self) -> list[tuple[str, Node]]:
        """The same node objects as last time for unchanged catalog nodes: a repeated listing of
        a big directory makes no new objects (each keeps its attributes too)."""
        children = await self.cat.children()
        if self._ahead is not None:
            self._ahead.listed(children)
        nodes: dict[str, DataDir | DataFile | DataLink] = {}
        listed: list[tuple[str, Node]] = [(name, self._node(name, children[name], nodes)) for name in sorted(children)]
        self._nodes = nodes  # names gone from the catalog are let go
        if not self._listed:
            self._listed = True
            self._prefetch(nodes.values())
        return listed

    def _prefetch(self, nodes: Iterable[DataDir | DataFile | DataLink]) -> None:
        """``prefetch_dir``: land the files listed here. A file with a resolver is a local source
        (served in place, checked at each open): nothing to fetch."""
        if self.ctx.prefetch_dir is None:
            return
        files = [n for n in nodes if isinstance(n, DataFile) and n.cat.resolver is None]
        for f in files:
            self.ctx.paths[f.cat.obj.id] = f.path
        self.ctx.prefetch_dir([f.cat.obj for f in files])

    def _node(
        self, name: str, child: CatalogNode, into: dict[str, DataDir | DataFile | DataLink]
    ) -> DataDir | DataFile | DataLink:
        node = self._nodes.get(name)
        if node is None or node.cat is not child:
            node = wrap(child, self.ctx, f"{self.path}/{name}", self._ahead.opened if self._ahead else None)
        into[name] = node
        return node

    def _read_ahead(self, files: list[CatalogFile]) -> None:
        """Land the files a sequential reader is about to open (a local file is served in place:
        nothing to land)."""
        assert self.ctx.read_ahead is not None
        remote = [f for f in files if f.resolver is None]
        for f in remote:
            self.ctx.paths.setdefault(f.obj.id, f"{self.path}/{f.name}")
        self.ctx.read_ahead([f.obj for f in remote])


class DataFile(Node):
    def __init__(
        self, cat: CatalogFile, ctx: DataContext, path: str, opened: Callable[[str], None] | None = None
    ) -> None:
        self.cat = cat
        self.ctx = ctx
        self.key = ("data", cat)
        self.path = path
        self._opened = opened  # its directory's read-ahead across files, told of each open
        self._shown: tuple[ObjectRef, int] | None = None
        self._attr = Attr(0)

    async def object(self) -> ObjectRef:
        """source(), remembered with this file's path for the status of its transfer."""
        obj = await self.source()
        self.ctx.paths[obj.id] = self.path
        return obj

    async def attr(self) -> Attr:
        """The same Attr object while the catalog shows the same object and time (the core then
        re-sends the entry it made for it)."""
        shown = (self.cat.obj, self.cat.mtime_ns)
        if shown != self._shown:
            self._shown, self._attr = shown, Attr.file(self.cat.size or 0, self.cat.mtime_ns, ttl=self.ctx.ttl)
        return self._attr

    async def source(self) -> ObjectRef:
        """The object to lock or fetch, checked again at each use where the catalog says so
        (a local phys_path against local_roots): a cached copy is no way around the check."""
        resolver = self.cat.resolver
        return self.cat.obj if resolver is None else await trio.to_thread.run_sync(resolver.resolve)

    async def getxattr(self, name: str) -> bytes:
        if name == PREFETCH_XATTR:  # reading it starts the transfer too: any reader may, as a read would
            obj = await self.object()
            self.ctx.dm.prefetch(obj)
            return (await self.ctx.dm.state(obj)).encode()
        if name == STATE_XATTR:
            return (await self.ctx.dm.state(await self.source())).encode()
        if name == OBJECT_XATTR:
            return (await self.source()).id.encode()
        raise NoAttribute(name)

    async def listxattr(self) -> list[str]:
        return [STATE_XATTR, OBJECT_XATTR]

    async def setxattr(self, name: str, value: bytes) -> None:
        """``setfattr -n user.wtfs.prefetch``: start the transfer without opening the file."""
        if name != PREFETCH_XATTR:
            raise ReadOnly("data/ is read-only")
        self.ctx.dm.prefetch(await self.object())

    async def open(self, flags: int) -> OpenFile:
        if wants_write(flags):
            raise ReadOnly("data/ is read-only")
        obj = await self.object()
        if self._opened is not None:
            self._opened(self.cat.name)
        streaming = self.ctx.streaming if self.ctx.stream(self.path) else None
        if streaming is not None:
            lock = await streaming.lock_streaming(obj, self.ctx.owner)
        else:
            lock = await self.ctx.dm.lock(obj, self.ctx.owner)
        try:
            fd = os.dup(lock.fd) if lock.fd >= 0 else await trio.to_thread.run_sync(os.open, lock.path, os.O_RDONLY)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.ctx.dm.unlock(lock)
            raise
        if lock.stream is not None:
            return StreamedCopy(fd, lock, self.ctx.dm, lock.stream)
        changed = lock.obj != obj
        if changed:  # a local file served in place changed since it was listed: show it as it is
            self.cat.obj, self.cat.mtime_ns = lock.obj, os.fstat(fd).st_mtime_ns
        return CachedCopy(fd, lock, self.ctx.dm, size_known=self.cat.size is not None and not changed)


class DataLink(Node):
    """A symlink inside a local entry: readlink gives its target text; the daemon never follows it."""

    def __init__(self, cat: CatalogLink, ctx: DataContext) -> None:
        self.cat = cat
        self.ctx = ctx
        self.key = ("data", cat)

    async def attr(self) -> Attr:
        mtime = self.cat.mtime_ns
        return Attr(stat.S_IFLNK | 0o777, len(os.fsencode(self.cat.target)), mtime, mtime, mtime, 1, self.ctx.ttl)

    async def readlink(self) -> str:
        return self.cat.target


class CachedCopy(FdFile):
    """A locked, complete, immutable copy (cached, or a local source served in place): pread on
    a held fd, page cache kept unless the size shown may be stale."""

    def __init__(self, fd: int, lock: Lock, dm: DataManager, size_known: bool) -> None:
        super().__init__(fd)
        self.lock = lock
        self.dm = dm
        self.keep_cache = size_known
        # Without a known size the kernel's idea of i_size may be 0: bypass it.
        self.direct_io = not size_known

    async def release(self) -> None:
        await super().release()
        await self.dm.unlock(self.lock)


class StreamedCopy(CachedCopy):
    """A copy still being written (``stream``): each read waits until its range has landed,
    then is served from the partial's bytes. The page cache is bypassed, so a read after the
    transfer failed (a sha256 mismatch found at landing) gets its error, never kept pages."""

    def __init__(self, fd: int, lock: Lock, dm: DataManager, stream: Streaming) -> None:
        super().__init__(fd, lock, dm, size_known=False)
        self.stream = stream
        self.requester = REQUESTER.get()  # read requests name no process: watch the one that opened

    async def read(self, offset: int, size: int) -> bytes:
        await self.stream.ready(offset, size, self.requester)
        return os.pread(self.fd, size, offset)
