"""The provider seam: fetch one object into a Sink (a temp file in the cache's filesystem)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from typing import Protocol

from ..objects import ObjectRef

#: Start writing a transfer's pages to disk every so many bytes, so the fsync before the copy
#: is published has little left to do (measured by `make bench`: cold HTTP open+read).
WRITEBACK_BYTES = 32 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2


def _libc_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return function  # type: ignore[no-any-return]


_sync_file_range = _libc_sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing this range (SYNC_FILE_RANGE_WRITE: does not wait)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


class Sink:
    """The temp file a provider writes into; reports progress to whoever watches it.

    Providers call ``write`` (or ``advanced`` after writing to ``fd`` themselves) and ``reset``
    when a server ignores a resume. ``expected_size`` is what the provider learnt from the
    source (Content-Length), used when the catalog did not know the size.
    """

    def __init__(self, fd: int, on_progress: Callable[[int], None], path: str = "") -> None:
        self.fd = fd
        self.path = path
        self.offset = 0
        self.expected_size: int | None = None
        self._on_progress = on_progress
        self._flushed = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.advanced(len(data))
        if self.offset - self._flushed >= WRITEBACK_BYTES:
            start_writeback(self.fd, self._flushed, self.offset - self._flushed)
            self._flushed = self.offset

    def advanced(self, n: int) -> None:
        self.offset += n
        self._on_progress(self.offset)

    def reported(self, done: int) -> None:
        """Progress of bytes that land elsewhere (a staging area), not yet in this file."""
        self.offset = done
        self._on_progress(done)

    def adopt(self, path: str) -> None:
        """Make the complete file at ``path`` (same filesystem) this sink's file: rename it over
        the temp file and point ``fd`` at it, so the usual verify-and-rename finishes the job."""
        os.rename(path, self.path)
        fresh = os.open(self.path, os.O_RDWR)
        try:
            os.dup2(fresh, self.fd)
        finally:
            os.close(fresh)
        self.offset = os.fstat(self.fd).st_size
        self._on_progress(self.offset)

    def reset(self) -> None:
        """Start over from byte 0 (the server would not resume)."""
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.offset = self._flushed = 0
        self._on_progress(0)


class Provider(Protocol):
    async def fetch(self, obj: ObjectRef, sink: Sink) -> None:
        """Write the object's bytes into ``sink``; raise a WtfsError on failure."""
        ...
