"""Girder's own downloads (``GET /file/{id}/download``), authenticated, resumed with Range.

Items whose bytes live elsewhere (``meta.phys_path``, ``linkUrl``) are resolved by the catalog to
that source and fetched by its provider; this one only serves ``girder:`` sources.
"""

from __future__ import annotations

from collections.abc import Callable

from ..catalog.girder import GIRDER_SCHEME
from ..catalog.girder_api import GirderApi
from ..errors import AccessDenied, NotFound
from ..objects import ObjectRef
from .base import Sink
from .http import HttpProvider


class GirderProvider:
    resumes = True

    def __init__(self, api: GirderApi, http: HttpProvider) -> None:
        self.api = api
        self.http = http

    async def fetch(self, obj: ObjectRef, sink: Sink) -> None:
        location = obj.source.removeprefix(f"{GIRDER_SCHEME}:")
        if location == "empty":
            return  # an item without files is an empty file
        url = f"{location}/download"
        try:
            await self.http.fetch(obj, sink, url=url, headers=self.api.headers)
        except AccessDenied:
            await self.api.authenticate()  # a refused token is renewed once
            await self.http.fetch(obj, sink, url=url, headers=self.api.headers)
        except NotFound:
            raise NotFound(f"{location}: not found in Girder") from None

    async def fetch_range(
        self, obj: ObjectRef, start: int, end: int, validator: str | None, write: Callable[[int, memoryview], None]
    ) -> None:
        """A far read of a copy being streamed: that range of the download, fetched first."""
        url = f"{obj.source.removeprefix(f'{GIRDER_SCHEME}:')}/download"
        await self.http.fetch_range(obj, start, end, validator, write, url=url, headers=self.api.headers)
