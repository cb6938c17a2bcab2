"""pyfuse3 Operations: a thin map of kernel requests onto view nodes."""

from __future__ import annotations

import itertools
import logging
import os
import stat
from dataclasses import dataclass

import pyfuse3
import trio

from ..views import Attr, Node, OpenFile, SetAttr
from .boundary import errno_boundary
from .inodes import InodeTable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Presentation:
    """How attributes are shown: owner and umask (``-o uid=,gid=,umask=``)."""

    uid: int
    gid: int
    umask: int = 0
    statfs_path: str = "/"


@dataclass
class _DirHandle:
    node: Node
    entries: list[tuple[str, Node]] | None = None


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, root: Node, presentation: Presentation) -> None:
        super().__init__()
        self.inodes = InodeTable(root)
        self.presentation = presentation
        self.files: dict[int, OpenFile] = {}
        self.dirs: dict[int, _DirHandle] = {}
        self._handles = itertools.count(1)  # never reused while the daemon lives

    # -- helpers ----------------------------------------------------------------------------

    def entry(self, inode: int, attr: Attr) -> pyfuse3.EntryAttributes:
        p = self.presentation
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode
        entry.generation = 0
        entry.st_mode = attr.mode & ~p.umask if p.umask else attr.mode
        entry.st_nlink = attr.nlink
        entry.st_uid = p.uid if attr.uid is None else attr.uid
        entry.st_gid = p.gid if attr.gid is None else attr.gid
        entry.st_size = attr.size
        entry.st_blksize = 128 * 1024
        entry.st_blocks = (attr.size + 511) // 512
        entry.st_atime_ns = attr.atime_ns or attr.mtime_ns
        entry.st_mtime_ns = attr.mtime_ns
        entry.st_ctime_ns = attr.ctime_ns or attr.mtime_ns
        entry.attr_timeout = attr.ttl
        entry.entry_timeout = attr.ttl
        return entry

    async def _entry_for(self, node: Node) -> pyfuse3.EntryAttributes:
        inode = self.inodes.inode_of(node)
        return self.entry(inode, await node.attr())

    def _name(self, name: bytes) -> str:
        return os.fsdecode(name)

    def _open_file(self, handle: OpenFile) -> pyfuse3.FileInfo:
        fh = next(self._handles)
        self.files[fh] = handle
        return pyfuse3.FileInfo(fh=fh, keep_cache=handle.keep_cache, direct_io=handle.direct_io)

    # -- metadata ---------------------------------------------------------------------------

    @errno_boundary
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = await self.inodes.node(parent_inode).lookup(self._name(name))
        entry = await self._entry_for(node)
        self.inodes.looked_up(entry.st_ino)
        return entry

    @errno_boundary
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.entry(inode, await self.inodes.node(inode).attr())

    @errno_boundary
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        changes = SetAttr(
            mode=stat.S_IMODE(attr.st_mode) if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
        )
        return self.entry(inode, await self.inodes.node(inode).setattr(changes))

    @errno_boundary
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(await self.inodes.node(inode).readlink())

    def forget(self, inode_list: list[tuple[int, int]]) -> None:  # type: ignore[override]
        for inode, count in inode_list:
            self.inodes.forget(inode, count)

    @errno_boundary
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = await trio.to_thread.run_sync(os.statvfs, self.presentation.statfs_path)
        data = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail"):
            setattr(data, name, getattr(st, name))
        data.f_namemax = 255
        return data

    @errno_boundary
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        return await self.inodes.node(inode).getxattr(self._name(name))

    @errno_boundary
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.inodes.node(inode).setxattr(self._name(name), value)

    @errno_boundary
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return [os.fsencode(name) for name in await self.inodes.node(inode).listxattr()]

    # -- directories ------------------------------------------------------------------------

    @errno_boundary
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.inodes.node(inode)
        fh = next(self._handles)
        self.dirs[fh] = _DirHandle(node)
        return fh

    @errno_boundary
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self.dirs[fh]
        if handle.entries is None or start_id == 0:
            handle.entries = await handle.node.listdir()
        for index in range(start_id, len(handle.entries)):
            name, node = handle.entries[index]
            entry = await self._entry_for(node)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), entry, index + 1):
                return
            self.inodes.looked_up(entry.st_ino)

    @errno_boundary
    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    @errno_boundary
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = await self.inodes.node(parent_inode).mkdir(self._name(name), stat.S_IMODE(mode))
        entry = await self._entry_for(node)
        self.inodes.looked_up(entry.st_ino)
        return entry

    @errno_boundary
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.inodes.node(parent_inode).rmdir(self._name(name))

    @errno_boundary
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.inodes.node(parent_inode).unlink(self._name(name))

    @errno_boundary
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        parent = self.inodes.node(parent_inode_old)
        new_parent = self.inodes.node(parent_inode_new)
        moved = await parent.rename(self._name(name_old), new_parent, self._name(name_new), flags)
        if moved is not None:
            self.inodes.move(*moved)

    @errno_boundary
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = await self.inodes.node(parent_inode).symlink(self._name(name), os.fsdecode(target))
        entry = await self._entry_for(node)
        self.inodes.looked_up(entry.st_ino)
        return entry

    @errno_boundary
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        target = self.inodes.node(inode)
        node = await self.inodes.node(new_parent_inode).link(self._name(new_name), target)
        entry = await self._entry_for(node)
        self.inodes.looked_up(entry.st_ino)
        return entry

    # -- files ------------------------------------------------------------------------------

    @errno_boundary
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        return self._open_file(await self.inodes.node(inode).open(flags))

    @errno_boundary
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        node, handle = await self.inodes.node(parent_inode).create(self._name(name), stat.S_IMODE(mode), flags)
        entry = await self._entry_for(node)
        self.inodes.looked_up(entry.st_ino)
        return self._open_file(handle), entry

    @errno_boundary
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self.files[fh].read(off, size)

    @errno_boundary
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.files[fh].write(off, buf)

    @errno_boundary
    async def flush(self, fh: int) -> None:
        await self.files[fh].flush()

    @errno_boundary
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.files[fh].fsync(datasync)

    @errno_boundary
    async def release(self, fh: int) -> None:
        handle = self.files.pop(fh, None)
        if handle is not None:
            await handle.release()

    async def release_all(self) -> None:
        """At shutdown: close every handle the kernel did not release (their locks go too)."""
        while self.files:
            _, handle = self.files.popitem()
            try:
                await handle.release()
            except Exception:
                log.exception("releasing a handle at shutdown")
