"""versions/ and runs/ of a WholeTale tale: the server keeps them, and every REST call about
them is made here (``/version``, ``/run``, ``/dm/fs/{id}/listing``, ``/item/{id}/download``).

Nothing is cached: other clients of the server create, rename and delete too.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..catalog.girder import safe_name, timestamp_ns
from ..catalog.girder_api import GirderApi, path_id
from ..catalog.wholetale import download
from ..errors import NotFound
from ..providers.base import Sink
from .repos import Entry, RemoteEntry, RemoteTree


class Tale:
    """One tale on one server; also the source of its versions' and runs' folders."""

    def __init__(self, api: GirderApi, tale_id: str, scratch: Path) -> None:
        self.api = api
        self.tale_id = tale_id
        self.scratch = scratch  # downloads land here, unlinked at once

    async def docs(self, kind: str) -> list[dict[str, Any]]:
        """Every version or run of the tale (limit=0: Girder pages at 50), oldest first."""
        docs = await self.api.list_all(kind, {"taleId": self.tale_id}, f"{kind}s of tale {self.tale_id}")
        return sorted(docs, key=lambda d: (str(d.get("created")), str(d["_id"])))

    async def named(self, kind: str, name: str) -> dict[str, Any]:
        for doc in await self.docs(kind):
            if doc["name"] == name:
                return doc
        raise NotFound(f"no {kind} named {name!r}")

    async def listing(self, folder_id: str) -> list[RemoteEntry]:
        listing = await self.api.get(f"dm/fs/{path_id(folder_id)}/listing", what="listing")
        folders = [_remote(doc, True) for doc in listing.get("folders", [])]
        return folders + [_remote(doc, False) for doc in listing.get("files", [])]

    async def fetch(self, item_id: str, what: str) -> int:
        """The item read whole into an unlinked scratch file: nothing is left if we die."""
        fd = _anonymous_file(self.scratch)
        try:
            await download(self.api, f"item/{path_id(item_id)}/download", Sink(fd, lambda n: None).write, what)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def tree(self, doc: dict[str, Any]) -> RemoteTree:
        return RemoteTree(self, str(doc["_id"]), timestamp_ns(doc.get("updated")))


def _remote(doc: dict[str, Any], is_dir: bool) -> RemoteEntry:
    size = 0 if is_dir else int(doc.get("size") or 0)
    return RemoteEntry(str(doc["_id"]), safe_name(doc["name"]), is_dir, size, timestamp_ns(doc.get("updated")))


class _TaleRepo:
    """What versions and runs share on the server: listed per tale, renamed and deleted by id."""

    kind = ""

    def __init__(self, tale: Tale) -> None:
        self.tale = tale
        self.api = tale.api

    def entry(self, doc: dict[str, Any]) -> Entry:
        return Entry(str(doc["_id"]), str(doc["name"]), timestamp_ns(doc.get("created")), self.tale.tree(doc))

    async def all(self) -> list[Entry]:
        return [self.entry(doc) for doc in await self.tale.docs(self.kind)]

    async def get(self, name: str) -> Entry:
        return self.entry(await self.tale.named(self.kind, name))

    async def rename(self, old: str, new: str) -> None:
        doc = await self.tale.named(self.kind, old)
        await self.api.call("PUT", f"{self.kind}/{doc['_id']}", {"name": new}, f"{self.kind} {old}")

    async def delete(self, name: str) -> None:
        """The server answers 461 (Busy) for a version a run uses."""
        doc = await self.tale.named(self.kind, name)
        await self.api.call("DELETE", f"{self.kind}/{doc['_id']}", what=f"{self.kind} {name}")


class TaleVersions(_TaleRepo):
    kind = "version"
    #: waits (bounded) for the workspace's pending uploads: a version holds what was written
    before_create: Callable[[], Awaitable[object]] | None = None

    async def create(self, name: str) -> Entry:
        """force: a mkdir always makes a version, changed or not."""
        if self.before_create is not None:
            await self.before_create()
        params = {"taleId": self.tale.tale_id, "name": name, "force": "true"}
        return self.entry(await self.api.call("POST", "version", params))


class TaleRuns(_TaleRepo):
    kind = "run"

    def entry(self, doc: dict[str, Any]) -> Entry:
        workspace = RemoteTree(self.tale, str(doc["_id"]), timestamp_ns(doc.get("updated")), within="workspace")
        return Entry(
            str(doc["_id"]), str(doc["name"]), timestamp_ns(doc.get("created")), workspace, str(doc.get("runVersionId"))
        )

    async def create(self, name: str) -> Entry:
        """A run of the latest version; of a new one only when the tale has none."""
        versions = await self.tale.docs("version")
        if versions:
            version = versions[-1]
        else:
            version = await self.api.call("POST", "version", {"taleId": self.tale.tale_id, "force": "true"})
        return self.entry(await self.api.call("POST", "run", {"versionId": version["_id"], "name": name}))

    async def status_line(self, run_id: str) -> str:
        status = await self.api.get(f"run/{run_id}/status", what=f"run {run_id}")
        return f"{status['status']} {status['statusString']}\n"

    async def version_name(self, run: Entry) -> str:
        doc = await self.api.get(f"version/{run.version_id}", what=f"version {run.version_id}")
        return str(doc["name"])


def tale_repos(api: GirderApi, tale_id: str, scratch: Path) -> tuple[TaleVersions, TaleRuns]:
    tale = Tale(api, tale_id, scratch)
    return TaleVersions(tale), TaleRuns(tale)


def _anonymous_file(directory: Path) -> int:
    """A file with no name (O_TMPFILE), so no cleanup of the directory can touch it."""
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:  # a filesystem without O_TMPFILE: a name, removed at once
        fd, path = tempfile.mkstemp(dir=directory)
        os.unlink(path)
        return fd
