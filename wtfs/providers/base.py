"""The provider seam: fetch one object into a Sink (a temp file in the cache's filesystem)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..objects import ObjectRef
from ..posix import pwrite_all

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


#: A part of a ranged transfer is remembered (for a resume) every so many of its bytes.
PART_SAVE_BYTES = 4 * 1024 * 1024


@dataclass
class Part:
    """One range [start, end) of a transfer in parallel streams; bytes before ``pos`` are written."""

    start: int
    pos: int
    end: int
    saved: int = field(default=-1, compare=False)  # ``pos`` as last remembered

    @property
    def left(self) -> int:
        return self.end - self.pos


class Sink:
    """The temp file a provider writes into; reports progress to whoever watches it.

    Providers call ``write`` (or ``advanced`` after writing to ``fd`` themselves) and ``reset``
    when a server ignores a resume. ``expected_size`` is what the provider learnt from the
    source (Content-Length), used when the catalog did not know the size. A sink may start at
    ``offset`` > 0 (a partial kept from an earlier transfer) whose bytes came from the version
    of the source named by ``validator`` (an ETag or Last-Modified): a provider resumes only if
    the source still has that version, and reports the version it gets with ``validated``.
    A transfer in parallel ranged streams writes ``parts`` (``begin_parts``, ``write_at``); they
    are remembered with the validator (``on_state``), so each range resumes where it stopped.
    """

    def __init__(
        self,
        fd: int,
        on_progress: Callable[[int], None],
        path: str = "",
        offset: int = 0,
        validator: str | None = None,
        parts: list[Part] | None = None,
        on_state: Callable[[Sink], None] | None = None,
    ) -> None:
        self.fd = fd
        self.path = path
        self.offset = offset
        self.validator = validator
        self.parts = parts
        self.expected_size: int | None = None
        self._on_progress = on_progress
        self._on_state = on_state
        self._flushed = offset

    def write(self, data: bytes) -> None:
        pwrite_all(self.fd, data, self.offset)
        self.offset += len(data)
        self._on_progress(self.offset)
        if self.offset - self._flushed >= WRITEBACK_BYTES:
            start_writeback(self.fd, self._flushed, self.offset - self._flushed)
            self._flushed = self.offset

    def begin_parts(self, parts: list[Part]) -> None:
        """From here on the bytes arrive in these ranges, in any order."""
        self.parts = parts
        self.offset = sum(part.pos - part.start for part in parts)
        self._save()

    def write_at(self, part: Part, data: bytes) -> None:
        """Bytes of ``part`` at its position; never past its end."""
        view = memoryview(data)[: part.left]
        pwrite_all(self.fd, view, part.pos)
        part.pos += len(view)
        self.offset += len(view)
        self._on_progress(self.offset)
        if part.pos - part.saved >= PART_SAVE_BYTES or (part.left == 0 and part.saved != part.pos):
            part.saved = part.pos
            self._save()
        if self.offset - self._flushed >= WRITEBACK_BYTES:
            start_writeback(self.fd, 0, 0)  # every dirty range of the file
            self._flushed = self.offset

    def _save(self) -> None:
        if self._on_state is not None:
            self._on_state(self)

    def advanced(self, n: int) -> None:
        self.offset += n
        self._on_progress(self.offset)

    def alive(self) -> None:
        """No bytes, but the source answered (a server asking to wait): not a stall."""
        self._on_progress(self.offset)

    def validated(self, validator: str | None) -> None:
        """The source's version of the bytes from here on; remembered for a later resume."""
        if validator != self.validator:
            self.validator = validator
            self._save()

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
        """Start over from byte 0 (the server would not resume, or the source changed)."""
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.offset = self._flushed = 0
        had_parts, self.parts = self.parts is not None, None
        if had_parts:
            self._save()  # never leave ranges recorded over bytes that are gone
        self._on_progress(0)


class Provider(Protocol):
    #: True when ``fetch`` continues a sink from its ``offset`` only while the source keeps the
    #: sink's ``validator`` (so a partial may be kept for a later transfer)
    resumes: bool

    async def fetch(self, obj: ObjectRef, sink: Sink) -> None:
        """Write the object's bytes into ``sink``; raise a WtfsError on failure."""
        ...
