"""Linux system calls that Python's ``os`` lacks, for descriptor-relative work.

The workspace is reached only through descriptors (``O_PATH`` handles and ``*at`` calls), so it
needs the few calls whose empty-path or flag forms ``os`` does not expose: ``renameat2`` with
RENAME_NOREPLACE/RENAME_EXCHANGE, ``fchownat``/``utimensat`` on a handle itself
(``AT_EMPTY_PATH``), with ``UTIME_OMIT`` for a time left as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (``pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def renameat2(old_dir: int, old: str, new_dir: int, new: str, flags: int = 0) -> None:
    """rename(2) between two directory descriptors, with RENAME_* flags."""
    result = _libc.renameat2(old_dir, os.fsencode(old), new_dir, os.fsencode(new), ctypes.c_uint(flags))
    _check(result, "renameat2")


def chown_handle(fd: int, uid: int, gid: int) -> None:
    """chown the object a handle (also an O_PATH one, also a symlink) refers to, following nothing."""
    _check(_libc.fchownat(fd, b"", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW), "fchownat")


def _timespec(ns: int | None) -> _Timespec:
    if ns is None:
        return _Timespec(0, UTIME_OMIT)
    return _Timespec(ns // 1_000_000_000, ns % 1_000_000_000)


def utime_handle(fd: int, atime_ns: int | None, mtime_ns: int | None) -> None:
    """Set the times of a handle's object; None leaves that time as it is (UTIME_OMIT)."""
    times = (_Timespec * 2)(_timespec(atime_ns), _timespec(mtime_ns))
    _check(_libc.utimensat(fd, b"", times, AT_EMPTY_PATH), "utimensat")


def proc_path(fd: int) -> str:
    """The /proc magic link of a handle: reaches its object itself, whatever its name is now."""
    return f"/proc/self/fd/{fd}"


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE as far as allowed: every workspace inode the kernel knows holds a handle."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (max(hard, 1 << 20), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
            return target
        except (ValueError, OSError):
            continue
    return soft
