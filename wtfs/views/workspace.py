"""workspace/: a read-write passthrough reached only through descriptors, like passthrough_ll.

Every node holds an ``O_PATH`` handle on its object; every operation is an ``*at`` call relative
to a handle that follows no symlink, or goes through the handle's ``/proc/self/fd`` link. No path
is ever built from the workspace root, so a user who swaps a directory for a symlink cannot lead
the root daemon outside, and PATH_MAX is the disk's. Nodes are keyed by (st_dev, st_ino): hard
links are one inode, and an unlinked file keeps working while the kernel still knows it.

What a caller creates is theirs: a file is made nameless (O_TMPFILE), given the caller's uid and
gid (the directory's gid under setgid) and the caller's mode less the caller's umask, then
linked in; a directory, node or symlink is made with mode 0 (nobody can use it) and handed over.

Versions share inodes with the workspace (hard links). Before an inode changes (opened for
writing, truncated, chmod, chown, utime, xattrs), ``unshare`` gives every version holding it a
copy of its own, so descriptors already open keep pointing at the workspace's inode.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import stat
import threading
from collections.abc import Callable, Container, Sequence

import trio

from .. import posix, procfs
from ..errors import NotPermitted, RaceLost
from .base import STABLE_INODE_BASE, Attr, Caller, Node, OpenFile, SetAttr, wants_write

#: How long the kernel may keep a workspace entry's attributes: passthrough_ll's default. Changes
#: made through the mount update the kernel's copy at once; changes made on the disk directly
#: are seen within this time.
WORKSPACE_TTL = 1.0
_HANDLE = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_CREATE = ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_NOFOLLOW)

InodeId = tuple[int, int]
Unshare = Callable[[os.stat_result], None]


def attr_of(st: os.stat_result, ttl: float) -> Attr:
    """What ``stat`` shows: the disk's own owner, mode, links, times, device and blocks."""
    return Attr(
        mode=st.st_mode,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        atime_ns=st.st_atime_ns,
        nlink=st.st_nlink,
        ttl=ttl,
        uid=st.st_uid,
        gid=st.st_gid,
        rdev=st.st_rdev,
        blocks=st.st_blocks,
    )


def _seen(st: os.stat_result) -> tuple[int, ...]:
    """Every stat field ``attr_of`` shows: equal tuples, equal attributes (cheaper than an Attr)."""
    return (
        st.st_mode,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_atime_ns,
        st.st_nlink,
        st.st_uid,
        st.st_gid,
        st.st_rdev,
        st.st_blocks,
    )


class WorkspaceTree:
    """One passthrough tree: its root handle, its live nodes and its writers.

    ``unshare`` is the version store's callback (run in a worker thread); ``open_for_writing``
    answers the snapshot's question "copy this one rather than link it?" from any thread.
    """

    def __init__(self, root: str, unshare: Unshare | None = None, devices: bool = False, tag: str = "ws") -> None:
        self.tag = tag
        self.unshare = unshare
        self.devices = devices
        self.nodes: dict[InodeId, WorkspaceNode] = {}
        self._writers: collections.Counter[InodeId] = collections.Counter()
        self._writers_lock = threading.Lock()
        self.root = self.node_for(os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))

    def node_for(self, fd: int, st: os.stat_result | None = None) -> WorkspaceNode:
        """The one node of the object ``fd`` refers to; ``fd`` is kept or closed."""
        st = st or os.stat(fd)
        ident = (st.st_dev, st.st_ino)
        node = self.nodes.get(ident)
        if node is not None:
            os.close(fd)
            return node
        node = WorkspaceNode(self, fd, ident)
        self.nodes[ident] = node
        return node

    def open_for_writing(self, st: os.stat_result) -> bool:
        with self._writers_lock:
            return self._writers[(st.st_dev, st.st_ino)] > 0

    def add_writer(self, ident: InodeId, delta: int) -> None:
        with self._writers_lock:
            self._writers[ident] += delta
            if self._writers[ident] <= 0:
                del self._writers[ident]

    async def before_change(self, fd: int) -> None:
        """Give versions their own copy of this inode before it changes (only if it is shared)."""
        st = os.stat(fd)
        if self.unshare is not None and stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            await trio.to_thread.run_sync(self.unshare, st)

    def close(self) -> None:
        for node in list(self.nodes.values()):
            node.forget()
        os.close(self.root.fd)


class WorkspaceNode(Node):
    """One object of the tree, held by an O_PATH handle."""

    def __init__(self, tree: WorkspaceTree, fd: int, ident: InodeId) -> None:
        self.tree = tree
        self.fd = fd
        self.ident = ident
        self.key = (tree.tag, *ident)
        self._seen: tuple[int, ...] = ()
        self._attr = Attr(0)

    def forget(self) -> None:
        if self is self.tree.root:
            return  # the tree's root lives as long as the tree (its parent holds it)
        if self.tree.nodes.get(self.ident) is self:
            del self.tree.nodes[self.ident]
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @property
    def inode_hint(self) -> int | None:
        """The disk's inode number, lifted above the sequential range (if it fits there)."""
        ino = self.ident[1]
        return STABLE_INODE_BASE + ino if ino < STABLE_INODE_BASE else None

    @property
    def proc(self) -> str:
        return posix.proc_path(self.fd)

    def _stat(self) -> os.stat_result:
        return os.stat(self.fd)

    async def attr(self) -> Attr:
        return self.attr_from(self._stat())

    def attr_from(self, st: os.stat_result) -> Attr:
        """What ``st`` shows; the same Attr object as last time while nothing changed, so the
        core re-sends the entry it made then (a repeated listing builds nothing)."""
        seen = _seen(st)
        if seen != self._seen:
            self._seen, self._attr = seen, attr_of(st, WORKSPACE_TTL)
        return self._attr

    # -- names --------------------------------------------------------------------------------

    def _child(self, name: str) -> WorkspaceNode:
        fd = os.open(name, _HANDLE, dir_fd=self.fd)
        return self.tree.node_for(fd)

    async def lookup(self, name: str) -> Node:
        return self._child(name)

    async def listdir(self) -> list[tuple[str, Node]]:
        children: list[tuple[str, Node]] = []
        for name, node in await self.listing():
            if node is None:
                found = self._listed(name)
                node = None if found is None else found[0]
            if node is not None:
                children.append((name, node))
        return children

    async def listing(self) -> Sequence[tuple[str, Node | None]]:
        """A node for each child the tree has none for yet (its handle opened in the worker);
        None for the others, which the listing looks at as it hands them out (``listed``)."""
        names, opened = await trio.to_thread.run_sync(_scan, self.fd, self.tree.nodes)
        made = {name: self.tree.node_for(fd, st) for name, (fd, st) in opened.items()}
        return [(name, made.get(name)) for name in names]

    async def listed(self, name: str) -> tuple[Node, Attr] | None:
        return self._listed(name)

    def _listed(self, name: str) -> tuple[WorkspaceNode, Attr] | None:
        """One ``fstatat`` (no link followed) gives both the object and what to show of it; a
        handle is opened only for an object the tree has no node for yet."""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            node = self.tree.nodes.get((st.st_dev, st.st_ino))
            if node is None:
                fd = os.open(name, _HANDLE, dir_fd=self.fd)
                st = os.stat(fd)  # the object the handle holds, should the name have changed
                node = self.tree.node_for(fd, st)
        except FileNotFoundError:
            return None  # gone since it was listed
        return node, node.attr_from(st)

    async def readlink(self) -> str:
        return os.readlink("", dir_fd=self.fd)

    # -- creating -----------------------------------------------------------------------------

    def _owner(self, caller: Caller) -> tuple[int, int, bool]:
        """(uid, gid, setgid directory?) for a new child, as the kernel would choose them."""
        parent = self._stat()
        if parent.st_mode & stat.S_ISGID:
            return caller.uid, parent.st_gid, True
        return caller.uid, caller.gid, False

    def _give(self, fd: int, mode: int, caller: Caller, directory: bool = False) -> None:
        """Hand a just-made object (still root's, mode 0) to the caller, then set its mode."""
        uid, gid, setgid_dir = self._owner(caller)
        posix.chown_handle(fd, uid, gid)
        perm = stat.S_IMODE(mode) & ~caller.umask
        if directory and setgid_dir:
            perm |= stat.S_ISGID
        elif _strips_setgid(perm) and caller.uid != 0 and gid not in procfs.groups_of(caller.pid, caller.gid):
            perm &= ~stat.S_ISGID  # as the kernel does for a caller outside the file's group
        os.chmod(posix.proc_path(fd), perm)

    def _adopt(self, name: str, kind: int) -> WorkspaceNode:
        """Take a handle on what we just made; refuse if the name now holds something else."""
        fd = os.open(name, _HANDLE, dir_fd=self.fd)
        st = os.stat(fd)
        if stat.S_IFMT(st.st_mode) != kind or st.st_uid != os.geteuid() or st.st_mode & 0o7777 & ~stat.S_ISGID:
            os.close(fd)
            raise RaceLost(f"{name} changed while it was being created")
        return self.tree.node_for(fd, st)

    async def create(self, name: str, mode: int, flags: int, caller: Caller) -> tuple[Node, OpenFile]:
        try:
            fd = self._create_owned(name, mode, flags, caller)
        except FileExistsError:
            if flags & os.O_EXCL:
                raise
            node = self._child(name)  # made by someone else meanwhile: open it as it is
            return node, await node.open(flags)
        node = self.tree.node_for(os.open(posix.proc_path(fd), os.O_PATH | os.O_CLOEXEC))
        return node, WorkspaceFile(node, fd, flags)

    def _create_owned(self, name: str, mode: int, flags: int, caller: Caller) -> int:
        """A new file, already the caller's when its name appears: made nameless (O_TMPFILE),
        handed over, then linked in (EEXIST if the name is taken). Where the disk has no
        O_TMPFILE: made by name with mode 0, so nobody can use it before it is handed over."""
        extra = flags & (os.O_APPEND | os.O_DSYNC | os.O_SYNC | os.O_NOATIME)
        try:
            fd = os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC | extra, 0, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            return self._create_by_name(name, mode, flags, caller)
        try:
            self._give(fd, mode, caller)
            os.link(posix.proc_path(fd), name, dst_dir_fd=self.fd, follow_symlinks=True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _create_by_name(self, name: str, mode: int, flags: int, caller: Caller) -> int:
        open_flags = (flags & _NO_CREATE) | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, open_flags, 0, dir_fd=self.fd)
        try:
            self._give(fd, mode, caller)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self.fd)
            raise
        return fd

    async def mkdir(self, name: str, mode: int, caller: Caller) -> Node:
        os.mkdir(name, 0, dir_fd=self.fd)
        return self._made(name, stat.S_IFDIR, mode, caller, lambda: os.rmdir(name, dir_fd=self.fd))

    async def mknod(self, name: str, mode: int, rdev: int, caller: Caller) -> Node:
        kind = stat.S_IFMT(mode)
        if kind in (stat.S_IFCHR, stat.S_IFBLK) and not self.tree.devices:
            raise NotPermitted("device nodes need the mount option dev")
        os.mknod(name, kind, rdev, dir_fd=self.fd)
        return self._made(name, kind, mode, caller, lambda: os.unlink(name, dir_fd=self.fd))

    async def symlink(self, name: str, target: str, caller: Caller) -> Node:
        os.symlink(target, name, dir_fd=self.fd)
        fd = os.open(name, _HANDLE, dir_fd=self.fd)
        st = os.stat(fd)
        if not stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
            os.close(fd)
            raise RaceLost(f"{name} changed while it was being created")
        posix.chown_handle(fd, *self._owner(caller)[:2])
        return self.tree.node_for(fd)

    def _made(self, name: str, kind: int, mode: int, caller: Caller, undo: Callable[[], None]) -> Node:
        try:
            node = self._adopt(name, kind)
            self._give(node.fd, mode, caller, directory=kind == stat.S_IFDIR)
        except RaceLost:
            raise
        except BaseException:
            with contextlib.suppress(OSError):
                undo()
            raise
        return node

    async def link(self, name: str, target: Node) -> Node:
        if not isinstance(target, WorkspaceNode) or target.tree is not self.tree:
            raise OSError(errno.EXDEV, "hard links stay within one workspace")
        os.link(target.proc, name, dst_dir_fd=self.fd, follow_symlinks=True)
        return target

    # -- removing and renaming ----------------------------------------------------------------

    async def unlink(self, name: str) -> None:
        os.unlink(name, dir_fd=self.fd)

    async def rmdir(self, name: str) -> None:
        os.rmdir(name, dir_fd=self.fd)

    async def rename(self, name: str, new_parent: Node, new_name: str, flags: int) -> None:
        if not isinstance(new_parent, WorkspaceNode) or new_parent.tree is not self.tree:
            raise OSError(errno.EXDEV, "rename across trees")
        posix.renameat2(self.fd, name, new_parent.fd, new_name, flags)

    # -- changing -----------------------------------------------------------------------------

    async def setattr(self, changes: SetAttr) -> Attr:
        await self.tree.before_change(self.fd)
        if changes.size is not None:
            os.truncate(self.proc, changes.size)
        if changes.mode is not None:
            os.chmod(self.proc, changes.mode)
        if changes.uid is not None or changes.gid is not None:
            uid = -1 if changes.uid is None else changes.uid
            gid = -1 if changes.gid is None else changes.gid
            posix.chown_handle(self.fd, uid, gid)
        if changes.atime_ns is not None or changes.mtime_ns is not None:
            posix.utime_handle(self.fd, changes.atime_ns, changes.mtime_ns)
        return await self.attr()

    async def open(self, flags: int) -> OpenFile:
        writable = wants_write(flags)
        if writable:
            self.tree.add_writer(self.ident, 1)  # before the check: a snapshot now copies it
            try:
                await self.tree.before_change(self.fd)
                fd = os.open(self.proc, (flags & _NO_CREATE) | os.O_CLOEXEC)
            except BaseException:
                self.tree.add_writer(self.ident, -1)
                raise
            return WorkspaceFile(self, fd, flags, registered=True)
        return WorkspaceFile(self, os.open(self.proc, (flags & _NO_CREATE) | os.O_CLOEXEC), flags)

    # -- extended attributes ------------------------------------------------------------------

    def _xattr_path(self) -> str:
        if stat.S_ISLNK(self._stat().st_mode):
            raise OSError(errno.EPERM, "no extended attributes on a symbolic link")
        return self.proc

    async def getxattr(self, name: str) -> bytes:
        try:
            path = self._xattr_path()
        except OSError:
            raise OSError(errno.ENODATA, name) from None
        return os.getxattr(path, name)

    async def listxattr(self) -> list[str]:
        try:
            return os.listxattr(self._xattr_path())
        except PermissionError:
            return []

    async def setxattr(self, name: str, value: bytes) -> None:
        path = self._xattr_path()
        await self.tree.before_change(self.fd)
        os.setxattr(path, name, value)

    async def removexattr(self, name: str) -> None:
        path = self._xattr_path()
        await self.tree.before_change(self.fd)
        os.removexattr(path, name)


def _strips_setgid(perm: int) -> bool:
    """Setgid on a group-executable file is what the kernel strips for an outsider."""
    return perm & (stat.S_ISGID | stat.S_IXGRP) == stat.S_ISGID | stat.S_IXGRP


def _scan(dir_fd: int, held: Container[InodeId]) -> tuple[list[str], dict[str, tuple[int, os.stat_result]]]:
    """The sorted names of the children, and a handle (with its stat) on each the tree holds no
    node for, in a worker thread. Whether the tree holds one is told by the directory entry's
    inode number (no stat needed): a repeated listing opens nothing. The number is a hint only:
    the listing looks at each such child by name when it hands it out (``listed``)."""
    dev = os.stat(dir_fd).st_dev
    listing = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        with os.scandir(listing) as children:
            inodes = {child.name: child.inode() for child in children}
    finally:
        os.close(listing)
    opened: dict[str, tuple[int, os.stat_result]] = {}
    for name, ino in inodes.items():
        if (dev, ino) not in held:
            with contextlib.suppress(FileNotFoundError):  # gone: the listing leaves it out
                fd = os.open(name, _HANDLE, dir_fd=dir_fd)
                opened[name] = (fd, os.stat(fd))
    return sorted(inodes), opened


class WorkspaceFile(OpenFile):
    """An open file of the workspace: its own descriptor on the workspace's inode."""

    def __init__(self, node: WorkspaceNode, fd: int, flags: int, registered: bool = False) -> None:
        self.node = node
        self.fd = fd
        self.append = bool(flags & os.O_APPEND)
        if wants_write(flags) and not registered:
            node.tree.add_writer(node.ident, 1)
            registered = True
        self.registered = registered

    async def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    async def write(self, offset: int, data: bytes) -> int:
        if self.append:
            return os.write(self.fd, data)
        return os.pwrite(self.fd, data, offset)

    async def fsync(self, datasync: bool) -> None:
        await trio.to_thread.run_sync(os.fdatasync if datasync else os.fsync, self.fd)

    async def release(self) -> None:
        os.close(self.fd)
        if self.registered:
            self.node.tree.add_writer(self.node.ident, -1)
            self.registered = False
