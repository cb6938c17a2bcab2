"""versions/ and runs/ of a WholeTale tale: the server owns them; these nodes map mount
operations onto its REST API (``/version``, ``/run``), contents through the DM listing."""

from __future__ import annotations

import os
import stat
import tempfile
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from ..catalog.girder import safe_name, timestamp_ns
from ..catalog.girder_api import GirderApi
from ..errors import NotFound, ReadOnly, TransferFailed
from .base import Attr, Caller, FdFile, Node, OpenFile, wants_write
from .control import GeneratedFile

LIVE = 0.0


class WtContext:
    def __init__(self, api: GirderApi, tale_id: str, scratch: Path) -> None:
        self.api = api
        self.tale_id = tale_id
        self.scratch = scratch

    async def listing(self, kind: str) -> list[dict[str, Any]]:
        """Every version or run of the tale (limit=0: Girder pages at 50), oldest first."""
        docs = await self.api.list_all(kind, {"taleId": self.tale_id}, f"{kind}s of tale {self.tale_id}")
        return sorted(docs, key=lambda d: (str(d.get("created")), str(d["_id"])))

    async def named(self, kind: str, name: str) -> dict[str, Any]:
        for doc in await self.listing(kind):
            if doc["name"] == name:
                return doc
        raise NotFound(f"no {kind} named {name!r}")


class WtCollection(Node):
    """versions/ or runs/: mkdir creates, mv renames, rmdir deletes, on the server."""

    def __init__(self, kind: str, ctx: WtContext) -> None:
        self.kind = kind
        self.ctx = ctx
        self.key = f"wt-{kind}s"

    async def attr(self) -> Attr:
        return Attr.directory(time.time_ns(), perm=0o755, ttl=LIVE)

    def _node(self, doc: dict[str, Any]) -> Node:
        if self.kind == "run":
            return WtRunDir(doc, self.ctx)
        return WtFolderNode(str(doc["_id"]), self.ctx, timestamp_ns(doc.get("updated")))

    async def lookup(self, name: str) -> Node:
        return self._node(await self.ctx.named(self.kind, name))

    async def listdir(self) -> list[tuple[str, Node]]:
        return [(str(d["name"]), self._node(d)) for d in await self.ctx.listing(self.kind)]

    async def mkdir(self, name: str, mode: int, caller: Caller) -> Node:
        api = self.ctx.api
        if self.kind == "version":  # a mkdir always makes a version
            doc = await api.call("POST", "version", {"taleId": self.ctx.tale_id, "name": name, "force": "true"})
        else:
            versions = await self.ctx.listing("version")
            if versions:
                version = versions[-1]
            else:
                version = await api.call("POST", "version", {"taleId": self.ctx.tale_id, "force": "true"})
            doc = await api.call("POST", "run", {"versionId": version["_id"], "name": name})
        return self._node(doc)

    async def rename(self, name: str, new_parent: Node, new_name: str, flags: int) -> tuple[Hashable, Hashable] | None:
        if new_parent is not self:
            raise ReadOnly(f"{self.kind}s can only be renamed within their directory")
        doc = await self.ctx.named(self.kind, name)
        await self.ctx.api.call("PUT", f"{self.kind}/{doc['_id']}", {"name": new_name}, f"{self.kind} {name}")
        return None

    async def rmdir(self, name: str) -> None:
        doc = await self.ctx.named(self.kind, name)
        await self.ctx.api.call("DELETE", f"{self.kind}/{doc['_id']}", what=f"{self.kind} {name}")


class WtFolderNode(Node):
    """A version's or run's folder, read-only, listed through ``/dm/fs/{id}/listing``."""

    def __init__(self, folder_id: str, ctx: WtContext, mtime_ns: int) -> None:
        self.folder_id = folder_id
        self.ctx = ctx
        self.mtime_ns = mtime_ns
        self.key = ("wt-folder", folder_id)

    async def attr(self) -> Attr:
        return Attr.directory(self.mtime_ns, ttl=LIVE)

    async def listdir(self) -> list[tuple[str, Node]]:
        listing = await self.ctx.api.get(f"dm/fs/{self.folder_id}/listing", what="listing")
        nodes: list[tuple[str, Node]] = []
        for doc in listing.get("folders", []):
            nodes.append(
                (safe_name(doc["name"]), WtFolderNode(str(doc["_id"]), self.ctx, timestamp_ns(doc.get("updated"))))
            )
        for doc in listing.get("files", []):
            nodes.append((safe_name(doc["name"]), WtItemFile(doc, self.ctx)))
        return sorted(nodes, key=lambda pair: pair[0])

    async def lookup(self, name: str) -> Node:
        for child_name, node in await self.listdir():
            if child_name == name:
                return node
        raise NotFound(name)


class WtItemFile(Node):
    def __init__(self, doc: dict[str, Any], ctx: WtContext) -> None:
        self.doc = doc
        self.ctx = ctx
        self.key = ("wt-item", str(doc["_id"]))

    async def attr(self) -> Attr:
        return Attr.file(int(self.doc.get("size") or 0), timestamp_ns(self.doc.get("updated")), ttl=LIVE)

    async def open(self, flags: int) -> OpenFile:
        """Version and run files are read whole from the server into an unlinked scratch file."""
        if wants_write(flags):
            raise ReadOnly("versions and runs are read-only here")
        api = self.ctx.api
        fd, path = tempfile.mkstemp(dir=self.ctx.scratch)
        os.unlink(path)
        try:
            url = f"{api.api_url}/item/{self.doc['_id']}/download"
            async with api.client.stream("GET", url, headers=api.headers()) as response:
                if response.status_code != 200:
                    raise TransferFailed(f"{self.doc['name']}: HTTP {response.status_code}")
                async for chunk in response.aiter_raw():
                    os.write(fd, chunk)
        except BaseException:
            os.close(fd)
            raise
        return FdFile(fd)


class WtRunDir(Node):
    def __init__(self, doc: dict[str, Any], ctx: WtContext) -> None:
        self.doc = doc
        self.ctx = ctx
        self.key = ("wt-run", str(doc["_id"]))

    async def attr(self) -> Attr:
        return Attr.directory(timestamp_ns(self.doc.get("created")), perm=0o755, ttl=LIVE)

    def _children(self) -> dict[str, Node]:
        run_id = str(self.doc["_id"])
        return {
            ".status": status_file(run_id, self.ctx),
            "version": WtVersionLink(str(self.doc.get("runVersionId")), run_id, self.ctx),
            "workspace": WtFolderNode(run_id, self.ctx, timestamp_ns(self.doc.get("updated"))),
        }

    async def lookup(self, name: str) -> Node:
        node = self._children().get(name)
        if node is None:
            raise NotFound(name)
        return node

    async def listdir(self) -> list[tuple[str, Node]]:
        return sorted(self._children().items())


def status_file(run_id: str, ctx: WtContext) -> GeneratedFile:
    """``"<code> <NAME>\\n"`` from ``GET /run/{id}/status`` on every read: never stale."""

    async def render() -> bytes:
        status = await ctx.api.get(f"run/{run_id}/status", what=f"run {run_id}")
        return f"{status['status']} {status['statusString']}\n".encode()

    return GeneratedFile(("wt-status", run_id), render)


class WtVersionLink(Node):
    def __init__(self, version_id: str, run_id: str, ctx: WtContext) -> None:
        self.version_id = version_id
        self.ctx = ctx
        self.key = ("wt-version-link", run_id)

    async def readlink(self) -> str:
        doc = await self.ctx.api.get(f"version/{self.version_id}", what=f"version {self.version_id}")
        return f"../../versions/{doc['name']}"

    async def attr(self) -> Attr:
        target = await self.readlink()
        now = time.time_ns()
        return Attr(stat.S_IFLNK | 0o777, len(target.encode()), now, now, now, 1, LIVE)
