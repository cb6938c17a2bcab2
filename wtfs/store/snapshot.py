"""Snapshots of a user-writable tree, walked by descriptors so that nothing is ever followed.

Each directory is opened relative to its parent with O_NOFOLLOW, so a user who swaps a
directory for a symlink mid-walk gets an error, never a snapshot of what the link points to.
Files are hard-linked by name relative to that descriptor (no symlink followed), or copied
when the caller says so (files open for writing, runs' private workspaces).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
CopyIf = Callable[[os.stat_result], bool]


@dataclass
class Snapshot:
    """The manifest's file list, and which files share their inode with the source."""

    files: list[dict[str, Any]] = field(default_factory=list)
    linked: list[tuple[int, int, str]] = field(default_factory=list)  # (st_dev, st_ino, rel)


@dataclass
class _Dir:
    fd: int
    names: Iterator[str]
    target: str
    rel: str


def snapshot(source: Path, target: Path, copy_if: CopyIf | None = None, link: bool = True) -> Snapshot:
    """Recreate ``source`` at ``target``: files hard-linked (or copied where ``copy_if`` says,
    or all when not ``link``), directories with their modes and times, symlinks as symlinks."""
    result = Snapshot()
    root = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    target.mkdir(parents=True)
    directories: list[tuple[str, os.stat_result]] = [(str(target), os.stat(root))]
    stack = [_Dir(root, _names(root), str(target), "")]
    try:
        while stack:
            top = stack[-1]
            name = next(top.names, None)
            if name is None:
                os.close(stack.pop().fd)
                continue
            child = _entry(top, name, result, directories, copy_if if link else _always)
            if child is not None:
                stack.append(child)
    finally:
        for level in stack:
            os.close(level.fd)
    for path, st in reversed(directories):  # deepest first: parents' mtimes set last
        os.chmod(path, stat.S_IMODE(st.st_mode))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    result.files.sort(key=lambda f: str(f["path"]))
    return result


def _always(st: os.stat_result) -> bool:
    return True


def _names(fd: int) -> Iterator[str]:
    return iter(os.listdir(fd))


def _entry(
    parent: _Dir, name: str, out: Snapshot, directories: list[tuple[str, os.stat_result]], copy_if: CopyIf | None
) -> _Dir | None:
    """Snapshot one entry; a directory comes back to be walked next."""
    try:
        st = os.stat(name, dir_fd=parent.fd, follow_symlinks=False)
    except FileNotFoundError:
        return None  # removed while we walked: not part of the snapshot
    rel, dst = parent.rel + name, f"{parent.target}/{name}"
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, _DIR, dir_fd=parent.fd)
        os.mkdir(dst)
        directories.append((dst, st))
        return _Dir(fd, _names(fd), dst, rel + "/")
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(name, dir_fd=parent.fd), dst)
        out.files.append({"path": rel, "type": "symlink", "size": st.st_size})
    elif stat.S_ISREG(st.st_mode):
        if copy_if is not None and copy_if(st):
            st = copy_file(parent.fd, name, dst)
        else:
            os.link(name, dst, src_dir_fd=parent.fd, follow_symlinks=False)
            out.linked.append((st.st_dev, st.st_ino, rel))
        out.files.append({"path": rel, "type": "file", "size": st.st_size, "mode": stat.S_IMODE(st.st_mode)})
    return None


def copy_file(dir_fd: int, name: str, dst: str, dst_dir_fd: int | None = None) -> os.stat_result:
    """Copy a regular file (bytes, mode, owner, times) to a new inode at ``dst``; its stat."""
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{name}: not a regular file any more")
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dst_dir_fd)
        try:
            _copy_bytes(src, out, st.st_size)
            os.fchown(out, st.st_uid, st.st_gid)
            os.fchmod(out, stat.S_IMODE(st.st_mode))
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(out)
        return st
    finally:
        os.close(src)


def _copy_bytes(src: int, dst: int, size: int) -> None:
    offset = 0
    while True:
        try:
            sent = os.copy_file_range(src, dst, max(size - offset, 1 << 20), offset, offset)
        except OSError:
            sent = os.sendfile(dst, src, offset, 1 << 20)
        if sent == 0:
            return
        offset += sent
