"""What a trio nursery's exception group means to its caller: the one failure to report."""

from __future__ import annotations

import trio


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first failure in a nursery's group (nested ones searched) that is not a cancellation
    it caused; the group itself when there is none (cancel scopes catch a group of Cancelled)."""
    for exc in group.exceptions:
        found = first_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if not isinstance(found, trio.Cancelled | BaseExceptionGroup):
            return found
    return group


def sole(exc: BaseException) -> BaseException:
    """The one error inside nested nursery exception groups, if there is just one."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
