"""HTTP(S): streaming GET with status checks, retries with backoff and Range resume."""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from email.utils import parsedate_to_datetime
from functools import partial
from typing import NamedTuple, Protocol

import httpcore
import httpx
import trio

from .. import redirects
from ..errors import AccessDenied, NotFound, TransferFailed, WtfsError
from ..groups import first_error
from ..objects import ObjectRef
from ..retry import Backoff
from .base import Part, Sink

log = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


Headers = Callable[[], dict[str, str]]


class _Retry(Exception):
    """A temporary failure: try again after a backoff, or after ``after`` seconds if the server
    said when (Retry-After)."""

    def __init__(self, message: str, after: float | None = None) -> None:
        super().__init__(message)
        self.after = after


#: Statuses that mean "later" rather than "never"; their Retry-After is honoured.
_BUSY = (429, 503)
#: What ``_retrying`` tries again: httpx's transport errors and httpcore's (a GET sent to httpcore
#: directly, ``_direct_pool``).
_TRANSPORT_ERRORS = (
    httpx.TransportError,
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
)
#: A URL sent as written: only the characters a request line may carry (RFC 3986), no fragment.
#: Anything else (a space, non-ASCII) goes through httpx, which encodes it.
_PLAIN_URL = re.compile(r"[A-Za-z0-9\-._~:/?\[\]@!$&'()*+,;=%]+")
#: Objects smaller than this take one stream whatever ``streams`` says: set-up would cost more.
PARALLEL_MIN_BYTES = 8 * 1024 * 1024


class _NoRanges(Exception):
    """The server will not serve ranges of this source (or it changed): one stream instead."""


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


def _direct_pool(client: httpx.AsyncClient) -> httpcore.AsyncConnectionPool | None:
    """The httpcore pool under ``client``, when nothing stands between them: no proxy, no custom
    transport, no auth, no event hooks (else None: every GET goes through httpx). A whole-object
    GET goes to it directly, on the same connections: httpx's layers over it (request building,
    cookies, auth and redirect handling, stream wrappers) cost a third of the CPU of a small GET.
    The attributes are httpx's private ones, looked up defensively: without them, httpx it is."""
    transport = getattr(client, "_transport", None)
    pool = getattr(transport, "_pool", None)
    hooks = getattr(client, "event_hooks", {})
    if getattr(client, "_mounts", True) or client.auth is not None or any(hooks.values()):
        return None
    if type(transport) is not httpx.AsyncHTTPTransport or not isinstance(pool, httpcore.AsyncConnectionPool):
        return None
    return pool


class _Answer(Protocol):
    """What a GET's answer gives ``_attempt``: an httpx response, or ``_DirectAnswer``."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> httpx.Headers: ...

    @property
    def url(self) -> object: ...

    def aiter_raw(self) -> AsyncIterable[bytes]: ...


class _DirectAnswer(NamedTuple):
    status_code: int
    headers: httpx.Headers
    url: str
    stream: AsyncIterable[bytes]

    def aiter_raw(self) -> AsyncIterable[bytes]:
        return self.stream


#: (host, port, Host header) of a URL's netloc, for a request sent to the pool directly.
_Origin = tuple[bytes, int | None, tuple[bytes, bytes]]


def _origin(scheme: str, netloc: str) -> _Origin | tuple[()]:
    """What a direct request to ``netloc`` needs, or () where httpx must send it (credentials in
    the URL, a query with no path, a netloc that does not parse)."""
    if "@" in netloc or "?" in netloc or not netloc:
        return ()
    try:
        parsed = httpx.URL(f"{scheme}://{netloc}/")
    except (httpx.InvalidURL, ValueError):
        return ()
    if not parsed.host:
        return ()
    return parsed.raw_host, parsed.port, (b"Host", parsed.netloc)  # the Host header httpx would send


def status_error(url: str, status: int) -> WtfsError | None:
    """The error a final (non-retryable) status means, or None for success/retryable."""
    if status in (401, 403):
        return AccessDenied(f"{url}: HTTP {status}")
    if status in (404, 410):
        return NotFound(f"{url}: HTTP {status}")
    if 300 <= status < 500:  # a redirect that reaches here was not followed: its body is not the file
        return TransferFailed(f"{url}: HTTP {status}")
    return None


class HttpProvider:
    """Fetches ``http(s)://`` sources. 5xx, 429 and dropped connections are retried; other 4xx
    are not. A partial is resumed with Range, guarded by If-Range with the validator (ETag or
    Last-Modified) its bytes came with; a server's Retry-After is honoured up to ``stall_timeout``.
    With ``streams`` > 1 a large object whose size is known comes in that many ranges at once,
    each written in place and retried (resumed) on its own."""

    resumes = True

    def __init__(
        self,
        client: httpx.AsyncClient,
        attempts: int = 5,
        backoff: float = 0.25,
        stall_timeout: float = 30.0,
        streams: int = 1,
    ) -> None:
        self.client = client
        self._pool = _direct_pool(client)
        self._timeouts = {"timeout": client.timeout.as_dict()}
        self._base_headers = list(client.headers.raw)
        self._base_for: dict[frozenset[bytes], list[tuple[bytes, bytes]]] = {}  # by the header names given
        self._origins: dict[
            tuple[str, str], _Origin | tuple[()]
        ] = {}  # by scheme and netloc; () where httpx must send it
        self.retry = Backoff(backoff, maximum=5.0, attempts=attempts)
        self.stall_timeout = stall_timeout
        self.streams = streams

    async def fetch(self, obj: ObjectRef, sink: Sink, url: str | None = None, headers: Headers | None = None) -> None:
        """Fetch ``url`` (default: the object's source) with ``headers()`` on every attempt."""
        url = url or obj.source
        extra = headers or dict
        ranged = self.streams > 1 and sink.offset == 0 and (obj.size or 0) >= PARALLEL_MIN_BYTES
        if sink.parts is not None or ranged:
            try:
                await self._parallel(obj, sink, url, extra)
                return
            except _NoRanges as exc:
                log.info("%s: %s; one stream instead", obj.source, exc)
                sink.reset()

        def complete() -> bool:  # never ask for a range past the end (Girder would resend it all)
            return obj.size is not None and sink.offset >= obj.size > 0

        await self._retrying(obj, sink, lambda: self._attempt(url, sink, extra()), complete)

    async def _parallel(self, obj: ObjectRef, sink: Sink, url: str, extra: Headers) -> None:
        """Every part at once, each with its own retries; the first error ends them all."""
        if sink.parts is None:
            assert obj.size is not None
            sink.begin_parts(split(obj.size, self.streams))
        parts = sink.parts
        assert parts is not None
        try:
            async with trio.open_nursery() as nursery:
                for part in parts:
                    attempt = partial(self._part_attempt, url, sink, part, extra)
                    nursery.start_soon(self._retrying, obj, sink, attempt, lambda part=part: part.left == 0)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        sink.expected_size = parts[-1].end

    async def _retrying(
        self, obj: ObjectRef, sink: Sink, attempt_once: Callable[[], Awaitable[None]], complete: Callable[[], bool]
    ) -> None:
        """Attempts until ``complete``: transport errors and 5xx after a backoff, 429/503 after
        their Retry-After (failing at once if that is beyond ``stall_timeout``)."""
        for attempt in self.retry.tries():
            if complete():
                return
            try:
                await attempt_once()
                return
            except (_Retry, *_TRANSPORT_ERRORS) as exc:
                if attempt.last:
                    raise TransferFailed(f"{obj.source}: {_describe(exc)} after {attempt.number} attempts") from None
                after = exc.after if isinstance(exc, _Retry) else None
                if after is not None and after > self.stall_timeout:
                    raise TransferFailed(
                        f"{obj.source}: {_describe(exc)}; the server asks to retry in {after:g}s,"
                        f" beyond stall_timeout ({self.stall_timeout:g}s)"
                    ) from None
                delay = attempt.delay if after is None else after
                log.info("%s: %s; retrying in %.2fs (attempt %d)", obj.source, _describe(exc), delay, attempt.number)
                if after is None:
                    await attempt.pause()
                else:
                    sink.alive()  # the server answered: waiting as told is not a stall
                    await trio.sleep(after)
                    sink.alive()

    async def _attempt(self, url: str, sink: Sink, extra: dict[str, str]) -> None:
        headers = {"Accept-Encoding": "identity", **extra}
        if sink.offset:
            headers["Range"] = f"bytes={sink.offset}-"
            if sink.validator is not None:
                headers["If-Range"] = sink.validator  # a changed source sends it all (200)
        async with self._get(url, headers) as response:
            status = response.status_code
            if status == 416 and sink.offset:
                sink.reset()
                raise _Retry("HTTP 416 on resume")
            _check_status(url, response)
            self._position(response, sink)
            sink.validated(validator(response.headers))
            async for chunk in response.aiter_raw():
                sink.write(chunk)

    @contextlib.asynccontextmanager
    async def _get(self, url: str, headers: dict[str, str]) -> AsyncIterator[_Answer]:
        """GET ``url``: sent to the connection pool directly where it may be (a plain URL, no
        proxy, no cookies; see ``_direct_pool``), through httpx otherwise. Redirects are
        followed here, each asked once; a hop to another origin drops the caller's headers (a
        Girder token must not reach a storage service), as httpx does only for Authorization."""
        for _ in range(redirects.MAX_REDIRECTS + 1):
            location = None
            request = self._direct_request(url, headers)
            if request is not None:
                assert self._pool is not None
                response = await self._pool.handle_async_request(request)
                try:
                    answer: _Answer = _DirectAnswer(
                        response.status,
                        httpx.Headers(response.headers),
                        url,
                        response.stream,  # type: ignore[arg-type]
                    )
                    location = redirects.target(answer.status_code, answer.headers)
                    if location is None:
                        yield answer
                        return
                finally:
                    await response.aclose()
            else:
                async with self.client.stream("GET", url, headers=headers, follow_redirects=False) as plain:
                    location = redirects.target(plain.status_code, plain.headers)
                    if location is None:
                        yield plain
                        return
            url, headers = redirects.next_hop(url, location, headers)
        raise TransferFailed(f"more than {redirects.MAX_REDIRECTS} redirects")

    def _direct_request(self, url: str, headers: dict[str, str]) -> httpcore.Request | None:
        """The request to send to the pool directly, or None: httpx sends it (no pool to use, a
        URL with credentials, a fragment, a space or other characters to encode, dot segments to
        remove, cookies to send, a scheme other than http(s))."""
        if self._pool is None or not _PLAIN_URL.fullmatch(url) or "/." in url or self.client.cookies:
            return None
        scheme, _, rest = url.partition("://")
        netloc, _, path = rest.partition("/")
        origin = self._origins.get((scheme, netloc)) if scheme in ("http", "https") else None
        if origin is None and scheme in ("http", "https"):
            origin = self._origins[scheme, netloc] = _origin(scheme, netloc)
        if not origin:
            return None
        ours = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        given = frozenset(name for name, _ in ours)
        base = self._base_for.get(given)
        if base is None:
            base = self._base_for[given] = [(k, v) for k, v in self._base_headers if k.lower() not in given]
        host, port, host_header = origin
        target = f"/{path}".encode()
        request_url = httpcore.URL(scheme=scheme.encode(), host=host, port=port, target=target)
        return httpcore.Request(b"GET", request_url, headers=[host_header, *base, *ours], extensions=self._timeouts)

    async def _part_attempt(self, url: str, sink: Sink, part: Part, extra: Headers) -> None:
        """One request for what is left of ``part``; any answer but that range means no ranges."""
        headers = {"Accept-Encoding": "identity", "Range": f"bytes={part.pos}-{part.end - 1}", **extra()}
        if sink.validator is not None:
            headers["If-Range"] = sink.validator
        async with self._get(url, headers) as response:
            _check_status(url, response)
            match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if response.status_code != 206 or not match or int(match.group(1)) != part.pos:
                raise _NoRanges(f"HTTP {response.status_code} to a range request")
            found = validator(response.headers)
            if sink.validator is None:
                sink.validated(found)
            elif found != sink.validator:
                raise _NoRanges("the source changed during the transfer")
            async for chunk in response.aiter_raw():
                sink.write_at(part, chunk)
                if not part.left:
                    break

    async def fetch_range(
        self,
        obj: ObjectRef,
        start: int,
        end: int,
        validator: str | None,
        write: Callable[[int, memoryview], None],
        url: str | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Give bytes [start, end) of the source to ``write`` (position, bytes): a far read of a
        copy being streamed, fetched ahead of the transfer. Only a 206 of that very range of the
        same version (If-Range) will do; anything else is a TransferFailed, and the reader waits
        for the transfer instead."""
        url = url or obj.source
        wanted = {"Accept-Encoding": "identity", "Range": f"bytes={start}-{end - 1}", **(headers or dict)()}
        if validator is not None:
            wanted["If-Range"] = validator
        pos = start
        async with self._get(url, wanted) as response:
            _check_status(url, response)
            match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if response.status_code != 206 or not match or int(match.group(1)) != start:
                raise TransferFailed(f"{obj.source}: HTTP {response.status_code} to a range request")
            async for chunk in response.aiter_raw():
                piece = memoryview(chunk)[: end - pos]
                write(pos, piece)
                pos += len(piece)
                if pos >= end:
                    break
        if pos < end:
            raise TransferFailed(f"{obj.source}: the range ended at byte {pos} of {end}")

    @staticmethod
    def _position(response: _Answer, sink: Sink) -> None:
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


def _check_status(url: str, response: _Answer) -> None:
    """Raise what a status other than 200/206 means: a retry (5xx, 429), or a final error."""
    status = response.status_code
    if status in _BUSY:
        raise _Retry(f"HTTP {status}", retry_after(response.headers.get("retry-after")))
    error = status_error(url, status)
    if error is not None:
        raise error
    if status >= 500:
        raise _Retry(f"HTTP {status}")


def split(size: int, streams: int) -> list[Part]:
    """``size`` bytes in ``streams`` ranges of (nearly) equal length."""
    bounds = [size * i // streams for i in range(streams + 1)]
    return [Part(start, start, end, start) for start, end in itertools.pairwise(bounds) if end > start]


def validator(headers: httpx.Headers) -> str | None:
    """What names this version of a resource for If-Range: a strong ETag, else Last-Modified."""
    etag = headers.get("etag")
    if etag and not etag.startswith("W/"):
        return str(etag)
    modified = headers.get("last-modified")
    return str(modified) if modified else None


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def last_modified_ns(value: str | None) -> int | None:
    """A Last-Modified header as nanoseconds since the epoch; None if absent or unreadable."""
    if not value:
        return None
    try:
        return int(parsedate_to_datetime(value).timestamp()) * 1_000_000_000
    except (TypeError, ValueError):
        return None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


class Head(NamedTuple):
    """What a HEAD told about a resource before its first open (None: the server did not say)."""

    size: int | None = None
    mtime_ns: int | None = None
    #: why the server told nothing (``HEAD answered 404``), said at mount for the entry
    problem: str | None = None


async def probe(client: httpx.AsyncClient, url: str, timeout: float = 10.0) -> Head:
    """HEAD for the size and mtime (Last-Modified) shown in stat before the first open."""
    with trio.move_on_after(timeout):
        try:
            response = await client.head(url, headers={"Accept-Encoding": "identity"})
        except httpx.HTTPError as exc:
            log.warning("%s: HEAD failed: %s", url, _describe(exc))
            return Head(problem=f"HEAD failed: {_describe(exc)}")
        if response.status_code != 200:
            log.warning("%s: HEAD answered %d", url, response.status_code)
            return Head(problem=f"HEAD answered {response.status_code} {response.reason_phrase}".rstrip())
        length = response.headers.get("content-length")
        size = int(length) if length is not None and length.isdigit() else None
        return Head(size, last_modified_ns(response.headers.get("last-modified")))
    return Head(problem=f"HEAD got no answer within {timeout:g}s")
