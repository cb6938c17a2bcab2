"""versions/: one directory per version. mkdir snapshots, mv renames, rmdir deletes.

Everything inside a version is read-only. The versions are kept by a ``VersionRepo`` (this
host's store, or a WholeTale server); this directory only maps mount operations onto it.
"""

from __future__ import annotations

import time

from ..errors import ReadOnly
from ..store.repos import Entry, VersionRepo
from .base import Attr, Caller, Node
from .contents import ContentNodes
from .paths import LIVE_TTL


class VersionsDir(Node):
    key = "versions"

    def __init__(self, repo: VersionRepo) -> None:
        self.repo = repo
        self.contents = ContentNodes("version")
        self.mtime_ns = time.time_ns()

    async def attr(self) -> Attr:
        return Attr.directory(self.mtime_ns, perm=0o755, ttl=LIVE_TTL)

    def _node(self, version: Entry) -> Node:
        return self.contents.node(version.id, version.contents)

    def _changed(self) -> None:
        self.mtime_ns = time.time_ns()

    async def lookup(self, name: str) -> Node:
        return self._node(await self.repo.get(name))

    async def listdir(self) -> list[tuple[str, Node]]:
        return [(v.name, self._node(v)) for v in await self.repo.all()]

    async def mkdir(self, name: str, mode: int, caller: Caller) -> Node:
        version = await self.repo.create(name)
        self._changed()
        return self._node(version)

    async def rename(self, name: str, new_parent: Node, new_name: str, flags: int) -> None:
        if new_parent is not self:
            raise ReadOnly("versions can only be renamed within versions/")
        await self.repo.rename(name, new_name)
        self._changed()

    async def rmdir(self, name: str) -> None:
        await self.repo.delete(name)
        self._changed()

    async def unlink(self, name: str) -> None:
        await self.repo.get(name)  # ENOENT for a name that is not there
        raise ReadOnly("use rmdir to delete a version")
