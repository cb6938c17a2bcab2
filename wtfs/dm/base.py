"""The seam between the views and a data manager (embedded, or a WholeTale server)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import trio

from ..objects import ObjectRef


@dataclass(frozen=True)
class Lock:
    """A held lock: while it exists, ``path`` is a complete cached copy that is never evicted."""

    id: str
    obj: ObjectRef
    path: str


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


class SessionDataManager(DataManager, Protocol):
    """A data manager the daemon runs: started in its nursery, stopped at unmount."""

    async def start(self, nursery: trio.Nursery) -> None: ...

    async def stop(self) -> None:
        """Release every lock this mount holds and finish its records."""
        ...
