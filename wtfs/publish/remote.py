"""The Girder calls publishing needs: folders, items, uploads in chunks, metadata.

Authentication is ``GirderApi``'s (the key goes in a form body, never a URL or a log line);
bodies (chunks, JSON metadata) are sent here. Reads and PUTs are retried with backoff; a POST
is never repeated after a 5xx, and a chunk whose fate is unknown is settled by asking Girder
for the upload's offset instead.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

from ..catalog.girder_api import RETRY, GirderApi, error_for
from ..errors import NotFound, TransferFailed

log = logging.getLogger(__name__)

Doc = dict[str, Any]


class Unreachable(TransferFailed):
    """Girder stopped answering: the publish stops starting files, and a rerun continues."""


def make_client(jobs: int) -> httpx.AsyncClient:
    """Long reads: Girder may take a while to store a 64 MiB chunk."""
    timeout = httpx.Timeout(connect=10.0, read=300.0, write=300.0, pool=None)
    return httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=jobs + 4))


class Remote:
    def __init__(self, api: GirderApi) -> None:
        self.api = api

    async def _send(self, method: str, path: str, params: dict[str, Any] | None, body: Any) -> httpx.Response:
        """One call, retried with backoff, bounded; a POST only if it never reached Girder."""
        for attempt in RETRY.tries():
            try:
                headers = self.api.headers()
                if body.get("content") is not None:
                    headers["Content-Type"] = "application/octet-stream"
                response = await self.api.client.request(
                    method, f"{self.api.api_url}/{path}", params=params, headers=headers, **body
                )
                if response.status_code < 500 or method == "POST":
                    return response
                problem = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                if method == "POST" and not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                    raise Unreachable(
                        f"{path}: {type(exc).__name__}, not repeated (it may have taken effect)"
                    ) from None
                problem = type(exc).__name__
            if attempt.last:
                raise Unreachable(f"{self.api.api_url}: Girder unreachable ({problem}) after {attempt.number} attempts")
            log.info("Girder %s %s: %s; retrying in %.2fs", method, path, problem, attempt.delay)
            await attempt.pause()
        raise AssertionError("unreachable")

    async def call(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        what: str = "",
        json_body: Any = None,
        content: bytes | None = None,
    ) -> Any:
        """One REST call; its JSON answer. A refused token is renewed once; errors as WtfsErrors."""
        body: dict[str, Any] = {"json": json_body} if json_body is not None else {"content": content}
        response = await self._send(method, path, params, body)
        if response.status_code == 401:
            await self.api.authenticate()
            response = await self._send(method, path, params, body)
        if response.status_code >= 300:
            raise error_for(response, what or path)
        return response.json() if response.content else None

    # -- containers --------------------------------------------------------------------------

    async def collection(self, name: str) -> str:
        """The id of the collection ``name``, created (private) if missing."""
        try:
            found = await self.call("GET", "resource/lookup", {"path": f"/collection/{name}"}, f"collection {name}")
            return str(found["_id"])
        except NotFound:
            pass
        created = await self.call("POST", "collection", {"name": name, "public": "false"}, f"collection {name}")
        return str(created["_id"])

    async def subfolders(self, parent_id: str, parent_type: str = "folder") -> dict[str, str]:
        """Name → id of the folders directly in a folder (or collection), in one listing."""
        found = await self.call(
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
        created = await self.call("POST", "folder", params, f"folder {name}")
        return str(created["_id"])

    async def items(self, folder_id: str) -> dict[str, Doc]:
        """Name → item document of every item in a folder, in one listing."""
        found = await self.call("GET", "item", {"folderId": folder_id, "limit": 0}, "list items")
        return {doc["name"]: doc for doc in found}

    async def create_item(self, folder_id: str, name: str, meta: Doc) -> Doc:
        params = {"folderId": folder_id, "name": name, "reuseExisting": "true", "metadata": json.dumps(meta)}
        item: Doc = await self.call("POST", "item", params, f"item {name}")
        return item

    async def item_files(self, item_id: str) -> list[Doc]:
        files: list[Doc] = await self.call("GET", f"item/{item_id}/files", {"limit": 0}, "list files")
        return files

    async def set_item_meta(self, item_id: str, meta: Doc) -> None:
        await self.call("PUT", f"item/{item_id}/metadata", None, "item metadata", json_body=meta)

    # -- uploads -----------------------------------------------------------------------------

    async def start_upload(
        self, parent: tuple[str, str], file_id: str | None, name: str, size: int, data: bytes | None
    ) -> Doc:
        """A new upload into ``parent`` (("item", id), or ("folder", id): Girder then makes the
        item), or new contents for file ``file_id``. With ``data`` (the whole file) the answer is
        the finished file; else the upload, or the file when size is 0."""
        if file_id is not None:
            doc: Doc = await self.call("PUT", f"file/{file_id}/contents", {"size": size}, name)
            if data and doc.get("received") is not None:
                doc = await self.send_chunk(str(doc["_id"]), 0, data)
            return doc
        params = {"parentType": parent[0], "parentId": parent[1], "name": name, "size": size}
        doc = await self.call("POST", "file", params, name, content=data or None)
        return doc

    async def upload_offset(self, upload_id: str) -> int | None:
        """Where Girder stands in an upload; None when it no longer knows it (finished or gone)."""
        try:
            found = await self.call("GET", "file/offset", {"uploadId": upload_id}, "upload")
        except NotFound:
            return None
        return int(found["offset"])

    async def send_chunk(self, upload_id: str, offset: int, data: bytes) -> Doc:
        chunk: Doc = await self.call(
            "POST", "file/chunk", {"uploadId": upload_id, "offset": offset}, "upload chunk", content=data
        )
        return chunk


def is_file(doc: Doc) -> bool:
    """An upload's answer is the file once the last byte is in (uploads carry ``received``)."""
    return "received" not in doc and "itemId" in doc
