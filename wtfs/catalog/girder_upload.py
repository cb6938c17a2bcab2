"""Girder's upload calls: a file sent whole in its init request, or in chunks resumable at the
offset Girder acknowledged. Used by ``wtfs publish`` and the WholeTale workspace's write-back.

Every call is ``GirderApi``'s (retries with backoff, a POST never repeated once it may have
reached Girder): a chunk whose fate is unknown is settled by asking for the upload's offset.
"""

from __future__ import annotations

from typing import Any

from ..errors import NotFound
from .girder_api import GirderApi

Doc = dict[str, Any]


class GirderUploads:
    def __init__(self, api: GirderApi) -> None:
        self.api = api

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
