"""The filesystem core: the kernel's protocol over view nodes, without FUSE.

Inodes and lookup counts, open handles, directory listings with "." and "..", attributes as
the kernel will show them. It imports no pyfuse3: the adapter (``fs.adapter``) only translates
pyfuse3's calls and types into these, so every rule here is tested in-process, without root
or /dev/fuse, by the same cases that run through a real mount.

Errors are raised as they come (WtfsError, OSError); the adapter's one errno boundary turns
them into what the kernel sees.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import stat
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from ..errors import NotFound, NotSupported
from ..views import Attr, Caller, Node, OpenFile, SetAttr
from .inodes import ROOT_INODE, InodeTable

#: Namespaces wtfs keeps nothing in, anywhere in the mount: security labels and capabilities
#: (``security.*``) and POSIX ACLs (``system.*``). The kernel enforces neither on this mount (no
#: FUSE_POSIX_ACL; an LSM labels the mount itself), so storing them on the workspace's disk would
#: only mislead. They answer ENOTSUP, which ``ls -l``, ``cp -a`` and ``getfacl`` read as "not on
#: this filesystem": ``ls -l`` then stops asking for the label and ACL of every file (two round
#: trips each, answered ENODATA before).
UNKEPT_XATTRS = ("security.", "system.")


@dataclass(frozen=True)
class Presentation:
    """How virtual entries are shown: owner and umask (``-o uid=,gid=,umask=``)."""

    uid: int
    gid: int
    umask: int = 0
    statfs_path: str = "/"


@dataclass(slots=True)
class Entry:
    """What the kernel is told of one inode: its stat fields and how long to trust them.

    Handed out for every entry of every listing: slots and no freezing keep that cheap, and the
    core hands the same object again while an inode's attributes stay the same, so an entry is
    never changed once made."""

    st_ino: int
    st_mode: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_rdev: int
    st_size: int
    st_blocks: int
    st_atime_ns: int
    st_mtime_ns: int
    st_ctime_ns: int
    timeout: float
    st_blksize: int = 128 * 1024
    #: the FUSE layer's encoding of this entry, made on first use and kept with it (the core
    #: never reads it): a repeated listing then re-encodes nothing
    wire: Any = field(default=None, init=False, repr=False, compare=False)


@dataclass(slots=True)
class DirEntry:
    name: str
    entry: Entry
    next_id: int
    counted: bool = True  # "." and "..": the kernel takes no lookup of them


@dataclass(frozen=True)
class Opened:
    fh: int
    keep_cache: bool
    direct_io: bool


@dataclass
class _DirHandle:
    inode: int
    node: Node
    #: the listing: each name with its node, or None where the view looks at the child only as
    #: it is handed out (``Node.listed``)
    entries: Sequence[tuple[str, Node | None]] | None = None
    pinned: list[Node] = field(default_factory=list)  # held by this listing until it is closed


class FsCore:
    def __init__(self, root: Node, presentation: Presentation) -> None:
        self.inodes = InodeTable(root, dropped=self._dropped)
        self.presentation = presentation
        self.files: dict[int, OpenFile] = {}
        self.dirs: dict[int, _DirHandle] = {}
        self.parents: dict[int, int] = {}  # directory inode -> its parent's, for ".."
        self._handles = itertools.count(1)  # never reused while the daemon lives
        #: inode -> the attributes last shown and their entry: while a node gives the same
        #: attributes again (views keep the Attr object of an unchanged object), its entry is reused
        self._shown: dict[int, tuple[Attr, Entry]] = {}

    # -- attributes -------------------------------------------------------------------------

    def entry(self, inode: int, attr: Attr) -> Entry:
        """The entry for ``attr``: the one made before for the same attributes, else a new one.

        An entry depends on nothing but the inode, the attributes and the presentation, so a
        kept one is never wrong; the kept ones go with their inode (``_dropped``)."""
        shown = self._shown.get(inode)
        if shown is not None and (shown[0] is attr or shown[0] == attr):
            return shown[1]
        entry = self._make_entry(inode, attr)
        self._shown[inode] = (attr, entry)
        return entry

    def _dropped(self, inode: int) -> None:
        self._shown.pop(inode, None)

    def _make_entry(self, inode: int, attr: Attr) -> Entry:
        p = self.presentation
        virtual = attr.uid is None  # uid=, gid=, umask= only dress what has no owner on disk
        return Entry(
            st_ino=inode,
            st_mode=attr.mode & ~p.umask if virtual and p.umask else attr.mode,
            st_nlink=attr.nlink,
            st_uid=p.uid if attr.uid is None else attr.uid,
            st_gid=p.gid if attr.gid is None else attr.gid,
            st_rdev=attr.rdev,
            st_size=attr.size,
            st_blocks=(attr.size + 511) // 512 if attr.blocks is None else attr.blocks,
            st_atime_ns=attr.atime_ns or attr.mtime_ns,
            st_mtime_ns=attr.mtime_ns,
            st_ctime_ns=attr.ctime_ns or attr.mtime_ns,
            timeout=attr.ttl,
        )

    async def _entry_for(self, node: Node) -> Entry:
        inode = self.inodes.inode_of(node)
        return self.entry(inode, await node.attr())

    async def _known(self, parent_inode: int, node: Node) -> Entry:
        """The entry of a node the kernel now holds (one more lookup); remember a dir's parent."""
        entry = await self._entry_for(node)
        self.inodes.looked_up(entry.st_ino)
        if stat.S_ISDIR(entry.st_mode):
            self.parents[entry.st_ino] = parent_inode
        return entry

    # -- metadata ---------------------------------------------------------------------------

    async def lookup(self, parent_inode: int, name: str) -> Entry:
        node = await self.inodes.node(parent_inode).lookup(name)
        return await self._known(parent_inode, node)

    async def getattr(self, inode: int) -> Entry:
        return self.entry(inode, await self.inodes.node(inode).attr())

    async def setattr(self, inode: int, changes: SetAttr) -> Entry:
        return self.entry(inode, await self.inodes.node(inode).setattr(changes))

    async def readlink(self, inode: int) -> str:
        return await self.inodes.node(inode).readlink()

    def forget(self, inode: int, count: int) -> None:
        if self.inodes.forget(inode, count):
            self.parents.pop(inode, None)

    async def statfs(self) -> os.statvfs_result:
        return await trio.to_thread.run_sync(os.statvfs, self.presentation.statfs_path)

    def _xattr_node(self, inode: int, name: str) -> Node:
        node = self.inodes.node(inode)
        if name.startswith(UNKEPT_XATTRS):
            raise NotSupported(f"extended attribute {name}: wtfs keeps no security labels or ACLs")
        return node

    async def getxattr(self, inode: int, name: str) -> bytes:
        return await self._xattr_node(inode, name).getxattr(name)

    async def setxattr(self, inode: int, name: str, value: bytes) -> None:
        await self._xattr_node(inode, name).setxattr(name, value)

    async def listxattr(self, inode: int, caller: Caller) -> list[str]:
        names = await self.inodes.node(inode).listxattr()
        hidden = UNKEPT_XATTRS if caller.uid == 0 else (*UNKEPT_XATTRS, "trusted.")
        # trusted.* is for privileged callers only, as the kernel shows it
        return [name for name in names if not name.startswith(hidden)]

    async def removexattr(self, inode: int, name: str) -> None:
        await self._xattr_node(inode, name).removexattr(name)

    # -- directories ------------------------------------------------------------------------

    async def opendir(self, inode: int) -> int:
        fh = next(self._handles)
        self.dirs[fh] = _DirHandle(inode, self.inodes.node(inode))
        return fh

    async def readdir(self, fh: int, start_id: int) -> AsyncGenerator[DirEntry, None]:
        """Entries from ``start_id``; the caller reports each one the kernel took as ``accepted``.

        An entry that did not fit opens the next batch: the listing pins its nodes until
        ``releasedir``, so each is alive when handed over, and released if it never is. A child
        the view's ``listing`` left as None is asked for as it is handed out (``Node.listed``),
        so what is shown is as fresh as the reply (a name gone by then is left out)."""
        handle = self.dirs[fh]
        entries = handle.entries
        if entries is None or start_id == 0:
            entries = await self._list(handle)
        if start_id <= 1:  # "." and "..": only the first batch carries them
            own = self.entry(handle.inode, await handle.node.attr())
            if start_id == 0:
                yield DirEntry(".", own, 1, counted=False)
            parent = self.parents.get(handle.inode, ROOT_INODE)
            yield DirEntry("..", dataclasses.replace(own, st_ino=parent), 2, counted=False)
        for index in range(max(start_id, 2), len(entries) + 2):
            name, node = entries[index - 2]
            if node is not None:
                yield DirEntry(name, await self._entry_for(node), index + 1)
                continue
            found = await handle.node.listed(name)
            if found is None:
                continue
            child, attr = found
            self.inodes.pin((child,))
            handle.pinned.append(child)
            yield DirEntry(name, self.entry(self.inodes.inode_of(child), attr), index + 1)

    async def _list(self, handle: _DirHandle) -> Sequence[tuple[str, Node | None]]:
        """A fresh listing for the handle; the nodes of the one before are let go after it."""
        entries = await handle.node.listing()
        pinned = [node for _, node in entries if node is not None]
        self._unpin(handle)
        handle.entries, handle.pinned = entries, pinned
        self.inodes.pin(pinned)
        return entries

    def accepted(self, fh: int, item: DirEntry) -> None:
        """The kernel took this entry: it holds one more lookup of it."""
        if not item.counted:
            return
        self.inodes.looked_up(item.entry.st_ino)
        if stat.S_ISDIR(item.entry.st_mode):
            self.parents[item.entry.st_ino] = self.dirs[fh].inode

    async def releasedir(self, fh: int) -> None:
        handle = self.dirs.pop(fh, None)
        if handle is not None:
            self._unpin(handle)

    def _unpin(self, handle: _DirHandle) -> None:
        pinned, handle.pinned, handle.entries = handle.pinned, [], None
        self.inodes.unpin(pinned)

    async def mkdir(self, parent_inode: int, name: str, mode: int, caller: Caller) -> Entry:
        node = await self.inodes.node(parent_inode).mkdir(name, stat.S_IMODE(mode), caller)
        return await self._known(parent_inode, node)

    async def mknod(self, parent_inode: int, name: str, mode: int, rdev: int, caller: Caller) -> Entry:
        node = await self.inodes.node(parent_inode).mknod(name, mode, rdev, caller)
        return await self._known(parent_inode, node)

    async def rmdir(self, parent_inode: int, name: str) -> None:
        await self.inodes.node(parent_inode).rmdir(name)

    async def unlink(self, parent_inode: int, name: str) -> None:
        await self.inodes.node(parent_inode).unlink(name)

    async def rename(self, parent_old: int, name_old: str, parent_new: int, name_new: str, flags: int) -> None:
        new_parent = self.inodes.node(parent_new)
        await self.inodes.node(parent_old).rename(name_old, new_parent, name_new, flags)

    async def symlink(self, parent_inode: int, name: str, target: str, caller: Caller) -> Entry:
        node = await self.inodes.node(parent_inode).symlink(name, target, caller)
        return await self._known(parent_inode, node)

    async def link(self, inode: int, new_parent_inode: int, new_name: str) -> Entry:
        node = await self.inodes.node(new_parent_inode).link(new_name, self.inodes.node(inode))
        return await self._known(new_parent_inode, node)

    # -- files ------------------------------------------------------------------------------

    def _opened(self, handle: OpenFile) -> Opened:
        fh = next(self._handles)
        self.files[fh] = handle
        return Opened(fh, handle.keep_cache, handle.direct_io)

    def _file(self, fh: int) -> OpenFile:
        try:
            return self.files[fh]
        except KeyError:
            raise NotFound(f"no open file {fh}") from None

    async def open(self, inode: int, flags: int, caller: Caller) -> Opened:
        node = self.inodes.node(inode)
        opened = self._opened(await node.open(flags))
        if flags & os.O_TRUNC and caller.uid != 0:
            await _drop_privileges(node)
        return opened

    async def create(self, parent_inode: int, name: str, mode: int, flags: int, caller: Caller) -> tuple[Opened, Entry]:
        node, handle = await self.inodes.node(parent_inode).create(name, stat.S_IMODE(mode), flags, caller)
        entry = await self._known(parent_inode, node)
        return self._opened(handle), entry

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        return await self._file(fh).read(offset, size)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        return await self._file(fh).write(offset, data)

    async def fsync(self, fh: int, datasync: bool) -> None:
        await self._file(fh).fsync(datasync)

    async def release(self, fh: int) -> None:
        handle = self.files.pop(fh, None)
        if handle is not None:
            await handle.release()

    async def release_all(self) -> list[BaseException]:
        """At shutdown: close every handle the kernel did not release (their locks go too)."""
        failures: list[BaseException] = []
        while self.files:
            _, handle = self.files.popitem()
            try:
                await handle.release()
            except Exception as exc:
                failures.append(exc)
        return failures


async def _drop_privileges(node: Node) -> None:
    """A truncating open by an unprivileged caller clears setuid (and setgid of a group-executable
    file), as truncate(2) does; the kernel leaves this to the filesystem for O_TRUNC."""
    mode = (await node.attr()).mode
    kill = stat.S_ISUID | (stat.S_ISGID if mode & stat.S_IXGRP else 0)
    if mode & kill:
        await node.setattr(SetAttr(mode=stat.S_IMODE(mode) & ~kill))
