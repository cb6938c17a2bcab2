"""One small filesystem client, two ways: through a real mount, or on the core in-process.

``CoreClient`` plays the kernel against ``wtfs.fs.core.FsCore``: it walks paths by lookup,
opens, reads, writes and releases, and forgets every lookup when an operation ends, so the
core's lookup counting and handle lifetimes are exercised as the kernel would. Errors come
out as ``OSError`` with the errno a process would see on the mount. The same test cases run
on both clients (``tests/test_core_cases.py``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from wtfs.errors import WtfsError
from wtfs.fs.core import Entry, FsCore
from wtfs.fs.inodes import ROOT_INODE
from wtfs.views import Caller, SetAttr

T = TypeVar("T")


@dataclass(frozen=True)
class Stat:
    """What the cases compare: the fields a user's ``stat`` shows."""

    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    ino: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


class FsClient(Protocol):
    async def stat(self, path: str) -> Stat: ...
    async def listdir(self, path: str) -> list[str]: ...
    async def read(self, path: str) -> bytes: ...
    async def write(self, path: str, data: bytes, mode: int = 0o644) -> None: ...
    async def mkdir(self, path: str, mode: int = 0o755) -> None: ...
    async def rmdir(self, path: str) -> None: ...
    async def unlink(self, path: str) -> None: ...
    async def rename(self, old: str, new: str) -> None: ...
    async def symlink(self, target: str, path: str) -> None: ...
    async def readlink(self, path: str) -> str: ...
    async def link(self, old: str, new: str) -> None: ...
    async def chmod(self, path: str, mode: int) -> None: ...


class MountClient:
    """Plain system calls on a mounted tree."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _p(self, path: str) -> Path:
        return self.root / path

    async def stat(self, path: str) -> Stat:
        st = os.lstat(self._p(path))
        return Stat(st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_size, st.st_ino)

    async def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(self._p(path)))

    async def read(self, path: str) -> bytes:
        with open(self._p(path), "rb") as f:
            return f.read()

    async def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        fd = os.open(self._p(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    async def mkdir(self, path: str, mode: int = 0o755) -> None:
        os.mkdir(self._p(path), mode)

    async def rmdir(self, path: str) -> None:
        os.rmdir(self._p(path))

    async def unlink(self, path: str) -> None:
        os.unlink(self._p(path))

    async def rename(self, old: str, new: str) -> None:
        os.rename(self._p(old), self._p(new))

    async def symlink(self, target: str, path: str) -> None:
        os.symlink(target, self._p(path))

    async def readlink(self, path: str) -> str:
        return os.readlink(self._p(path))

    async def link(self, old: str, new: str) -> None:
        os.link(self._p(old), self._p(new), follow_symlinks=False)

    async def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._p(path), mode)


class CoreClient:
    """The kernel's part, played in-process against the core (no FUSE, no root needed)."""

    def __init__(self, core: FsCore, caller: Caller | None = None) -> None:
        self.core = core
        self.caller = caller or Caller(os.getuid(), os.getgid(), os.getpid(), 0o022)

    async def _op(self, work: Callable[[list[int]], Awaitable[T]]) -> T:
        """Run one operation; forget its lookups afterwards; errors as the errno a user sees."""
        looked_up: list[int] = []
        try:
            return await work(looked_up)
        except WtfsError as exc:
            raise OSError(exc.errno, str(exc)) from None
        finally:
            for inode in looked_up:
                self.core.forget(inode, 1)

    async def _walk(self, path: str, looked_up: list[int]) -> int:
        inode = ROOT_INODE
        for name in filter(None, path.split("/")):
            entry = await self.core.lookup(inode, name)
            looked_up.append(entry.st_ino)
            inode = entry.st_ino
        return inode

    async def _parent(self, path: str, looked_up: list[int]) -> tuple[int, str]:
        parent, _, name = path.rstrip("/").rpartition("/")
        return await self._walk(parent, looked_up), name

    @staticmethod
    def _stat(entry: Entry) -> Stat:
        return Stat(entry.st_mode, entry.st_nlink, entry.st_uid, entry.st_gid, entry.st_size, entry.st_ino)

    async def stat(self, path: str) -> Stat:
        async def work(seen: list[int]) -> Stat:
            return self._stat(await self.core.getattr(await self._walk(path, seen)))

        return await self._op(work)

    async def listdir(self, path: str) -> list[str]:
        async def work(seen: list[int]) -> list[str]:
            fh = await self.core.opendir(await self._walk(path, seen))
            names = []
            try:
                async for item in self.core.readdir(fh, 0):
                    self.core.accepted(fh, item)
                    if item.counted:
                        seen.append(item.entry.st_ino)
                        names.append(item.name)
            finally:
                await self.core.releasedir(fh)
            return sorted(names)

        return await self._op(work)

    async def read(self, path: str) -> bytes:
        async def work(seen: list[int]) -> bytes:
            opened = await self.core.open(await self._walk(path, seen), os.O_RDONLY, self.caller)
            chunks = []
            try:
                while chunk := await self.core.read(opened.fh, sum(map(len, chunks)), 1 << 20):
                    chunks.append(chunk)
            finally:
                await self.core.release(opened.fh)
            return b"".join(chunks)

        return await self._op(work)

    async def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        async def work(seen: list[int]) -> None:
            parent, name = await self._parent(path, seen)
            try:
                inode = await self._walk(path, seen)
            except OSError:
                opened, entry = await self.core.create(parent, name, stat.S_IFREG | mode, os.O_WRONLY, self.caller)
                seen.append(entry.st_ino)
            else:
                await self.core.setattr(inode, SetAttr(size=0))  # the kernel's O_TRUNC
                opened = await self.core.open(inode, os.O_WRONLY, self.caller)
            try:
                await self.core.write(opened.fh, 0, data)
            finally:
                await self.core.release(opened.fh)

        await self._op(work)

    async def mkdir(self, path: str, mode: int = 0o755) -> None:
        async def work(seen: list[int]) -> None:
            parent, name = await self._parent(path, seen)
            seen.append((await self.core.mkdir(parent, name, mode, self.caller)).st_ino)

        await self._op(work)

    async def rmdir(self, path: str) -> None:
        async def work(seen: list[int]) -> None:
            await self.core.rmdir(*await self._parent(path, seen))

        await self._op(work)

    async def unlink(self, path: str) -> None:
        async def work(seen: list[int]) -> None:
            await self.core.unlink(*await self._parent(path, seen))

        await self._op(work)

    async def rename(self, old: str, new: str) -> None:
        async def work(seen: list[int]) -> None:
            old_parent, old_name = await self._parent(old, seen)
            new_parent, new_name = await self._parent(new, seen)
            await self.core.rename(old_parent, old_name, new_parent, new_name, 0)

        await self._op(work)

    async def symlink(self, target: str, path: str) -> None:
        async def work(seen: list[int]) -> None:
            parent, name = await self._parent(path, seen)
            seen.append((await self.core.symlink(parent, name, target, self.caller)).st_ino)

        await self._op(work)

    async def readlink(self, path: str) -> str:
        async def work(seen: list[int]) -> str:
            return await self.core.readlink(await self._walk(path, seen))

        return await self._op(work)

    async def link(self, old: str, new: str) -> None:
        async def work(seen: list[int]) -> None:
            inode = await self._walk(old, seen)
            parent, name = await self._parent(new, seen)
            seen.append((await self.core.link(inode, parent, name)).st_ino)

        await self._op(work)

    async def chmod(self, path: str, mode: int) -> None:
        async def work(seen: list[int]) -> None:
            await self.core.setattr(await self._walk(path, seen), SetAttr(mode=mode))

        await self._op(work)
