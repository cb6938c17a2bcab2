"""The one errno boundary: every FUSE handler goes through it.

A WtfsError becomes its errno, an OSError its own errno, anything else EIO with a logged
traceback. Nothing escapes into pyfuse3, where an exception would take the mount down.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from ..errors import WtfsError

log = logging.getLogger("wtfs.fs")
P = ParamSpec("P")
R = TypeVar("R")


def errno_boundary(handler: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except WtfsError as exc:
            log.debug("%s: %s (errno %d)", handler.__name__, exc, exc.errno)
            raise pyfuse3.FUSEError(exc.errno) from None
        except OSError as exc:
            log.debug("%s: %s", handler.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper
