"""Local files opened without following symbolic links, and paths kept beneath roots.

The daemon runs as root with ``allow_other``: a symlink planted in a served directory, or a
directory swapped for one after it was listed, must never lead it anywhere else. Paths are
walked from ``/`` one component at a time with O_NOFOLLOW, so they must be real already: the
catalog resolves an entry's directory at mount time, a phys_path is resolved when it is checked
against ``local_roots``. A walk that meets a symlink fails (ELOOP or ENOTDIR).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable

from .errors import SymlinkRefused

#: How each directory on the way is opened: no read permission needed, never a symlink.
_WALK = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: What a walk that met a symlink fails with: ELOOP at the last component, ENOTDIR before it.
REFUSED_ERRNOS = (errno.ELOOP, errno.ENOTDIR)


def _parts(path: str) -> list[str]:
    """The components of an absolute, normalized path (anything else could mean another place)."""
    parts = [part for part in path.split("/") if part]
    if not path.startswith("/") or any(part in (".", "..") for part in parts):
        raise OSError(errno.EINVAL, "not an absolute, normalized path", path)
    return parts


def _open_beneath(path: str, flags: int) -> int:
    """Open ``path`` with ``flags`` after walking its directories with O_NOFOLLOW."""
    parts = _parts(path)
    if not parts:
        return os.open("/", flags | os.O_CLOEXEC)
    fd = os.open("/", _WALK)
    try:
        for part in parts[:-1]:
            child = os.open(part, _WALK, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


def open_file(path: str) -> int:
    """A read-only fd on the regular file at real ``path``; never a symlink, FIFO or device."""
    fd = _open_beneath(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO swapped in must not block us
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EPERM, "not a regular file", path)
    return fd


def open_dir(path: str) -> int:
    """A readable fd on the directory at real ``path``, for listing it with ``*at`` calls."""
    return _open_beneath(path, os.O_RDONLY | os.O_DIRECTORY)


def refused(path: str) -> SymlinkRefused:
    """What a walk that met a symlink answers: ELOOP, the errno of O_NOFOLLOW refusing a link."""
    return SymlinkRefused(f"{path}: a symbolic link or non-directory on the way (links are never followed)")


def confined(path: str, roots: Iterable[str | os.PathLike[str]]) -> str | None:
    """The real path of ``path`` if it lies beneath one of ``roots`` (themselves resolved), else None."""
    if not path.startswith("/"):
        return None  # relative to what? the daemon's working directory is no root
    real = os.path.realpath(path)
    for root in roots:
        top = os.path.realpath(root)
        if os.path.commonpath([real, top]) == top:
            return real
    return None
