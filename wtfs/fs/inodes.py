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

    def move(self, old: Hashable, new: Hashable) -> None:
        """A path-keyed subtree was renamed: its nodes keep their inodes under their new paths.

        Keys of path nodes are ``(tag, rel)``; whatever was at the destination is unlinked.
        """
        assert isinstance(old, tuple) and isinstance(new, tuple)
        tag, old_rel = old
        _, new_rel = new
        for key in [k for k in self._inode_by_key if _under(k, tag, new_rel)]:
            del self._inode_by_key[key]
        for inode, node in self._nodes.items():
            if _under(node.key, tag, old_rel) and hasattr(node, "relocate"):
                if self._inode_by_key.get(node.key) == inode:
                    del self._inode_by_key[node.key]
                suffix = str(node.key[1])[len(old_rel) :]  # type: ignore[index]
                node.relocate(new_rel + suffix)
                self._inode_by_key[node.key] = inode

    def __len__(self) -> int:
        return len(self._nodes)


def _under(key: Hashable, tag: Hashable, rel: str) -> bool:
    if not (isinstance(key, tuple) and len(key) == 2 and key[0] == tag and isinstance(key[1], str)):
        return False
    return bool(key[1] == rel or key[1].startswith(rel + "/"))
