"""Girder folders and items as catalog nodes, listed lazily and cached for ``metadata_ttl``.

A folder is a directory of its child folders then items (all of them: listings ask for
``limit=0``). A single-file item is a file named after the item, a multi-file item a directory
of its files, an empty item an empty file. Where the bytes come from follows the data-manager
reference: ``meta.phys_path`` with a scheme (that provider), without one (a local path), the
file's ``linkUrl``, else Girder's own download. A local ``phys_path`` is anyone's say who may edit
an item's metadata, so it is served only from beneath the spec's ``local_roots``, checked at
every open on its real path.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import cachetools
import trio

from ..config import local_path
from ..confine import confined
from ..errors import AccessDenied, NotFound
from ..objects import ObjectRef
from .girder_api import GirderApi
from .nodes import CatalogDir, CatalogFile, CatalogNode

log = logging.getLogger(__name__)

#: Sources of files Girder serves itself; the Girder provider downloads them with the token.
GIRDER_SCHEME = "girder"
#: ``phys_path`` schemes that name a file on this host.
LOCAL_SCHEMES = {"", "file", "local"}


@dataclass
class GirderContext:
    api: GirderApi
    ttl: float
    limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(16))
    listings: cachetools.TTLCache[str, dict[str, CatalogNode]] = field(init=False)
    nodes: dict[tuple[str, str], CatalogNode] = field(default_factory=dict)
    local_roots: tuple[str, ...] = ()  # where a local meta.phys_path may lie

    def __post_init__(self) -> None:
        self.listings = cachetools.TTLCache(maxsize=100_000, ttl=max(self.ttl, 1e-9))


def timestamp_ns(value: object) -> int:
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value).timestamp() * 1e9)
        except ValueError:
            pass
    return time.time_ns()


def safe_name(name: str) -> str:
    """A Girder name as one path component that cannot escape its directory."""
    cleaned = name.replace("/", "_").replace("\0", "_")
    if cleaned in {"", ".", ".."}:
        cleaned = f"_{cleaned}"
    if cleaned != name:
        log.warning("Girder name %r shown as %r", name, cleaned)
    return cleaned


def unique_names(entries: list[tuple[str, str, CatalogNode]]) -> dict[str, CatalogNode]:
    """Siblings with the same (safe) name get distinct, deterministic names: `name (id)`."""
    result: dict[str, CatalogNode] = {}
    seen: dict[str, int] = {}
    for name, _, _ in entries:
        seen[name] = seen.get(name, 0) + 1
    for name, object_id, node in sorted(entries, key=lambda e: (e[0], e[1])):
        if seen[name] > 1 and name in result:
            unique = f"{name} ({object_id})"
            log.warning("Girder siblings share the name %r: %s shown as %r", name, object_id, unique)
            name = unique
        node.name = name
        result[name] = node
    return result


@dataclass(frozen=True)
class LocalPhysPath:
    """A Girder item's local ``meta.phys_path``: served only while its real path lies beneath
    one of ``roots``, so item metadata cannot make the daemon read any file of the host."""

    item_id: str
    path: str
    roots: tuple[str, ...]
    size: int | None
    sha256: str | None

    def resolve(self) -> ObjectRef:
        real = confined(self.path, self.roots)
        if real is None:
            log.warning("Girder item %s: meta.phys_path is outside local_roots; open refused", self.item_id)
            raise AccessDenied(f"Girder item {self.item_id}: meta.phys_path is outside local_roots")
        return ObjectRef.for_source("file://" + real, self.size, self.sha256)

    def placeholder(self) -> ObjectRef:
        """What the catalog holds: the size shown. Never fetched: ``resolve`` decides each time."""
        return ObjectRef.for_source(f"{GIRDER_SCHEME}:item/{self.item_id}", self.size, self.sha256)


@dataclass(frozen=True)
class Denied:
    """An item this user may not read: shown, and every open answers EACCES."""

    item_id: str

    def resolve(self) -> ObjectRef:
        raise AccessDenied(f"Girder item {self.item_id}: access denied")


def _sha256(item: dict[str, Any], file: dict[str, Any] | None) -> str | None:
    checksum = (item.get("meta") or {}).get("checksum")
    return (checksum.get("sha256") if isinstance(checksum, dict) else None) or (file or {}).get("sha256")


def _phys_path(item: dict[str, Any]) -> tuple[str, int | None] | None:
    """``meta.phys_path`` and ``meta.size``, if the item has a phys_path."""
    meta = item.get("meta") or {}
    phys_path = meta.get("phys_path")
    if not isinstance(phys_path, str) or not phys_path:
        return None
    size = meta.get("size")
    return phys_path, size if isinstance(size, int) else None


def local_phys_path(item: dict[str, Any], roots: tuple[str, ...]) -> LocalPhysPath | None:
    """The item's phys_path where it names a file on this host (no scheme, file:// or local://)."""
    found = _phys_path(item)
    if found is None or urlsplit(found[0]).scheme.lower() not in LOCAL_SCHEMES:
        return None
    return LocalPhysPath(str(item["_id"]), local_path(found[0]), roots, found[1], _sha256(item, None))


def file_object(api: GirderApi, item: dict[str, Any], file: dict[str, Any] | None) -> ObjectRef:
    """Where the bytes come from; a local phys_path only through ``LocalPhysPath.resolve``."""
    local = local_phys_path(item, ())
    if local is not None:
        return local.placeholder()
    sha256 = _sha256(item, file)
    phys = _phys_path(item)
    if phys is not None:
        return ObjectRef.for_source(phys[0], phys[1], sha256)
    if file is None:
        return ObjectRef.for_source(f"{GIRDER_SCHEME}:empty", 0, None)
    if file.get("linkUrl"):
        return ObjectRef.for_source(str(file["linkUrl"]), file.get("size"), sha256)
    source = f"{GIRDER_SCHEME}:{api.api_url}/file/{file['_id']}"
    return ObjectRef.for_source(source, int(file.get("size") or 0), sha256)


class GirderFolder(CatalogDir):
    def __init__(self, name: str, doc: dict[str, Any], ctx: GirderContext) -> None:
        super().__init__(name, timestamp_ns(doc.get("updated")))
        self.id = str(doc["_id"])
        self.ctx = ctx

    async def children(self) -> dict[str, CatalogNode]:
        cached = self.ctx.listings.get(self.id) if self.ctx.ttl > 0 else None
        if cached is not None:
            return cached
        what = f"Girder folder {self.id}"
        folders = await self.ctx.api.list_all("folder", {"parentType": "folder", "parentId": self.id}, what)
        items = await self.ctx.api.list_all("item", {"folderId": self.id}, what)
        entries: list[tuple[str, str, CatalogNode]] = []
        for doc in folders:
            entries.append((safe_name(doc["name"]), str(doc["_id"]), folder_node(doc["name"], doc, self.ctx)))
        nodes: dict[str, CatalogNode] = {}

        async def resolve(doc: dict[str, Any]) -> None:
            async with self.ctx.limiter:
                nodes[str(doc["_id"])] = await item_node(doc["name"], doc, self.ctx)

        async with trio.open_nursery() as nursery:
            for doc in items:
                nursery.start_soon(resolve, doc)
        entries += [(safe_name(doc["name"]), str(doc["_id"]), nodes[str(doc["_id"])]) for doc in items]
        children = unique_names(entries)
        if self.ctx.ttl > 0:
            self.ctx.listings[self.id] = children
        return children


class GirderItemDir(CatalogDir):
    """A multi-file item: a directory of its files."""

    def __init__(self, name: str, item: dict[str, Any], files: list[dict[str, Any]], ctx: GirderContext) -> None:
        super().__init__(name, timestamp_ns(item.get("updated")))
        entries: list[tuple[str, str, CatalogNode]] = [
            (safe_name(f["name"]), str(f["_id"]), _file(f["name"], item, f, ctx)) for f in files
        ]
        self.entries = unique_names(entries)

    async def children(self) -> dict[str, CatalogNode]:
        return self.entries


def _stable(ctx: GirderContext, key: tuple[str, str], fresh: CatalogNode) -> CatalogNode:
    """Keep one node object per Girder object while it does not change, so inodes stay put."""
    old = ctx.nodes.get(key)
    if isinstance(old, CatalogFile) and isinstance(fresh, CatalogFile) and _same_source(old, fresh):
        old.mtime_ns = fresh.mtime_ns
        return old
    if isinstance(old, GirderFolder) and isinstance(fresh, GirderFolder):
        return old
    ctx.nodes[key] = fresh
    return fresh


def _same_source(old: CatalogFile, fresh: CatalogFile) -> bool:
    return old.obj == fresh.obj and old.resolver == fresh.resolver


def folder_node(name: str, doc: dict[str, Any], ctx: GirderContext) -> CatalogNode:
    return _stable(ctx, ("folder", str(doc["_id"])), GirderFolder(safe_name(name), doc, ctx))


def _file(name: str, item: dict[str, Any], file: dict[str, Any] | None, ctx: GirderContext) -> CatalogNode:
    """One file; its bytes from a local phys_path only through the ``local_roots`` check."""
    resolver = local_phys_path(item, ctx.local_roots)
    obj = resolver.placeholder() if resolver is not None else file_object(ctx.api, item, file)
    node = CatalogFile(safe_name(name), obj, timestamp_ns(item.get("updated")), resolver)
    return _stable(ctx, ("file", str((file or item)["_id"])), node)


async def item_node(name: str, item: dict[str, Any], ctx: GirderContext) -> CatalogNode:
    meta = item.get("meta") or {}
    if meta.get("phys_path"):
        if not isinstance(meta.get("size"), int):
            log.warning("item %s has meta.phys_path but no meta.size", item["_id"])
        return _file(name, item, None, ctx)  # one file per item, bytes from phys_path
    files = await ctx.api.list_all(f"item/{item['_id']}/files", {}, f"Girder item {item['_id']}")
    if len(files) == 1:
        return _file(name, item, files[0], ctx)
    if not files:
        return _file(name, item, None, ctx)
    return GirderItemDir(safe_name(name), item, files, ctx)


async def resolve_entry(ctx: GirderContext, name: str, item_id: str | None, folder_id: str | None) -> CatalogNode:
    """An ``itemId`` (an item or a folder, as in the reference's dataSet) or ``folderId`` entry."""
    if folder_id is not None:
        return folder_node(name, await ctx.api.get(f"folder/{folder_id}", what=f"Girder folder {folder_id}"), ctx)
    assert item_id is not None
    try:
        item = await ctx.api.get(f"item/{item_id}", what=f"Girder item {item_id}")
    except AccessDenied:
        # shown, but unreadable: open() answers EACCES, as for any file one may not read
        log.warning("Girder item %s: access denied; shown as an unreadable file", item_id)
        placeholder = ObjectRef.for_source(f"{GIRDER_SCHEME}:item/{item_id}", 0, None)
        return CatalogFile(safe_name(name), placeholder, 0, Denied(item_id))
    except NotFound as not_an_item:
        try:
            folder = await ctx.api.get(f"folder/{item_id}", what=f"Girder folder {item_id}")
        except NotFound:
            raise not_an_item from None
        return folder_node(name, folder, ctx)
    return await item_node(name, item, ctx)
