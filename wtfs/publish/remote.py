"""The Girder calls publishing needs: folders, items and metadata, on top of the upload calls
(``catalog.girder_upload``, shared with the WholeTale workspace).

Every call is ``GirderApi``'s (the key in a form body, retries with backoff, a POST never
repeated once it may have reached Girder).
"""

from __future__ import annotations

import json

import httpx

from ..catalog.girder_upload import Doc, GirderUploads, is_file
from ..errors import AccessDenied, NotFound

__all__ = ["CALL_TIMEOUT", "Doc", "Remote", "is_file", "make_client"]


#: Girder may take a while to store a 64 MiB chunk: calls wait this long for an answer.
CALL_TIMEOUT = 300.0


def make_client(jobs: int) -> httpx.AsyncClient:
    timeout = httpx.Timeout(connect=10.0, read=CALL_TIMEOUT, write=CALL_TIMEOUT, pool=None)
    return httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=jobs + 4))


class Remote(GirderUploads):
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
