"""Calls run in a worker thread one at a time, in order, with as few trips to the thread as
possible: the calls that arrive while a trip is under way go together in the next one.

A trip (``trio.to_thread.run_sync``) costs 0.1-0.2 ms of CPU in thread wake-ups and GIL
handoffs, more than most of the records' calls it carries (an open of a small cold file made
five of them). Under load (a reader's lock and unlock, the read-ahead's claims and commits)
calls queue up while one trip runs, and the next trip takes them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import trio

T = TypeVar("T")


class _Call(Generic[T]):
    __slots__ = ("args", "error", "fn", "ran", "result", "turn")

    def __init__(self, fn: Callable[..., T], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.result: T | None = None
        self.error: BaseException | None = None
        self.ran = False
        self.turn = trio.Event()  # set when the call ran, or when its caller is to make the next trip


class OneThread:
    """Serialised calls to worker threads (never two at once), batched by trip."""

    def __init__(self) -> None:
        self._queue: list[_Call[Any]] = []
        self._busy = False
        # its own thread token: trio's default limiter (40, shared with every other worker
        # call) full of slow calls must not hold up locks and unlocks
        self._limiter = trio.CapacityLimiter(1)
        self.trips = 0  # made so far

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, after every call queued before it. Like
        ``trio.to_thread.run_sync``, not cancellable once asked: a cancellation is delivered at
        the caller's next checkpoint."""
        call: _Call[T] = _Call(fn, args)
        self._queue.append(call)
        with trio.CancelScope(shield=True):
            while not call.ran:
                if self._busy:
                    call.turn = trio.Event()
                    await call.turn.wait()
                else:
                    await self._trip()
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]

    async def _trip(self) -> None:
        self._busy = True
        self.trips += 1
        batch, self._queue = self._queue, []
        try:
            await trio.to_thread.run_sync(_run_all, batch, limiter=self._limiter)
        except BaseException as exc:  # no thread to run them in: each call fails with that
            for call in batch:
                if not call.ran:
                    call.error, call.ran = exc, True
        finally:
            self._busy = False
            for call in batch:
                call.turn.set()
            if self._queue:
                self._queue[0].turn.set()  # its caller makes the next trip


def _run_all(batch: list[_Call[Any]]) -> None:
    for call in batch:
        try:
            call.result = call.fn(*call.args)
        except BaseException as exc:  # the caller's, raised in its task
            call.error = exc
        call.ran = True
