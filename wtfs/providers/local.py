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
    """Copies with copy_file_range in worker threads, a chunk at a time for progress."""

    async def fetch(self, obj: ObjectRef, sink: Sink) -> None:
        path = local_path(obj.source.removeprefix("file://") if obj.source.startswith("file://") else obj.source)
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
