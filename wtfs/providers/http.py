"""HTTP(S): streaming GET with status checks, retries with backoff and Range resume."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import httpcore
import httpx
import trio

from ..errors import AccessDenied, NotFound, TransferFailed, WtfsError
from ..objects import ObjectRef
from ..retry import Backoff
from .base import Sink

log = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


Headers = Callable[[], dict[str, str]]


class _Retry(Exception):
    """A temporary failure: try again after a backoff."""


#: httpcore reads the socket 64 KiB at a time; at 1 MiB a loopback GiB streams twice as fast
#: (measured by `make bench`). A private class attribute, so only set where it exists.
_SOCKET_READ_BYTES = 1024 * 1024


def _tune_httpcore() -> None:
    connection = getattr(getattr(httpcore, "_async", None), "http11", None)
    cls = getattr(connection, "AsyncHTTP11Connection", None)
    if cls is not None and hasattr(cls, "READ_NUM_BYTES"):
        cls.READ_NUM_BYTES = max(cls.READ_NUM_BYTES, _SOCKET_READ_BYTES)


def make_client(stall_timeout: float) -> httpx.AsyncClient:
    """One client per daemon: connection reuse; no read timeout (the stall watchdog owns that)."""
    _tune_httpcore()
    timeout = httpx.Timeout(connect=min(10.0, stall_timeout), read=None, write=30.0, pool=None)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=32)
    return httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=True)


def status_error(url: str, status: int) -> WtfsError | None:
    """The error a final (non-retryable) status means, or None for success/retryable."""
    if status in (401, 403):
        return AccessDenied(f"{url}: HTTP {status}")
    if status in (404, 410):
        return NotFound(f"{url}: HTTP {status}")
    if 400 <= status < 500:
        return TransferFailed(f"{url}: HTTP {status}")
    return None


class HttpProvider:
    """Fetches ``http(s)://`` sources. 5xx and dropped connections are retried; 4xx are not."""

    def __init__(self, client: httpx.AsyncClient, attempts: int = 5, backoff: float = 0.25) -> None:
        self.client = client
        self.retry = Backoff(backoff, maximum=5.0, attempts=attempts)

    async def fetch(self, obj: ObjectRef, sink: Sink, url: str | None = None, headers: Headers | None = None) -> None:
        """Fetch ``url`` (default: the object's source) with ``headers()`` on every attempt."""
        url = url or obj.source
        for attempt in self.retry.tries():
            if obj.size is not None and sink.offset >= obj.size > 0:
                return  # all there: never ask for a range past the end (Girder would resend it all)
            try:
                await self._attempt(url, sink, headers() if headers else {})
                return
            except (_Retry, httpx.TransportError) as exc:
                if attempt.last:
                    raise TransferFailed(f"{obj.source}: {_describe(exc)} after {attempt.number} attempts") from None
                log.info(
                    "%s: %s; retrying in %.2fs (attempt %d)", obj.source, _describe(exc), attempt.delay, attempt.number
                )
                await attempt.pause()

    async def _attempt(self, url: str, sink: Sink, extra: dict[str, str]) -> None:
        headers = {"Accept-Encoding": "identity", **extra}
        if sink.offset:
            headers["Range"] = f"bytes={sink.offset}-"
        async with self.client.stream("GET", url, headers=headers) as response:
            error = status_error(url, response.status_code)
            if error is not None:
                raise error
            if response.status_code >= 500:
                raise _Retry(f"HTTP {response.status_code}")
            if response.status_code == 416 and sink.offset:
                sink.reset()
                raise _Retry("HTTP 416 on resume")
            self._position(response, sink)
            async for chunk in response.aiter_raw():
                sink.write(chunk)

    @staticmethod
    def _position(response: httpx.Response, sink: Sink) -> None:
        """Line the sink up with what the server sends: a resumed range or the whole body."""
        length = response.headers.get("content-length")
        if response.status_code == 206:
            match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if not match or int(match.group(1)) != sink.offset:
                sink.reset()
                raise _Retry("server sent an unexpected range")
            if match.group(3) != "*":
                sink.expected_size = int(match.group(3))
            return
        if sink.offset:
            log.info("%s: server ignored Range; starting over", response.url)
            sink.reset()
        if length is not None and length.isdigit():
            sink.expected_size = int(length)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


async def probe_size(client: httpx.AsyncClient, url: str, timeout: float = 10.0) -> int | None:
    """HEAD for the size shown in stat before the first open; None when the server won't say."""
    with trio.move_on_after(timeout):
        try:
            response = await client.head(url, headers={"Accept-Encoding": "identity"})
        except httpx.HTTPError as exc:
            log.warning("%s: HEAD failed: %s", url, _describe(exc))
            return None
        length = response.headers.get("content-length")
        if response.status_code == 200 and length is not None and length.isdigit():
            return int(length)
        log.warning("%s: HEAD answered %d", url, response.status_code)
    return None
