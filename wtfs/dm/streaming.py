"""Reading a copy before it lands (``stream``): which bytes of a transfer's partial a reader may
see, and waiting for the rest.

A read waits until its range is written (or the transfer ended), never for the whole copy: with
one stream the written bytes are the prefix the sink has reached; with parallel ranged streams,
the ranges' written heads. A transfer that fails after bytes were served (a sha256 mismatch found
at landing) fails every later read of it: the bytes already read were never verified.
"""

from __future__ import annotations

import logging
import math

import trio

from .. import procfs
from ..errors import CallerInterrupted, Interrupted, Stalled, TransferFailed, WtfsError
from ..log import mask_credentials
from ..providers import Sink
from .partials import Partial

log = logging.getLogger(__name__)

#: How often a process waiting in read() is looked at for signals.
REQUESTER_POLL = 0.1


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

    @property
    def open(self) -> bool:
        """Whether a reader may still take a descriptor on the partial (the transfer runs)."""
        return not self.ended and self.partial.fd >= 0

    def progressed(self, done: int) -> None:
        """The sink wrote more (or started over: then bytes already served may be of another
        version of the source, and the file is failed for its streaming readers)."""
        if done < self._done and self.served:
            self.end(TransferFailed(f"{mask_credentials(self.source)}: the transfer started over after a read"))
        self._done = done
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
