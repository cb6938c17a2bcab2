"""The one backoff policy: pauses that grow by a factor up to a maximum, optionally bounded.

Retries of a failed call and polls of a slow one differ only in their numbers, so every such
loop iterates a ``Backoff``; what counts as a failure and what to say about it stays with the
caller.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import trio


@dataclass(frozen=True)
class Attempt:
    """One try: its number (from 1), the pause before the next, and whether it is the last."""

    number: int
    delay: float
    last: bool

    async def pause(self) -> None:
        """Wait before the next try (a trio checkpoint, so cancellation ends a poll here)."""
        await trio.sleep(self.delay)


@dataclass(frozen=True)
class Backoff:
    """Start at ``initial``, multiply by ``factor``, never above ``maximum``; ``attempts`` tries, or unbounded."""

    initial: float
    factor: float = 2.0
    maximum: float = math.inf
    attempts: int | None = None

    def tries(self) -> Iterator[Attempt]:
        """Every try allowed; the caller ``pause()``s between them and stops when it succeeds."""
        delay = self.initial
        for number in itertools.count(1):
            last = number == self.attempts
            yield Attempt(number, delay, last)
            if last:
                return
            delay = min(delay * self.factor, self.maximum)
