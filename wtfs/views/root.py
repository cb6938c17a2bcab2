"""The mount's root: data/ (and later workspace/, versions/, runs/), read-only itself."""

from __future__ import annotations

import time

from ..errors import NotFound
from .base import Attr, Node


class StaticDirNode(Node):
    """A directory with a fixed set of children, e.g. the root."""

    def __init__(self, key: str, children: dict[str, Node], hidden: dict[str, Node] | None = None) -> None:
        self.key = key
        self.children = children
        self.hidden = hidden or {}
        self.mtime_ns = time.time_ns()

    async def attr(self) -> Attr:
        return Attr.directory(self.mtime_ns)

    async def lookup(self, name: str) -> Node:
        node = self.children.get(name) or self.hidden.get(name)
        if node is None:
            raise NotFound(name)
        return node

    async def listdir(self) -> list[tuple[str, Node]]:
        return list(self.children.items())
