"""Catalog nodes: metadata of the data tree. Listing them never starts a transfer."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from typing import Protocol

import trio

from ..confine import REFUSED_ERRNOS, open_dir, refused
from ..errors import NotFound
from ..objects import ObjectRef


class Resolver(Protocol):
    """Decides at each use where a file's bytes come from, or refuses with a WtfsError.

    For sources that may change or be refused between listing and open (a Girder item's local
    ``phys_path``, checked against ``local_roots``). Called in a worker thread. Resolvers are
    compared by value, so a node is kept only while its resolver is the same.
    """

    def resolve(self) -> ObjectRef: ...


@dataclass(eq=False)
class CatalogFile:
    """A file of the data set; compared by identity so it can key the inode table.

    With a ``resolver``, ``obj`` only gives the size shown and is never fetched as it is.
    """

    name: str
    obj: ObjectRef
    mtime_ns: int
    resolver: Resolver | None = None

    @property
    def size(self) -> int | None:
        return self.obj.size


@dataclass(eq=False)
class CatalogLink:
    """A symbolic link inside a local entry: shown with its target text, never followed by the
    daemon (the kernel follows it through the mount with the user's own rights)."""

    name: str
    target: str
    mtime_ns: int


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
    """A directory of a local entry, listed on first use and again once ``ttl`` has passed.

    ``path`` is real; it is opened by a walk that follows no symlink and its children are looked
    at relative to that fd (lstat, readlink), so nothing outside the entry is ever listed.
    """

    def __init__(self, name: str, path: str, ttl: float, mtime_ns: int) -> None:
        super().__init__(name, mtime_ns)
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
        try:
            fd = open_dir(self.path)
        except OSError as exc:  # gone, or swapped for a symlink since it was listed
            if exc.errno in REFUSED_ERRNOS:
                raise refused(self.path) from None
            raise NotFound(f"{self.path}: {exc.strerror}") from None
        found: dict[str, CatalogNode] = {}
        try:
            with os.scandir(fd) as it:
                for dirent in it:
                    node = self._child(fd, dirent)
                    if node is not None:
                        found[dirent.name] = node
        finally:
            os.close(fd)
        return found

    def _child(self, fd: int, dirent: os.DirEntry[str]) -> CatalogNode | None:
        try:
            st = dirent.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                return CatalogLink(dirent.name, os.readlink(dirent.name, dir_fd=fd), st.st_mtime_ns)
        except OSError:
            return None  # vanished: not part of the data set
        return local_node(dirent.name, os.path.join(self.path, dirent.name), st, self.ttl)

    def _merge(self, fresh: dict[str, CatalogNode]) -> dict[str, CatalogNode]:
        """Keep existing node objects that did not change, so inodes stay stable."""
        merged: dict[str, CatalogNode] = {}
        for name, node in fresh.items():
            old = self._entries.get(name)
            merged[name] = old if old is not None and _unchanged(old, node) else node
        return merged


def _unchanged(old: CatalogNode, new: CatalogNode) -> bool:
    if isinstance(old, CatalogFile) and isinstance(new, CatalogFile):
        return old.obj == new.obj
    if isinstance(old, CatalogLink) and isinstance(new, CatalogLink):
        return old.target == new.target
    return isinstance(old, LocalDir) and isinstance(new, LocalDir)


def local_node(name: str, path: str, st: os.stat_result, ttl: float) -> CatalogNode | None:
    """A directory or regular file at real ``path`` (stat ``st``); None for anything else."""
    if stat.S_ISDIR(st.st_mode):
        return LocalDir(name, path, ttl, st.st_mtime_ns)
    if stat.S_ISREG(st.st_mode):
        source = "file://" + path
        obj = ObjectRef.for_source(source, st.st_size, None, version=str(st.st_mtime_ns))
        return CatalogFile(name, obj, st.st_mtime_ns)
    return None


CatalogNode = CatalogDir | CatalogFile | CatalogLink
