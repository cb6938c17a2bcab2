"""Nodes over a real directory: read-only (a version's files) or read-write (a workspace).

The writable tree breaks hard links before any change (copy-up): a file whose inode is shared
with a version (st_nlink > 1) is first copied to a new inode under the same path, atomically by
rename, so versions never change.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Hashable

import trio

from ..errors import NotFound, ReadOnly, WtfsError
from .base import Attr, Node, OpenFile, SetAttr, wants_write

#: workspace files change behind our back (tools writing the directory): never cache metadata.
LIVE_TTL = 0.0
_COPYUP_PREFIX = ".wtfs-copyup-"


def attr_of(st: os.stat_result, ttl: float) -> Attr:
    return Attr(
        mode=st.st_mode,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        atime_ns=st.st_atime_ns,
        nlink=1 if not stat.S_ISDIR(st.st_mode) else st.st_nlink,
        ttl=ttl,
    )


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

    def relocate(self, rel: str) -> None:
        self.rel = rel
        self.key = (self.tag, rel)

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
        return [(name, self.child(name)) for name in sorted(names) if not name.startswith(_COPYUP_PREFIX)]

    async def readlink(self) -> str:
        return os.readlink(self.path)

    async def open(self, flags: int) -> OpenFile:
        if wants_write(flags):
            raise ReadOnly(f"{self.rel} is read-only")
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        return PathFile(fd, self.path, keep_cache=True)


class PathFile(OpenFile):
    """A passthrough file handle; writes break a shared inode first."""

    def __init__(self, fd: int, path: str, keep_cache: bool = False, flags: int = os.O_RDONLY) -> None:
        self.fd = fd
        self.path = path
        self.flags = flags
        self.keep_cache = keep_cache

    async def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    async def write(self, offset: int, data: bytes) -> int:
        if os.fstat(self.fd).st_nlink > 1:
            # a version was taken while this file was open for writing: move to a private inode
            copy_up(self.path)
            os.close(self.fd)
            self.fd = os.open(self.path, (self.flags & ~(os.O_TRUNC | os.O_CREAT | os.O_EXCL)) | os.O_NOFOLLOW)
        if self.flags & os.O_APPEND:
            return os.write(self.fd, data)
        return os.pwrite(self.fd, data, offset)

    async def fsync(self, datasync: bool) -> None:
        await trio.to_thread.run_sync(os.fdatasync if datasync else os.fsync, self.fd)

    async def release(self) -> None:
        os.close(self.fd)


def copy_up(path: str) -> None:
    """Give ``path`` its own inode with the same bytes, mode and times (if it shares one)."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink <= 1:
        return
    directory, name = os.path.split(path)
    temp = os.path.join(directory, f"{_COPYUP_PREFIX}{os.getpid()}-{name}"[:255])
    try:
        with open(path, "rb") as src, open(temp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
        shutil.copystat(path, temp, follow_symlinks=False)
        with contextlib.suppress(PermissionError):
            os.chown(temp, st.st_uid, st.st_gid)
        os.rename(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


class WorkspaceNode(PathNode):
    """A read-write passthrough node with POSIX semantics and copy-up."""

    ttl = LIVE_TTL

    async def open(self, flags: int) -> OpenFile:
        if wants_write(flags):
            await trio.to_thread.run_sync(copy_up, self.path)
        fd = os.open(self.path, flags | os.O_NOFOLLOW)
        return PathFile(fd, self.path, flags=flags)

    async def create(self, name: str, mode: int, flags: int) -> tuple[Node, OpenFile]:
        node = self.child(name)
        fd = os.open(node.path, flags | os.O_CREAT | os.O_NOFOLLOW, mode)
        return node, PathFile(fd, node.path, flags=flags)

    async def setattr(self, changes: SetAttr) -> Attr:
        path = self.path
        await trio.to_thread.run_sync(copy_up, path)
        if changes.size is not None:
            os.truncate(path, changes.size)
        if changes.mode is not None and not os.path.islink(path):
            os.chmod(path, changes.mode)
        if changes.uid is not None or changes.gid is not None:
            uid = -1 if changes.uid is None else changes.uid
            gid = -1 if changes.gid is None else changes.gid
            os.chown(path, uid, gid, follow_symlinks=False)
        if changes.atime_ns is not None or changes.mtime_ns is not None:
            st = os.lstat(path)
            atime = st.st_atime_ns if changes.atime_ns is None else changes.atime_ns
            mtime = st.st_mtime_ns if changes.mtime_ns is None else changes.mtime_ns
            os.utime(path, ns=(atime, mtime), follow_symlinks=False)
        return await self.attr()

    async def mkdir(self, name: str, mode: int) -> Node:
        node = self.child(name)
        os.mkdir(node.path, mode)
        return node

    async def symlink(self, name: str, target: str) -> Node:
        node = self.child(name)
        os.symlink(target, node.path)
        return node

    async def link(self, name: str, target: Node) -> Node:
        if not isinstance(target, WorkspaceNode) or target.root != self.root:
            raise WtfsError("cross-tree link") from None
        node = self.child(name)
        os.link(target.path, node.path, follow_symlinks=False)
        return node

    async def unlink(self, name: str) -> None:
        os.unlink(self.child(name).path)

    async def rmdir(self, name: str) -> None:
        os.rmdir(self.child(name).path)

    async def rename(self, name: str, new_parent: Node, new_name: str, flags: int) -> tuple[Hashable, Hashable] | None:
        if not isinstance(new_parent, WorkspaceNode) or new_parent.root != self.root:
            raise OSError(errno.EXDEV, "cross-tree rename")
        if flags:
            raise OSError(errno.EINVAL, "rename flags are not supported")
        source, target = self.child(name), new_parent.child(new_name)
        os.rename(source.path, target.path)
        return source.key, target.key
