"""The hidden ``.wtfs/`` directory: JSON files generated when read, for containers that see
only the mount (``cat MOUNT/.wtfs/status.json``)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from ..errors import ReadOnly
from .base import Attr, Node, OpenFile, wants_write

LIVE = 0.0


class GeneratedFile(Node):
    """A read-only file whose bytes are made anew on every stat and open (never stale)."""

    def __init__(self, key: Hashable, render: Callable[[], Awaitable[bytes]]) -> None:
        self.key = key
        self.render = render

    @classmethod
    def json(cls, key: Hashable, produce: Callable[[], Awaitable[Any]]) -> GeneratedFile:
        async def render() -> bytes:
            return (json.dumps(await produce(), indent=1) + "\n").encode()

        return cls(key, render)

    async def content(self) -> bytes:
        return await self.render()

    async def attr(self) -> Attr:
        return Attr.file(len(await self.content()), time.time_ns(), ttl=LIVE)

    async def open(self, flags: int) -> OpenFile:
        if wants_write(flags):
            raise ReadOnly("generated file")
        return Snapshot(await self.content())


class Snapshot(OpenFile):
    """The content as of open(); direct_io so the size need not match a stale stat."""

    direct_io = True

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]
