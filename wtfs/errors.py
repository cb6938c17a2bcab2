"""The WtfsError family: every failure a user can see carries its errno.

The FUSE boundary (``wtfs.fs.boundary``) turns these into errnos; the CLI turns them into one
line and an exit status. Nothing else should need to know errno numbers.
"""

from __future__ import annotations

import errno


class WtfsError(Exception):
    """Base of every error wtfs reports to a user; ``errno`` is what the kernel sees."""

    errno: int = errno.EIO

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message or type(self).__name__


class NotFound(WtfsError):
    errno = errno.ENOENT


class SymlinkRefused(WtfsError):
    """A local path met a symbolic link where data/ listed a file or directory: never followed."""

    errno = errno.ELOOP


class ReadOnly(WtfsError):
    errno = errno.EROFS


class AccessDenied(WtfsError):
    errno = errno.EACCES


class TransferFailed(WtfsError):
    """Transfer failed, size or checksum mismatch, or a server error after retries."""

    errno = errno.EIO


class Stalled(WtfsError):
    errno = errno.ETIMEDOUT


class Busy(WtfsError):
    errno = errno.EBUSY


class Exists(WtfsError):
    errno = errno.EEXIST


class NoSpace(WtfsError):
    errno = errno.ENOSPC


class DiskFull(NoSpace):
    """The cache's filesystem filled up during a transfer (not the capacity setting): the object
    goes back to remote and the next open tries again."""


class Interrupted(WtfsError):
    """An open that was waiting when the daemon shut down.

    EIO, not EINTR: Python and Go retry a system call that fails with EINTR, and the retry would
    reach a mount that is already gone (ECONNABORTED) instead of a clear failure.
    """

    errno = errno.EIO


class CallerInterrupted(WtfsError):
    """The process waiting in open() got a signal that ends it or that it catches: EINTR at once
    (the kernel would keep even a killed process waiting); the transfer goes on for others."""

    errno = errno.EINTR


class InvalidName(WtfsError):
    errno = errno.EINVAL


class NotEmpty(WtfsError):
    errno = errno.ENOTEMPTY


class NotADirectory(WtfsError):
    errno = errno.ENOTDIR


class IsADirectory(WtfsError):
    errno = errno.EISDIR


class NotASymlink(WtfsError):
    """readlink of something else: EINVAL, as readlink(2) says."""

    errno = errno.EINVAL


class NoAttribute(WtfsError):
    errno = errno.ENODATA


class NotSupported(WtfsError):
    errno = errno.ENOTSUP


class NotPermitted(WtfsError):
    """What needs a privilege or an option the mount was not given (device nodes without dev)."""

    errno = errno.EPERM


class RaceLost(WtfsError):
    """A name changed between creating it and taking a handle on it: nothing was given away."""

    errno = errno.EAGAIN


class SpecError(WtfsError):
    """A session spec or option that cannot be used; reported before anything mounts."""

    errno = errno.EINVAL

    def __init__(self, where: str, key: str, fault: str) -> None:
        super().__init__(f"{where}: {key}: {fault}" if key else f"{where}: {fault}")
        self.where, self.key, self.fault = where, key, fault


class MountError(WtfsError):
    """The mount could not be set up (mountpoint, /dev/fuse, already mounted...)."""


_BY_ERRNO: dict[int, type[WtfsError]] = {
    cls.errno: cls
    for cls in (
        NotFound,
        SymlinkRefused,
        ReadOnly,
        AccessDenied,
        TransferFailed,
        Stalled,
        Busy,
        Exists,
        NoSpace,
    )
}


def from_errno(code: int, message: str) -> WtfsError:
    """Rebuild an error recorded by another daemon (transfer records store errno + text)."""
    return _BY_ERRNO.get(code, WtfsError)(message)
