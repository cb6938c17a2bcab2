"""The seam between the views and a data manager (embedded, or a WholeTale server)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from ..objects import ObjectRef

#: The process (thread id, as FUSE gives it) whose open is being served, set by the FUSE layer: a
#: lock waiting for a landing watches it and gives up when a signal would interrupt it. 0: nobody.
REQUESTER: ContextVar[int] = ContextVar("wtfs_requester", default=0)
#: How often a process waiting in open() or read() is looked at (a read of /proc/PID/status).
REQUESTER_POLL = 0.1


@contextlib.contextmanager
def requested_by(pid: int) -> Iterator[None]:
    """Serve a request of process ``pid`` (0 if FUSE could not name it) inside this block."""
    token = REQUESTER.set(pid)
    try:
        yield
    finally:
        REQUESTER.reset(token)


class Streaming(Protocol):
    """A transfer still running, as a streaming reader sees it (``stream``)."""

    async def ready(self, offset: int, length: int, requester: int) -> None:
        """Return once [offset, offset+length) is written (or the transfer ended); raise the
        transfer's failure, also after bytes were served (the reads of it fail from then on)."""
        ...


@dataclass(frozen=True)
class Lock:
    """A held lock: while it exists, ``path`` is a complete cached copy that is never evicted;
    or, with ``stream``, the copy still being written, whose bytes are read only once ready."""

    id: str
    obj: ObjectRef
    path: str
    stream: Streaming | None = None
    #: a descriptor of ``path`` opened for reading, the lock's until it is released (-1: none): the
    #: view duplicates it rather than opening the path again in a worker thread
    fd: int = -1


class DataManager(Protocol):
    async def lock(self, obj: ObjectRef, owner: str) -> Lock:
        """Lock ``obj`` and return once its cached copy has landed."""
        ...

    async def unlock(self, lock: Lock) -> None: ...

    def prefetch(self, obj: ObjectRef) -> None:
        """Start fetching ``obj`` without locking it; returns at once."""
        ...

    async def state(self, obj: ObjectRef) -> str:
        """``cached``, ``transferring N%`` or ``remote``."""
        ...

    async def report(self) -> dict[str, Any]:
        """The status report (``.wtfs/status.json``)."""
        ...

    def interrupt(self) -> None:
        """Shutting down: every waiting ``lock`` call fails with Interrupted at once."""
        ...


class StreamingDataManager(DataManager, Protocol):
    async def lock_streaming(self, obj: ObjectRef, owner: str) -> Lock:
        """Lock ``obj`` and return once its transfer started (``Lock.stream`` set) or it landed."""
        ...


class SessionDataManager(DataManager, Protocol):
    """A data manager the daemon runs: started in its nursery, stopped at unmount."""

    async def start(self, nursery: trio.Nursery) -> None: ...

    async def stop(self) -> None:
        """Release every lock this mount holds and finish its records."""
        ...
