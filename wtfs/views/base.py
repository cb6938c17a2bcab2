"""What the FUSE layer sees: nodes with attributes, listings and open files.

Views know nothing of pyfuse3; the fs layer maps inodes onto ``Node`` objects and translates
``Attr`` into kernel attributes. Every write-like operation is read-only unless a view says so.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from ..errors import IsADirectory, NoAttribute, NotADirectory, NotASymlink, NotSupported, ReadOnly

#: Attribute and entry timeout for metadata that only changes through wtfs itself.
STABLE_TTL = 60.0


@dataclass(frozen=True, slots=True)
class Attr:
    mode: int
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    atime_ns: int = 0
    nlink: int = 1
    ttl: float = STABLE_TTL
    uid: int | None = None
    gid: int | None = None
    rdev: int = 0
    blocks: int | None = None

    @classmethod
    def directory(cls, mtime_ns: int, perm: int = 0o555, ttl: float = STABLE_TTL) -> Attr:
        return cls(stat.S_IFDIR | perm, 0, mtime_ns, mtime_ns, mtime_ns, 2, ttl)

    @classmethod
    def file(cls, size: int, mtime_ns: int, perm: int = 0o444, ttl: float = STABLE_TTL) -> Attr:
        return cls(stat.S_IFREG | perm, size, mtime_ns, mtime_ns, mtime_ns, 1, ttl)


@dataclass(frozen=True)
class Caller:
    """Who asks: what a created object's owner and mode come from (never the daemon's own)."""

    uid: int
    gid: int
    pid: int = 0
    umask: int = 0


@dataclass(frozen=True)
class SetAttr:
    """The changes a setattr asks for; None means unchanged."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None


class OpenFile:
    """An open file handle. ``keep_cache`` for immutable copies, ``direct_io`` for live files."""

    keep_cache = False
    direct_io = False

    async def read(self, offset: int, size: int) -> bytes:
        raise NotSupported("read")

    async def write(self, offset: int, data: bytes) -> int:
        raise ReadOnly("read-only file")

    async def fsync(self, datasync: bool) -> None:
        return None

    async def release(self) -> None:
        return None


class FdFile(OpenFile):
    """A handle on an open file descriptor: pread, close on release."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    async def release(self) -> None:
        os.close(self.fd)


#: Stable inode numbers (``Node.inode_hint``) live above this; sequential ones stay below.
STABLE_INODE_BASE = 1 << 40


class Node:
    """One name in the tree. ``key`` is its identity in the inode table."""

    key: Hashable
    #: how many open directory listings hold this node (kept by the inode table): it is released
    #: only once none does
    pins = 0

    @property
    def inode_hint(self) -> int | None:
        """A number this node would like as its inode, stable over time; None: any."""
        return None

    async def attr(self) -> Attr:
        raise NotImplementedError

    async def lookup(self, name: str) -> Node:
        raise NotADirectory(name)

    async def listdir(self) -> list[tuple[str, Node]]:
        raise NotADirectory()

    async def listing(self) -> Sequence[tuple[str, Node | None]]:
        """``listdir`` as a directory listing uses it, where a view may leave a child as None:
        looked at only as the listing hands it out (``listed``), so what is shown is as fresh as
        the reply and a repeated listing costs one look per entry (the workspace, as
        passthrough_ll does)."""
        return await self.listdir()

    async def listed(self, name: str) -> tuple[Node, Attr] | None:
        """The child ``name`` left as None by ``listing`` and its attributes now; None if gone."""
        raise NotADirectory(name)

    async def open(self, flags: int) -> OpenFile:
        raise IsADirectory()

    async def readlink(self) -> str:
        raise NotASymlink("not a symbolic link")

    async def getxattr(self, name: str) -> bytes:
        raise NoAttribute(name)

    async def listxattr(self) -> list[str]:
        return []

    async def setxattr(self, name: str, value: bytes) -> None:
        raise NotSupported(f"xattr {name}")

    async def removexattr(self, name: str) -> None:
        raise NotSupported(f"xattr {name}")

    def forget(self) -> None:
        """The kernel dropped this node: release what it holds (a workspace node's handle)."""

    # write-like operations: read-only unless a view overrides them

    async def setattr(self, changes: SetAttr) -> Attr:
        raise ReadOnly("read-only")

    async def create(self, name: str, mode: int, flags: int, caller: Caller) -> tuple[Node, OpenFile]:
        raise ReadOnly("read-only directory")

    async def mkdir(self, name: str, mode: int, caller: Caller) -> Node:
        raise ReadOnly("read-only directory")

    async def mknod(self, name: str, mode: int, rdev: int, caller: Caller) -> Node:
        raise ReadOnly("read-only directory")

    async def symlink(self, name: str, target: str, caller: Caller) -> Node:
        raise ReadOnly("read-only directory")

    async def link(self, name: str, target: Node) -> Node:
        raise ReadOnly("read-only directory")

    async def unlink(self, name: str) -> None:
        raise ReadOnly("read-only directory")

    async def rmdir(self, name: str) -> None:
        raise ReadOnly("read-only directory")

    async def rename(self, name: str, new_parent: Node, new_name: str, flags: int) -> None:
        """Rename a child. Nodes are keyed by what does not change (an inode, an id), so nothing
        moves in the inode table."""
        raise ReadOnly("read-only directory")


def wants_write(flags: int) -> bool:
    return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC))
