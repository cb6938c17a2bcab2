"""pyfuse3 Operations: a thin map of kernel requests onto view nodes."""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
from dataclasses import dataclass

import pyfuse3
import trio

from ..views import Attr, Caller, Node, OpenFile, SetAttr
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
    inode: int
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
        self.parents: dict[int, int] = {}  # directory inode -> its parent's, for ".."
        self._handles = itertools.count(1)  # never reused while the daemon lives

    # -- helpers ----------------------------------------------------------------------------

    def entry(self, inode: int, attr: Attr) -> pyfuse3.EntryAttributes:
        p = self.presentation
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode
        entry.generation = 0
        virtual = attr.uid is None  # uid=, gid=, umask= only dress what has no owner on disk
        entry.st_mode = attr.mode & ~p.umask if virtual and p.umask else attr.mode
        entry.st_nlink = attr.nlink
        entry.st_uid = p.uid if attr.uid is None else attr.uid
        entry.st_gid = p.gid if attr.gid is None else attr.gid
        entry.st_rdev = attr.rdev
        entry.st_size = attr.size
        entry.st_blksize = 128 * 1024
        entry.st_blocks = (attr.size + 511) // 512 if attr.blocks is None else attr.blocks
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

    @staticmethod
    def _caller(ctx: pyfuse3.RequestContext) -> Caller:
        return Caller(uid=ctx.uid, gid=ctx.gid, pid=ctx.pid, umask=ctx.umask)

    async def _known(self, parent_inode: int, node: Node) -> pyfuse3.EntryAttributes:
        """The entry of a node the kernel now holds (one more lookup); remember a dir's parent."""
        entry = await self._entry_for(node)
        self.inodes.looked_up(entry.st_ino)
        if stat.S_ISDIR(entry.st_mode):
            self.parents[entry.st_ino] = parent_inode
        return entry

    def _open_file(self, handle: OpenFile) -> pyfuse3.FileInfo:
        fh = next(self._handles)
        self.files[fh] = handle
        return pyfuse3.FileInfo(fh=fh, keep_cache=handle.keep_cache, direct_io=handle.direct_io)

    # -- metadata ---------------------------------------------------------------------------

    @errno_boundary
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = await self.inodes.node(parent_inode).lookup(self._name(name))
        return await self._known(parent_inode, node)

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
            if self.inodes.forget(inode, count):
                self.parents.pop(inode, None)

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

    @errno_boundary
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.inodes.node(inode).removexattr(self._name(name))

    # -- directories ------------------------------------------------------------------------

    @errno_boundary
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        fh = next(self._handles)
        self.dirs[fh] = _DirHandle(inode, self.inodes.node(inode))
        return fh

    @errno_boundary
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self.dirs[fh]
        if handle.entries is None or start_id == 0:
            handle.entries = await handle.node.listdir()
        if start_id < 2 and not await self._reply_dots(handle, start_id, token):
            return
        for index in range(max(start_id, 2), len(handle.entries) + 2):
            name, node = handle.entries[index - 2]
            entry = await self._entry_for(node)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), entry, index + 1):
                self.inodes.drop_if_unknown(entry.st_ino)
                return
            self.inodes.looked_up(entry.st_ino)
            if stat.S_ISDIR(entry.st_mode):
                self.parents[entry.st_ino] = handle.inode

    async def _reply_dots(self, handle: _DirHandle, start_id: int, token: pyfuse3.ReaddirToken) -> bool:
        """ "." and ".." first, as every directory lists them; the kernel takes no lookup of them."""
        own = self.entry(handle.inode, await handle.node.attr())
        for index, name in enumerate((b".", b".."), start=0):
            if index < start_id:
                continue
            entry = own
            if name == b"..":
                entry = pyfuse3.EntryAttributes()
                entry.st_mode, entry.st_ino = own.st_mode, self.parents.get(handle.inode, pyfuse3.ROOT_INODE)
            if not pyfuse3.readdir_reply(token, name, entry, index + 1):
                return False
        return True

    @errno_boundary
    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    @errno_boundary
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = await self.inodes.node(parent_inode).mkdir(self._name(name), stat.S_IMODE(mode), self._caller(ctx))
        return await self._known(parent_inode, node)

    @errno_boundary
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = await self.inodes.node(parent_inode).mknod(self._name(name), mode, rdev, self._caller(ctx))
        return await self._known(parent_inode, node)

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
        await parent.rename(self._name(name_old), new_parent, self._name(name_new), flags)

    @errno_boundary
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self.inodes.node(parent_inode)
        node = await parent.symlink(self._name(name), os.fsdecode(target), self._caller(ctx))
        return await self._known(parent_inode, node)

    @errno_boundary
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        target = self.inodes.node(inode)
        node = await self.inodes.node(new_parent_inode).link(self._name(new_name), target)
        return await self._known(new_parent_inode, node)

    # -- files ------------------------------------------------------------------------------

    @errno_boundary
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        return self._open_file(await self.inodes.node(inode).open(flags))

    @errno_boundary
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        parent = self.inodes.node(parent_inode)
        node, handle = await parent.create(self._name(name), stat.S_IMODE(mode), flags, self._caller(ctx))
        entry = await self._known(parent_inode, node)
        return self._open_file(handle), entry

    @errno_boundary
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self.files[fh].read(off, size)

    @errno_boundary
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.files[fh].write(off, buf)

    async def flush(self, fh: int) -> None:
        """No view acts on close(2) before release: ENOSYS once, and the kernel stops asking."""
        raise pyfuse3.FUSEError(errno.ENOSYS)

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
