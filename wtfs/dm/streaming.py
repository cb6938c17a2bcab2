"""Reading a copy before it lands (``stream``): which bytes of a transfer's partial a reader may
see, and waiting for the rest.

A read waits until its range is written (or the transfer ended), never for the whole copy: with
one stream the written bytes are the prefix the sink has reached; with parallel ranged streams,
the ranges' written heads. A transfer that fails after bytes were served (a sha256 mismatch found
at landing) fails every later read of it: the bytes already read were never verified.

A read far past what one stream wrote (``FAR_BYTES``) does not wait for the stream to get there:
where the provider fetches ranges and the source names its version (ETag or Last-Modified), that
range is fetched on its own first (If-Range: the same version) and written in place; the stream
writes the same bytes again when it gets there. Such a partial has holes, so it is no longer kept
for a resume (a crash would leave it to be continued from its size). Nothing fetched ahead is
written once the transfer stops (``stop_ahead``: landing, failed) or started over.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import trio

from .. import procfs
from ..errors import CallerInterrupted, Interrupted, Stalled, TransferFailed, WtfsError
from ..log import mask_credentials
from ..posix import pwrite_all
from ..providers import Sink
from .base import REQUESTER_POLL
from .partials import Partial

log = logging.getLogger(__name__)

#: A read starting this far past what the stream wrote is fetched on its own, first.
FAR_BYTES = 8 * 1024 * 1024
#: A far read fetches at least this much from its offset: its reader is likely to go on.
FAR_FETCH_BYTES = 4 * 1024 * 1024
#: Far fetches of one transfer at once; a far read beyond them waits for one to end, or the stream.
FAR_FETCHES = 2

#: Fetches bytes [start, end) of the source (of the given version) and gives them to a writer.
RangeFetcher = Callable[[int, int, str | None, Callable[[int, memoryview], None]], Awaitable[None]]


class Streamed:
    """One running transfer as its streaming readers see it."""

    def __init__(
        self, source: str, size: int | None, partial: Partial, stall_timeout: float, waiters: set[trio.CancelScope]
    ) -> None:
        self.source = source
        self.size = size
        self.partial = partial
        self.stall_timeout = stall_timeout
        self.sink: Sink | None = None
        self.ended = False
        self.error: WtfsError | None = None
        self.served = False
        self._waiters = waiters
        self._changed = trio.Event()
        self._done = 0
        #: how far reads are fetched ahead (None: this provider cannot), and what runs them
        self.fetch_range: RangeFetcher | None = None
        self.spawn: Callable[[Callable[[list[int]], Awaitable[None]], list[int]], None] | None = None
        self._fetched: list[tuple[int, int]] = []  # ranges written ahead of the stream
        self._fetching: list[list[int]] = []  # and those on their way: [start, written up to, end, generation]
        self._generation = 0  # of the file's bytes: a start-over makes every fetch on its way void
        self._stopped = False  # nothing fetched ahead is written any more

    @property
    def open(self) -> bool:
        """Whether a reader may still take a descriptor on the partial (the transfer runs)."""
        return not self.ended and self.partial.fd >= 0

    def progressed(self, done: int) -> None:
        """The sink wrote more (or started over: then bytes already served may be of another
        version of the source, and the file is failed for its streaming readers)."""
        if done < self._done:
            self._generation += 1  # the file was cut: what was fetched ahead went with it
            self._fetched.clear()
            if self.served:
                self.end(TransferFailed(f"{mask_credentials(self.source)}: the transfer started over after a read"))
        self._done = done
        if self._fetched and self.sink is not None and self.sink.parts is None:
            self._fetched = [(start, stop) for start, stop in self._fetched if stop > done]  # passed by the stream
        self._wake()

    def end(self, error: WtfsError | None) -> None:
        """The transfer ended: landed and verified (None) or failed, for good, for every reader."""
        if self.error is None and error is not None:
            self.error = error
            if self.served:
                said = "%s: bytes of it were read before it failed; its reads fail from now on: %s"
                log.error(said, self.source, error)
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def landed(self, offset: int, length: int) -> bool:
        """Whether [offset, offset+length) is written (clipped to the size, where known)."""
        sink = self.sink
        size = sink.expected_size if sink is not None and sink.expected_size is not None else self.size
        end = offset + length if size is None else min(offset + length, size)
        if end <= offset:
            return size is not None
        if sink is None:
            return False
        if any(start <= offset and end <= stop for start, stop in self._fetched):
            return True
        if any(start <= offset and end <= pos and gen == self._generation for start, pos, _, gen in self._fetching):
            return True
        if sink.parts is None:
            return end <= sink.offset
        pos = offset
        for part in sorted(sink.parts, key=lambda part: part.start):
            if part.start <= pos < part.pos:
                pos = part.pos
                if pos >= end:
                    return True
        return False

    async def ready(self, offset: int, length: int, requester: int) -> None:
        """Wait until [offset, offset+length) landed or the transfer ended; raise its failure.
        No progress for ``stall_timeout`` is a stall; a signal to ``requester`` ends the wait."""
        deadline = trio.current_time() + self.stall_timeout
        seen = self._done
        with trio.CancelScope() as scope:
            self._waiters.add(scope)
            try:
                while self.error is None and not self.ended and not self.landed(offset, length):
                    self._fetch_if_far(offset, length)  # again once a fetch slot is free
                    poll = trio.current_time() + (REQUESTER_POLL if requester else math.inf)
                    with trio.move_on_at(min(deadline, poll)):
                        await self._changed.wait()
                    if self._done != seen:
                        seen, deadline = self._done, trio.current_time() + self.stall_timeout
                    elif trio.current_time() >= deadline:
                        raise Stalled(f"{mask_credentials(self.source)}: no progress for {self.stall_timeout:g}s")
                    if requester and procfs.interrupted(requester):
                        raise CallerInterrupted(f"{mask_credentials(self.source)}: the reading process was interrupted")
            finally:
                self._waiters.discard(scope)
        if scope.cancelled_caught:
            raise Interrupted(f"{mask_credentials(self.source)}: wtfs is shutting down")
        if self.error is not None:
            raise self.error
        self.served = True

    def _fetch_if_far(self, offset: int, length: int) -> None:
        """Start fetching [offset, offset + at least FAR_FETCH_BYTES) on its own if the stream is
        far from it, none of it is on its way, a slot is free and its version is known."""
        sink = self.sink
        if self.fetch_range is None or self.spawn is None or sink is None or self.ended or self._stopped:
            return
        if sink.parts is not None or sink.validator is None or offset < sink.offset + FAR_BYTES:
            return
        if len(self._fetching) >= FAR_FETCHES or any(s <= offset < stop for s, _, stop, _ in self._fetching):
            return
        if self.landed(offset, length):
            return
        size = sink.expected_size if sink.expected_size is not None else self.size
        end = offset + max(length, FAR_FETCH_BYTES)
        end = end if size is None else min(end, size)
        if end > offset:
            self.partial.unkeep()  # before a byte past the prefix is written: holes are never resumed
            fetching = [offset, offset, end, self._generation]
            self._fetching.append(fetching)
            self.spawn(self._fetch, fetching)

    async def _fetch(self, fetching: list[int]) -> None:
        assert self.fetch_range is not None and self.sink is not None
        start, _, end, generation = fetching

        def write(position: int, data: memoryview) -> None:
            if generation != self._generation:
                raise Interrupted(f"{mask_credentials(self.source)}: the transfer started over")
            self._write_ahead(position, data)
            fetching[1] = position + len(data)
            self._wake()

        try:
            await self.fetch_range(start, end, self.sink.validator, write)
        except Exception as exc:  # whatever the failure, the reader waits for the stream instead
            if not self.ended and not self._stopped and generation == self._generation:
                said = "%s: fetching bytes %d-%d ahead failed (%s); reads there wait for the transfer"
                log.info(said, mask_credentials(self.source), start, end, exc)
                self.fetch_range = None
        else:
            if not self.ended and not self._stopped and generation == self._generation:
                self._fetched.append((start, end))
        finally:
            self._fetching.remove(fetching)
            self._wake()

    def _write_ahead(self, position: int, data: memoryview) -> None:
        """Bytes fetched ahead, written in place while the transfer runs (never after: its file
        may be closed or renamed into the cache by then)."""
        if self.ended or self._stopped or self.partial.fd < 0:
            raise Interrupted(f"{mask_credentials(self.source)}: the transfer ended")
        pwrite_all(self.partial.fd, data, position)

    def stop_ahead(self) -> None:
        """The stream is done (about to be checked and renamed into place) or failed: no byte
        fetched ahead is written from now on."""
        self._stopped = True
