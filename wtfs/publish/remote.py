"""The Girder calls publishing needs: folders, items, uploads in chunks, metadata.

Every call is ``GirderApi``'s (the key in a form body, retries with backoff, a POST never
repeated once it may have reached Girder); a chunk whose fate is unknown is settled here by
asking Girder for the upload's offset.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from ..catalog.girder_api import GirderApi
from ..errors import AccessDenied, NotFound

Doc = dict[str, Any]


#: Girder may take a while to store a 64 MiB chunk: calls wait this long for an answer.
CALL_TIMEOUT = 300.0


def make_client(jobs: int) -> httpx.AsyncClient:
    timeout = httpx.Timeout(connect=10.0, read=CALL_TIMEOUT, write=CALL_TIMEOUT, pool=None)
    return httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=jobs + 4))


class Remote:
    def __init__(self, api: GirderApi) -> None:
        self.api = api

    # -- containers --------------------------------------------------------------------------

    async def collection(self, name: str) -> str:
        """The id of the collection ``name``, created (private) if missing."""
        try:
            found = await self.api.call("GET", "resource/lookup", {"path": f"/collection/{name}"}, f"collection {name}")
            return str(found["_id"])
        except NotFound:
            pass
        created = await self.api.call("POST", "collection", {"name": name, "public": "false"}, f"collection {name}")
        return str(created["_id"])

    async def subfolders(self, parent_id: str, parent_type: str = "folder") -> dict[str, str]:
        """Name → id of the folders directly in a folder (or collection), in one listing."""
        found = await self.api.call(
            "GET", "folder", {"parentType": parent_type, "parentId": parent_id, "limit": 0}, "list folders"
        )
        return {doc["name"]: str(doc["_id"]) for doc in found}

    async def create_folder(self, parent_id: str, name: str, meta: Doc, parent_type: str = "folder") -> str:
        params = {
            "parentType": parent_type,
            "parentId": parent_id,
            "name": name,
            "reuseExisting": "true",  # a concurrent publisher made it first: use theirs
            "metadata": json.dumps(meta),
        }
        created = await self.api.call("POST", "folder", params, f"folder {name}")
        return str(created["_id"])

    async def items(self, folder_id: str) -> dict[str, Doc]:
        """Name → item document of every item in a folder, in one listing."""
        found = await self.api.call("GET", "item", {"folderId": folder_id, "limit": 0}, "list items")
        return {doc["name"]: doc for doc in found}

    async def create_item(self, folder_id: str, name: str, meta: Doc) -> Doc:
        params = {"folderId": folder_id, "name": name, "reuseExisting": "true", "metadata": json.dumps(meta)}
        item: Doc = await self.api.call("POST", "item", params, f"item {name}")
        return item

    async def item_files(self, item_id: str) -> list[Doc]:
        files: list[Doc] = await self.api.call("GET", f"item/{item_id}/files", {"limit": 0}, "list files")
        return files

    async def set_item_meta(self, item_id: str, meta: Doc) -> None:
        await self.api.call("PUT", f"item/{item_id}/metadata", None, "item metadata", json_body=meta)

    async def destination(self, folder_id: str | None, collection: str | None, path: str, meta: Doc) -> tuple[str, str]:
        """(id, type) of where to publish: the folder ``folder_id`` (checked writable), or the
        collection and the folders of ``path`` (A/B/C) below it, made as needed."""
        if folder_id:
            found = await self.api.call("GET", f"folder/{folder_id}", what=f"folder {folder_id}")
            if found.get("_accessLevel", 1) < 1:  # Girder's levels: 0 read, 1 write, 2 admin
                raise AccessDenied(f"folder {folder_id}: no write access")
            return folder_id, "folder"
        assert collection is not None
        parent, parent_type = await self.collection(collection), "collection"
        for name in filter(None, path.split("/")):
            found = (await self.subfolders(parent, parent_type)).get(name)
            parent = found or await self.create_folder(parent, name, {"wtfs": meta}, parent_type)
            parent_type = "folder"
        return parent, parent_type

    # -- uploads -----------------------------------------------------------------------------

    async def start_upload(
        self, parent: tuple[str, str], file_id: str | None, name: str, size: int, data: bytes | None
    ) -> Doc:
        """A new upload into ``parent`` (("item", id), or ("folder", id): Girder then makes the
        item), or new contents for file ``file_id``. With ``data`` (the whole file) the answer is
        the finished file; else the upload, or the file when size is 0."""
        if file_id is not None:
            doc: Doc = await self.api.call("PUT", f"file/{file_id}/contents", {"size": size}, name)
            if data and doc.get("received") is not None:
                doc = await self.send_chunk(str(doc["_id"]), 0, data)
            return doc
        params = {"parentType": parent[0], "parentId": parent[1], "name": name, "size": size}
        doc = await self.api.call("POST", "file", params, name, content=data or None)
        return doc

    async def upload_offset(self, upload_id: str) -> int | None:
        """Where Girder stands in an upload; None when it no longer knows it (finished or gone)."""
        try:
            found = await self.api.call("GET", "file/offset", {"uploadId": upload_id}, "upload")
        except NotFound:
            return None
        return int(found["offset"])

    async def send_chunk(self, upload_id: str, offset: int, data: bytes) -> Doc:
        chunk: Doc = await self.api.call(
            "POST", "file/chunk", {"uploadId": upload_id, "offset": offset}, "upload chunk", content=data
        )
        return chunk


def is_file(doc: Doc) -> bool:
    """An upload's answer is the file once the last byte is in (uploads carry ``received``)."""
    return "received" not in doc and "itemId" in doc
