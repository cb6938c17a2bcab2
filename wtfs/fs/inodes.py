"""Inode numbers for view nodes, with the kernel's lookup counts."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

from ..errors import NotFound
from ..views import Node

#: The kernel's number for the mount's root (FUSE_ROOT_ID).
ROOT_INODE = 1


class InodeTable:
    """key ↔ inode; an inode is dropped when the kernel forgets it (lookup count 0).

    A node is released (``Node.forget``) once neither the kernel nor an open directory listing
    holds it: a listing's nodes are pinned until the directory is released, so a node the
    kernel forgets in between (or was never handed, the reply being full) is still alive when
    the next batch of that listing hands it over."""

    def __init__(self, root: Node, dropped: Callable[[int], None] = lambda inode: None) -> None:
        self._dropped = dropped  # told of each inode number given up, to drop what it keeps for it
        self._inode_by_key: dict[Hashable, int] = {root.key: ROOT_INODE}
        self._nodes: dict[int, Node] = {ROOT_INODE: root}
        self._lookups: dict[int, int] = {}
        self._next = ROOT_INODE + 1  # sequential numbers stay far below every inode_hint

    def node(self, inode: int) -> Node:
        try:
            return self._nodes[inode]
        except KeyError:
            raise NotFound(f"stale inode {inode}") from None

    def inode_of(self, node: Node) -> int:
        """The inode for ``node``, allocating one; the newest node object wins.

        A node with a stable number of its own (``inode_hint``: a workspace object's disk inode)
        gets it whenever it is free, so ``st_ino`` stays the same across forgets and restarts."""
        inode = self._inode_by_key.get(node.key)
        if inode is None:
            hint = node.inode_hint
            if hint is not None and hint not in self._nodes:
                inode = hint
            else:
                inode = self._next
                self._next += 1
            self._inode_by_key[node.key] = inode
        self._nodes[inode] = node
        return inode

    def looked_up(self, inode: int) -> None:
        self._lookups[inode] = self._lookups.get(inode, 0) + 1

    def forget(self, inode: int, count: int) -> bool:
        """Drop ``count`` lookups; True when the inode is gone (its node released, unless an
        open listing still holds it: then ``unpin`` releases it)."""
        remaining = self._lookups.get(inode, 0) - count
        if remaining > 0:
            self._lookups[inode] = remaining
            return False
        self._lookups.pop(inode, None)
        if inode == ROOT_INODE:
            return False
        node = self._nodes.pop(inode, None)
        self._dropped(inode)
        if node is not None:
            if self._inode_by_key.get(node.key) == inode:
                del self._inode_by_key[node.key]
            if not node.pins:
                node.forget()
        return True

    def pin(self, nodes: Iterable[Node]) -> None:
        """An open listing holds these nodes until ``unpin`` (a count kept on each node)."""
        for node in nodes:
            node.pins += 1

    def unpin(self, nodes: Iterable[Node]) -> None:
        """A listing is closed: release each node the kernel does not hold, now, not never."""
        for node in nodes:
            node.pins -= 1
            if node.pins or type(node).forget is Node.forget:
                continue  # another listing holds it, or it holds nothing to release
            inode = self._inode_by_key.get(node.key)
            if inode is None or self._nodes.get(inode) is not node:
                node.forget()  # never handed over, or the kernel holds another object for it
            elif inode not in self._lookups:
                self.forget(inode, 0)

    def __len__(self) -> int:
        return len(self._nodes)
