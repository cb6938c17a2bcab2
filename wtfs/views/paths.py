"""Read-only nodes over a directory the daemon owns (a version's files).

A version lives in the daemon's private state directory, which no user can write, so these
nodes may address it by path; the user-writable workspace is reached by descriptors instead
(``views.workspace``).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Hashable

import trio

from ..errors import NotFound, ReadOnly
from .base import Attr, FdFile, Node, OpenFile, wants_write
from .workspace import attr_of as workspace_attr

#: listings of versions/ and runs/ change through other processes (the CLI): never cached.
LIVE_TTL = 0.0
_COPY_PREFIX = ".copy-"  # a version's private copy being made (store.versions)


def attr_of(st: os.stat_result, ttl: float) -> Attr:
    """The disk's attributes, but one link per file: a version's links are the store's business."""
    attr = workspace_attr(st, ttl)
    return attr if stat.S_ISDIR(st.st_mode) else dataclasses.replace(attr, nlink=1)


def join(rel: str, name: str) -> str:
    if name in {".", ".."} or "/" in name:
        raise NotFound(name)
    return f"{rel}/{name}" if rel else name


class PathNode(Node):
    """A read-only file, directory or symlink under ``root``; ``rel`` is its path below it."""

    ttl = 60.0

    def __init__(self, tag: Hashable, root: str, rel: str = "") -> None:
        self.tag = tag
        self.root = root
        self.rel = rel
        self.key = (tag, rel)

    @property
    def path(self) -> str:
        return os.path.join(self.root, self.rel) if self.rel else self.root

    def child(self, name: str) -> PathNode:
        return type(self)(self.tag, self.root, join(self.rel, name))

    async def attr(self) -> Attr:
        try:
            return attr_of(os.lstat(self.path), self.ttl)
        except FileNotFoundError:
            raise NotFound(self.rel) from None

    async def lookup(self, name: str) -> Node:
        node = self.child(name)
        try:
            os.lstat(node.path)
        except FileNotFoundError:
            raise NotFound(name) from None
        return node

    async def listdir(self) -> list[tuple[str, Node]]:
        names = await trio.to_thread.run_sync(os.listdir, self.path)
        return [(name, self.child(name)) for name in sorted(names) if not name.startswith(_COPY_PREFIX)]

    async def readlink(self) -> str:
        return os.readlink(self.path)

    async def open(self, flags: int) -> OpenFile:
        if wants_write(flags):
            raise ReadOnly(f"{self.rel} is read-only")
        return ReadOnlyFile(os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC))


class ReadOnlyFile(FdFile):
    """A version's file: immutable, so the kernel may keep its pages."""

    keep_cache = True
