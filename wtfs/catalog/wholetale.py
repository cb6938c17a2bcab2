"""data/ of a WholeTale session: mount points from ``GET /dm/session/{id}?loadObjects=true``,
folders from ``GET /dm/fs/{id}/listing``. The data manager's one-file-per-item model: an item
is a file of the item's size. And the one streaming download of a file's bytes from the server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import PurePosixPath
from typing import Any

import cachetools
import httpx

from .. import redirects
from ..config import normalize_mount_path
from ..errors import TransferFailed
from ..objects import ObjectRef
from .build import place
from .girder import safe_name, timestamp_ns, unique_names
from .girder_api import GirderApi, Unreachable, path_id
from .nodes import CatalogDir, CatalogFile, CatalogNode, StaticDir

WT_SCHEME = "wt"
#: Why Girder 5.0.21 answers 500 to item and file downloads of some Latin-1 names
DISPOSITION = "a UnicodeDecodeError in its Content-Disposition header"
#: A file of a tale's workspace in the host cache: ``wtws:<item id>`` (downloaded by item).
WS_SCHEME = "wtws"


def item_file(item: dict[str, Any]) -> CatalogFile:
    meta_size = (item.get("meta") or {}).get("size")  # phys_path items carry their size in meta
    size = int(item.get("size") or 0) or (int(meta_size) if isinstance(meta_size, int) else 0)
    # keyed like every other object: a changed item (a new ``updated``) is a new copy
    obj = ObjectRef.for_source(f"{WT_SCHEME}:{item['_id']}", size, None, str(item.get("updated") or ""))
    return CatalogFile(safe_name(item["name"]), obj, timestamp_ns(item.get("updated")))


class WtFolder(CatalogDir):
    def __init__(self, name: str, doc: dict[str, Any], api: GirderApi, listings: cachetools.TTLCache[str, Any]) -> None:
        super().__init__(name, timestamp_ns(doc.get("updated")))
        self.id = str(doc["_id"])
        self.api = api
        self.listings = listings
        self.last: dict[str, CatalogNode] | None = None

    async def children(self) -> dict[str, CatalogNode]:
        cached = self.listings.get(self.id)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        try:
            listing = await self.api.get(f"dm/fs/{path_id(self.id)}/listing", what=f"folder {self.id}")
        except Unreachable:
            if self.last is None:
                raise
            return self.last  # the last known listing (the outage is logged once by the API)
        entries: list[tuple[str, str, CatalogNode]] = []
        for doc in listing.get("folders", []):
            entries.append(
                (safe_name(doc["name"]), str(doc["_id"]), WtFolder(doc["name"], doc, self.api, self.listings))
            )
        for doc in listing.get("files", []):
            entries.append((safe_name(doc["name"]), str(doc["_id"]), item_file(doc)))
        children = unique_names(entries)
        self.listings[self.id] = self.last = children
        return children


def session_tree(session: dict[str, Any], api: GirderApi, ttl: float) -> StaticDir:
    """The session's dataSet, each object at its mountPath."""
    root = StaticDir("")
    listings: cachetools.TTLCache[str, Any] = cachetools.TTLCache(maxsize=100_000, ttl=max(ttl, 1e-9))
    for entry in session.get("dataSet", []):
        mount_path = normalize_mount_path(str(entry.get("mountPath", "")))
        if mount_path is None:
            continue  # the server accepted a mountPath we cannot place safely
        name = PurePosixPath(mount_path).name
        obj = entry.get("obj") or {"_id": entry["itemId"], "name": name}
        node: CatalogNode = WtFolder(name, obj, api, listings) if entry.get("type") == "folder" else item_file(obj)
        node.name = name
        place(root, mount_path, node)
    return root


async def download(
    api: GirderApi,
    path: str,
    write: Callable[[bytes], None],
    what: str,
    then: Callable[[bytes], Awaitable[None]] | None = None,
) -> None:
    """Stream ``GET path`` into ``write`` as it arrives (and ``then``, which may wait), in one
    plain stream: the server's downloads (``dm/lock/{id}/download``, ``item/{id}/download``) may
    ignore Range and send no Content-Length, so there is nothing to resume. Any failure is
    TransferFailed (EIO)."""
    url, headers = f"{api.api_url}/{path}", api.headers()
    try:
        for _ in range(redirects.MAX_REDIRECTS + 1):  # followed here: a token stays with Girder
            stream = api.client.stream("GET", url, headers=headers, timeout=api.timeout, follow_redirects=False)
            async with stream as response:
                location = redirects.target(response.status_code, response.headers)
                if location is None:
                    return await _body(response, write, what, then)
            url, headers = redirects.next_hop(url, location, headers)
    except httpx.HTTPError as exc:
        raise TransferFailed(f"{what}: {type(exc).__name__}") from None
    raise TransferFailed(f"{what}: more than {redirects.MAX_REDIRECTS} redirects")


async def _body(
    response: httpx.Response,
    write: Callable[[bytes], None],
    what: str,
    then: Callable[[bytes], Awaitable[None]] | None,
) -> None:
    if response.status_code == 500:  # the one log line of the failed transfer says why
        raise TransferFailed(f"{what}: HTTP 500 (Girder 5.0.21 fails on names like 'ø': {DISPOSITION})")
    if response.status_code != 200:
        raise TransferFailed(f"{what}: HTTP {response.status_code}")
    async for chunk in response.aiter_raw():
        write(chunk)
        if then is not None:
            await then(chunk)
