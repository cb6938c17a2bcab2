"""A tale item's bytes, downloaded through the server lock this mount holds on it.

The WholeTale data manager lands local copies through the same host-cache machinery as every
other provider (records, leases, partials, GC); this provider is only where the bytes come from.
"""

from __future__ import annotations

from collections.abc import Callable

from ..catalog.girder_api import GirderApi, path_id
from ..catalog.wholetale import download
from ..objects import ObjectRef
from .base import Sink


class WholeTaleProvider:
    resumes = False

    def __init__(self, api: GirderApi, held_lock: Callable[[ObjectRef], str]) -> None:
        self.api = api
        self.held_lock = held_lock  # the id of a server lock held on the object (the DM's)

    async def fetch(self, obj: ObjectRef, sink: Sink) -> None:
        path = f"dm/lock/{self.held_lock(obj)}/download"
        await download(self.api, path, sink.write, f"{self.api.api_url}/{path}")


class WorkspaceProvider:
    """A file of the tale's workspace: its item's download (no server lock applies to it)."""

    resumes = False

    def __init__(self, api: GirderApi) -> None:
        self.api = api

    async def fetch(self, obj: ObjectRef, sink: Sink) -> None:
        item = obj.source.split(":", 1)[1]
        await download(self.api, f"item/{path_id(item)}/download", sink.write, f"workspace item {item}")
