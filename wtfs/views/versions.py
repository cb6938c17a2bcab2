"""versions/: one directory per version. mkdir snapshots, mv renames, rmdir deletes.

Everything inside a version is read-only. Store calls run in worker threads (they walk and
hard-link whole trees).
"""

from __future__ import annotations

import time
from collections.abc import Hashable

import trio

from ..errors import ReadOnly
from ..store.snapshot import CopyIf
from ..store.versions import Version, VersionStore
from .base import Attr, Caller, Node
from .paths import LIVE_TTL, PathNode


class VersionsDir(Node):
    key = "versions"

    def __init__(self, store: VersionStore, copy_if: CopyIf | None = None) -> None:
        self.store = store
        self.copy_if = copy_if  # files open for writing through the mount are copied, not linked
        self.mtime_ns = time.time_ns()

    async def attr(self) -> Attr:
        return Attr.directory(self.mtime_ns, perm=0o755, ttl=LIVE_TTL)

    def _node(self, version: Version) -> Node:
        return PathNode(("version", version.id), str(version.path))

    async def lookup(self, name: str) -> Node:
        return self._node(await trio.to_thread.run_sync(self.store.get, name))

    async def listdir(self) -> list[tuple[str, Node]]:
        versions = await trio.to_thread.run_sync(self.store.all)
        return [(v.name, self._node(v)) for v in versions]

    async def mkdir(self, name: str, mode: int, caller: Caller) -> Node:
        version = await trio.to_thread.run_sync(self.store.create, name, True, self.copy_if)
        self.mtime_ns = time.time_ns()
        return self._node(version)

    async def rename(self, name: str, new_parent: Node, new_name: str, flags: int) -> tuple[Hashable, Hashable] | None:
        if new_parent is not self:
            raise ReadOnly("versions can only be renamed within versions/")
        await trio.to_thread.run_sync(self.store.rename, name, new_name)
        self.mtime_ns = time.time_ns()
        return None  # a version's nodes are keyed by its id, which does not change

    async def rmdir(self, name: str) -> None:
        await trio.to_thread.run_sync(self.store.delete, name)
        self.mtime_ns = time.time_ns()

    async def unlink(self, name: str) -> None:
        await trio.to_thread.run_sync(self.store.get, name)
        raise ReadOnly("use rmdir to delete a version")
