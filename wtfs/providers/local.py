"""Local copies: ``file://``, ``local://`` and plain paths, opened without following symlinks.

Every local source is a real path (see ``wtfs.confine``): a symlink met on the way, such as a
directory of a served tree swapped for a link after it was listed, fails the open.
"""

from __future__ import annotations

import errno
import os

import trio

from ..config import local_path
from ..confine import REFUSED_ERRNOS, open_file, refused
from ..errors import AccessDenied, NotFound, TransferFailed
from ..objects import ObjectRef
from .base import Sink

_CHUNK = 64 * 1024 * 1024


class LocalProvider:
    """Local sources are served in place (``open_source``); ``fetch`` copies, with
    copy_file_range in worker threads a chunk at a time for progress, only what must be verified
    against a spec's sha256 first."""

    resumes = False

    def __init__(self) -> None:
        self._identity: dict[str, tuple[int, int]] = {}  # object id -> (st_dev, st_ino) first served

    def open_source(self, obj: ObjectRef) -> tuple[int, ObjectRef]:
        """An fd on the source itself (no symlink followed), and the object as it is now: ``obj``
        while its size, mtime and inode are those it was listed (first served) with, else the
        object of the file that is there now. Blocking: run in a worker thread."""
        path = _path(obj)
        try:
            fd = open_file(path)
        except OSError as exc:
            raise _error(path, exc) from None
        st = os.fstat(fd)
        inode = (st.st_dev, st.st_ino)
        versions = (str(st.st_mtime_ns), "", f"{st.st_mtime_ns}:{st.st_dev}:{st.st_ino}")
        listed = obj.size in (None, st.st_size) and obj.id in _ids(obj, versions)
        if listed and self._identity.setdefault(obj.id, inode) == inode:
            return fd, obj
        return fd, ObjectRef.for_source(obj.source, st.st_size, None, versions[-1])

    async def fetch(self, obj: ObjectRef, sink: Sink) -> None:
        path = _path(obj)
        try:
            src = await trio.to_thread.run_sync(open_file, path)
        except OSError as exc:
            raise _error(path, exc) from None
        try:
            while True:
                n = await trio.to_thread.run_sync(_copy_chunk, src, sink.fd, sink.offset)
                if n == 0:
                    return
                sink.advanced(n)
        except OSError as exc:
            raise _error(path, exc) from None
        finally:
            os.close(src)


def _ids(obj: ObjectRef, versions: tuple[str, ...]) -> set[str]:
    """The ids ``obj`` would have with each version: listed with the file's mtime (the catalog),
    with none (Girder's phys_path), or as a file seen changed (mtime and inode)."""
    return {ObjectRef.for_source(obj.source, obj.size, obj.sha256, version).id for version in versions}


def _path(obj: ObjectRef) -> str:
    return local_path(obj.source.removeprefix("file://") if obj.source.startswith("file://") else obj.source)


def _copy_chunk(src: int, dst: int, offset: int) -> int:
    try:
        return os.copy_file_range(src, dst, _CHUNK, offset, offset)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    data = os.pread(src, _CHUNK, offset)
    return os.pwrite(dst, data, offset) if data else 0


def _error(path: str, exc: OSError) -> Exception:
    if exc.errno == errno.ENOENT:
        return NotFound(f"{path}: no such file")
    if exc.errno in REFUSED_ERRNOS:
        return refused(path)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return AccessDenied(f"{path}: permission denied")
    return TransferFailed(f"{path}: {exc.strerror}")
