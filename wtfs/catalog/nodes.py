"""Catalog nodes: metadata of the data tree. Listing them never starts a transfer."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass

import trio

from ..objects import ObjectRef


@dataclass(eq=False)
class CatalogFile:
    """A file of the data set; compared by identity so it can key the inode table."""

    name: str
    obj: ObjectRef
    mtime_ns: int

    @property
    def size(self) -> int | None:
        return self.obj.size


class CatalogDir:
    """A directory whose children may be listed lazily."""

    def __init__(self, name: str, mtime_ns: int) -> None:
        self.name = name
        self.mtime_ns = mtime_ns

    async def children(self) -> dict[str, CatalogNode]:
        raise NotImplementedError


class StaticDir(CatalogDir):
    """A directory fixed by the spec: the root and the parents of every mountPath."""

    def __init__(self, name: str, mtime_ns: int | None = None) -> None:
        super().__init__(name, mtime_ns or time.time_ns())
        self.entries: dict[str, CatalogNode] = {}

    async def children(self) -> dict[str, CatalogNode]:
        return self.entries


class LocalDir(CatalogDir):
    """A local directory entry, listed on first use and again once ``ttl`` has passed."""

    def __init__(self, name: str, path: str, ttl: float) -> None:
        super().__init__(name, os.stat(path).st_mtime_ns)
        self.path = path
        self.ttl = ttl
        self._listed_at: float | None = None
        self._entries: dict[str, CatalogNode] = {}

    async def children(self) -> dict[str, CatalogNode]:
        now = trio.current_time()
        if self._listed_at is None or now - self._listed_at >= self.ttl:
            self._entries = self._merge(await trio.to_thread.run_sync(self._scan))
            self._listed_at = now
        return self._entries

    def _scan(self) -> dict[str, CatalogNode]:
        found: dict[str, CatalogNode] = {}
        with os.scandir(self.path) as it:
            for dirent in it:
                try:
                    st = dirent.stat(follow_symlinks=True)
                except OSError:
                    continue  # dangling link or vanished: not part of the data set
                node = local_node(dirent.name, dirent.path, st, self.ttl)
                if node is not None:
                    found[dirent.name] = node
        return found

    def _merge(self, fresh: dict[str, CatalogNode]) -> dict[str, CatalogNode]:
        """Keep existing node objects that did not change, so inodes stay stable."""
        merged: dict[str, CatalogNode] = {}
        for name, node in fresh.items():
            old = self._entries.get(name)
            same_file = isinstance(old, CatalogFile) and isinstance(node, CatalogFile) and old.obj == node.obj
            same_dir = isinstance(old, LocalDir) and isinstance(node, LocalDir)
            merged[name] = old if (old is not None and (same_file or same_dir)) else node
        return merged


def local_node(name: str, path: str, st: os.stat_result, ttl: float) -> CatalogNode | None:
    if stat.S_ISDIR(st.st_mode):
        return LocalDir(name, path, ttl)
    if stat.S_ISREG(st.st_mode):
        source = "file://" + path
        obj = ObjectRef.for_source(source, st.st_size, None, version=str(st.st_mtime_ns))
        return CatalogFile(name, obj, st.st_mtime_ns)
    return None


CatalogNode = CatalogDir | CatalogFile
