"""The local side of a publish: which directories and regular files a PATH holds.

Symbolic links are never followed (a link out of a workspace must not publish what it points
at); they are listed so the command can say they were left out. The walk goes by directory
descriptors opened with O_NOFOLLOW, so a directory swapped for a link while it runs is not
entered; each file's (device, inode, size) is kept for the publisher to check when it opens it.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..confine import REFUSED_ERRNOS, open_dir
from ..errors import NotFound

#: How a subdirectory is opened from its parent's descriptor: never through a symlink.
_SUBDIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class LocalFile:
    rel: str  # POSIX path relative to PATH's destination folder, as on disk
    path: Path  # real and absolute: the publisher opens it walking from / with O_NOFOLLOW
    size: int
    mtime_ns: int
    dev: int  # with ino and size: the file the scan saw, checked when it is opened
    ino: int

    @property
    def folder(self) -> str:
        """The relative directory holding the file ('' for the destination itself)."""
        return self.rel.rpartition("/")[0]

    @property
    def name(self) -> str:
        return self.rel.rpartition("/")[2]


@dataclass
class LocalTree:
    dirs: list[str] = field(default_factory=list)  # parents before children
    files: list[LocalFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # symbolic links and special files

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def scan(path: Path) -> LocalTree:
    """A file publishes as one item; a directory as its contents, recursively."""
    real = _real(path)
    tree = LocalTree()
    try:
        fd = open_dir(str(real))
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file or directory") from None
    except OSError as exc:
        if exc.errno not in REFUSED_ERRNOS:
            raise
        _single(real, tree)  # not a directory (ENOTDIR), or a symlink (ELOOP)
        return tree
    try:
        _walk(fd, real, "", tree)
    finally:
        os.close(fd)
    return tree


def _real(path: Path) -> Path:
    """``path`` with its parents resolved but not its last component (a link there is refused)."""
    absolute = os.path.abspath(path)
    head, name = os.path.split(absolute)
    return Path(os.path.realpath(head), name) if name else Path(absolute)


def _single(real: Path, tree: LocalTree) -> None:
    st = os.lstat(real)
    if stat.S_ISREG(st.st_mode):
        tree.files.append(LocalFile(real.name, real, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino))
    else:
        tree.skipped.append(real.name)


def _walk(fd: int, real: Path, prefix: str, tree: LocalTree) -> None:
    with os.scandir(fd) as entries:
        listed = sorted(entries, key=lambda e: e.name)
    for entry in listed:
        rel = f"{prefix}{entry.name}"
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed since it was listed
        if stat.S_ISREG(st.st_mode):
            tree.files.append(LocalFile(rel, real / rel, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino))
        elif stat.S_ISDIR(st.st_mode):
            _subdir(fd, entry.name, real, rel, tree)
        else:
            tree.skipped.append(rel)


def _subdir(fd: int, name: str, real: Path, rel: str, tree: LocalTree) -> None:
    try:
        child = os.open(name, _SUBDIR, dir_fd=fd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return  # removed since it was listed
        if exc.errno not in REFUSED_ERRNOS:
            raise
        tree.skipped.append(rel)  # swapped for a link or a file since it was listed
        return
    tree.dirs.append(rel)
    try:
        _walk(child, real, f"{rel}/", tree)
    finally:
        os.close(child)
