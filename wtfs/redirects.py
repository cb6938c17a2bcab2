"""Redirects that wtfs follows itself rather than leaving to httpx: on a hop to another origin
httpx drops only ``Authorization``, so a Girder token would reach the storage service (S3, a
link's host) that a download redirects to. Here such a hop keeps only the headers that say which
bytes are wanted."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from .errors import TransferFailed

#: Redirects followed for one GET, as httpx's default.
MAX_REDIRECTS = 20
#: Answers that are redirects to follow.
REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Headers kept on a hop to another origin: what they ask for, not who asks.
PORTABLE_HEADERS = frozenset({"accept-encoding", "range", "if-range"})


def target(status: int, headers: Mapping[str, str]) -> str | None:
    """Where a redirect points (None: not a redirect to follow)."""
    location = headers.get("location") if status in REDIRECTS else None
    return None if location is None else str(location)


def next_hop(url: str, location: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The next hop's URL and headers. A Location that is no URL is TransferFailed (its text is
    left out: it may carry a signature)."""
    try:
        here = httpx.URL(url)
        there = here.join(location)
    except (httpx.InvalidURL, ValueError):
        raise TransferFailed("redirected to an invalid URL") from None
    if not _same_origin(here, there):
        headers = {k: v for k, v in headers.items() if k.lower() in PORTABLE_HEADERS}
    return str(there), headers


def _same_origin(here: httpx.URL, there: httpx.URL) -> bool:
    """Same scheme, host and port; or an upgrade to https on the same host and default ports
    (which httpx also treats as the same server)."""
    if here.host != there.host:
        return False
    if (here.scheme, here.port) == (there.scheme, there.port):
        return True
    return here.scheme == "http" and there.scheme == "https" and here.port in (None, 80) and there.port in (None, 443)
