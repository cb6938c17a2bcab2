"""A version's or run's contents as nodes, whoever keeps them: a directory of this host read by
path, a run's own workspace served like workspace/, or a server's folder listed on demand."""

from __future__ import annotations

from ..errors import NotFound, ReadOnly
from ..store.repos import Contents, FolderSource, LocalTree, RemoteEntry
from .base import Attr, FdFile, Node, OpenFile, wants_write
from .paths import LIVE_TTL, PathNode
from .workspace import WorkspaceTree


class ContentNodes:
    """The nodes of one kind's contents (``kind`` tags their keys). A writable tree holds
    descriptors, so it is opened once per entry and closed by ``drop`` when the entry goes."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.trees: dict[str, WorkspaceTree] = {}

    def node(self, entry_id: str, contents: Contents) -> Node:
        if not isinstance(contents, LocalTree):
            return RemoteDir(contents.source, contents.folder_id, contents.mtime_ns, contents.within)
        if not contents.writable:
            return PathNode((self.kind, entry_id), str(contents.path))
        tree = self.trees.get(entry_id)
        if tree is None:
            tree = self.trees[entry_id] = WorkspaceTree(str(contents.path), tag=f"{self.kind}-ws-{entry_id}")
        return tree.root

    def drop(self, entry_id: str) -> None:
        tree = self.trees.pop(entry_id, None)
        if tree is not None:
            tree.close()


class RemoteDir(Node):
    """A server's folder, read-only, listed anew on every lookup and listing."""

    def __init__(self, source: FolderSource, folder_id: str, mtime_ns: int, within: str = "") -> None:
        self.source = source
        self.folder_id = folder_id
        self.mtime_ns = mtime_ns
        self.within = within
        self.key = ("remote-folder", folder_id, within)

    async def _listing(self) -> list[RemoteEntry]:
        entries = await self.source.listing(self.folder_id)
        if not self.within:
            return entries
        for entry in entries:
            if entry.is_dir and entry.name == self.within:
                return await self.source.listing(entry.id)
        return []  # the server has not made it (yet): an empty directory

    async def attr(self) -> Attr:
        return Attr.directory(self.mtime_ns, ttl=LIVE_TTL)

    def _node(self, entry: RemoteEntry) -> Node:
        return RemoteDir(self.source, entry.id, entry.mtime_ns) if entry.is_dir else RemoteFile(self.source, entry)

    async def listdir(self) -> list[tuple[str, Node]]:
        entries = sorted(await self._listing(), key=lambda e: e.name)
        return [(e.name, self._node(e)) for e in entries]

    async def lookup(self, name: str) -> Node:
        for entry in await self._listing():
            if entry.name == name:
                return self._node(entry)
        raise NotFound(name)


class RemoteFile(Node):
    def __init__(self, source: FolderSource, entry: RemoteEntry) -> None:
        self.source = source
        self.entry = entry
        self.key = ("remote-item", entry.id)

    async def attr(self) -> Attr:
        return Attr.file(self.entry.size, self.entry.mtime_ns, ttl=LIVE_TTL)

    async def open(self, flags: int) -> OpenFile:
        """Read whole from the server at open: the handle then reads a local file."""
        if wants_write(flags):
            raise ReadOnly("versions and runs are read-only here")
        return FdFile(await self.source.fetch(self.entry.id, self.entry.name))
