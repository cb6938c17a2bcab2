"""Inode numbers for view nodes, with the kernel's lookup counts."""

from __future__ import annotations

from collections.abc import Hashable

import pyfuse3

from ..errors import NotFound
from ..views import Node


class InodeTable:
    """key ↔ inode; an inode is dropped when the kernel forgets it (lookup count 0)."""

    def __init__(self, root: Node) -> None:
        self._inode_by_key: dict[Hashable, int] = {root.key: pyfuse3.ROOT_INODE}
        self._nodes: dict[int, Node] = {pyfuse3.ROOT_INODE: root}
        self._lookups: dict[int, int] = {}
        self._next = pyfuse3.ROOT_INODE + 1

    def node(self, inode: int) -> Node:
        try:
            return self._nodes[inode]
        except KeyError:
            raise NotFound(f"stale inode {inode}") from None

    def inode_of(self, node: Node) -> int:
        """The inode for ``node``, allocating one; the newest node object wins."""
        inode = self._inode_by_key.get(node.key)
        if inode is None:
            inode = self._next
            self._next += 1
            self._inode_by_key[node.key] = inode
        self._nodes[inode] = node
        return inode

    def looked_up(self, inode: int) -> None:
        self._lookups[inode] = self._lookups.get(inode, 0) + 1

    def forget(self, inode: int, count: int) -> None:
        remaining = self._lookups.get(inode, 0) - count
        if remaining > 0:
            self._lookups[inode] = remaining
            return
        self._lookups.pop(inode, None)
        if inode != pyfuse3.ROOT_INODE:
            node = self._nodes.pop(inode, None)
            if node is not None and self._inode_by_key.get(node.key) == inode:
                del self._inode_by_key[node.key]

    def rekey(self, old: Hashable, new: Hashable) -> None:
        """A node's identity changed (rename): keep its inode."""
        inode = self._inode_by_key.pop(old, None)
        if inode is not None:
            self._inode_by_key[new] = inode

    def __len__(self) -> int:
        return len(self._nodes)
