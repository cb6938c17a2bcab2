"""pyfuse3 Operations over the core: bytes to names, contexts to callers, entries to attributes.

Nothing else happens here: every rule lives in ``fs.core`` and the views under it. Each handler
goes through the one errno boundary.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

import pyfuse3

from ..dm.base import requested_by
from ..views import Caller, SetAttr
from .boundary import errno_boundary
from .core import Entry, FsCore, Opened

log = logging.getLogger(__name__)


def _attributes(entry: Entry) -> pyfuse3.EntryAttributes:
    """The entry as pyfuse3 sends it, encoded once per entry (pyfuse3 copies it into each reply)."""
    out = entry.wire
    if out is None:
        out = entry.wire = _encode(entry)
    return out  # type: ignore[no-any-return]


def _encode(entry: Entry) -> pyfuse3.EntryAttributes:
    out = pyfuse3.EntryAttributes()
    out.st_ino = entry.st_ino
    out.generation = 0
    out.st_mode = entry.st_mode
    out.st_nlink = entry.st_nlink
    out.st_uid = entry.st_uid
    out.st_gid = entry.st_gid
    out.st_rdev = entry.st_rdev
    out.st_size = entry.st_size
    out.st_blocks = entry.st_blocks
    out.st_blksize = entry.st_blksize
    out.st_atime_ns = entry.st_atime_ns
    out.st_mtime_ns = entry.st_mtime_ns
    out.st_ctime_ns = entry.st_ctime_ns
    out.attr_timeout = out.entry_timeout = entry.timeout
    return out


def _info(opened: Opened) -> pyfuse3.FileInfo:
    return pyfuse3.FileInfo(fh=opened.fh, keep_cache=opened.keep_cache, direct_io=opened.direct_io)


def _caller(ctx: pyfuse3.RequestContext) -> Caller:
    return Caller(uid=ctx.uid, gid=ctx.gid, pid=ctx.pid, umask=ctx.umask)


def _name(name: bytes) -> str:
    return os.fsdecode(name)


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, core: FsCore) -> None:
        super().__init__()
        self.core = core

    # -- metadata ---------------------------------------------------------------------------

    @errno_boundary
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return _attributes(await self.core.lookup(parent_inode, _name(name)))

    @errno_boundary
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return _attributes(await self.core.getattr(inode))

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
        return _attributes(await self.core.setattr(inode, changes))

    @errno_boundary
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(await self.core.readlink(inode))

    def forget(self, inode_list: list[tuple[int, int]]) -> None:  # type: ignore[override]
        for inode, count in inode_list:
            self.core.forget(inode, count)

    @errno_boundary
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = await self.core.statfs()
        data = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail"):
            setattr(data, name, getattr(st, name))
        data.f_namemax = 255
        return data

    @errno_boundary
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        return await self.core.getxattr(inode, _name(name))

    @errno_boundary
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.core.setxattr(inode, _name(name), value)

    @errno_boundary
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return [os.fsencode(name) for name in await self.core.listxattr(inode, _caller(ctx))]

    @errno_boundary
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.core.removexattr(inode, _name(name))

    # -- directories ------------------------------------------------------------------------

    @errno_boundary
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return await self.core.opendir(inode)

    @errno_boundary
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        async for item in self.core.readdir(fh, start_id):
            if not pyfuse3.readdir_reply(token, os.fsencode(item.name), _attributes(item.entry), item.next_id):
                return  # the reply is full: the next batch starts with this entry
            self.core.accepted(fh, item)

    @errno_boundary
    async def releasedir(self, fh: int) -> None:
        await self.core.releasedir(fh)

    @errno_boundary
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return _attributes(await self.core.mkdir(parent_inode, _name(name), mode, _caller(ctx)))

    @errno_boundary
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return _attributes(await self.core.mknod(parent_inode, _name(name), mode, rdev, _caller(ctx)))

    @errno_boundary
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.core.rmdir(parent_inode, _name(name))

    @errno_boundary
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.core.unlink(parent_inode, _name(name))

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
        await self.core.rename(parent_inode_old, _name(name_old), parent_inode_new, _name(name_new), flags)

    @errno_boundary
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return _attributes(await self.core.symlink(parent_inode, _name(name), os.fsdecode(target), _caller(ctx)))

    @errno_boundary
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return _attributes(await self.core.link(inode, new_parent_inode, _name(new_name)))

    # -- files ------------------------------------------------------------------------------

    @errno_boundary
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        with requested_by(ctx.pid):  # an open waiting for a transfer watches its caller for signals
            return _info(await self.core.open(inode, flags, _caller(ctx)))

    @errno_boundary
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        opened, entry = await self.core.create(parent_inode, _name(name), mode, flags, _caller(ctx))
        return _info(opened), _attributes(entry)

    @errno_boundary
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self.core.read(fh, off, size)

    @errno_boundary
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.core.write(fh, off, buf)

    async def flush(self, fh: int) -> None:
        """No view acts on close(2) before release: ENOSYS once, and the kernel stops asking."""
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @errno_boundary
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.core.fsync(fh, datasync)

    @errno_boundary
    async def release(self, fh: int) -> None:
        await self.core.release(fh)

    async def release_all(self) -> None:
        for failure in await self.core.release_all():
            log.error("releasing a handle at shutdown", exc_info=failure)
