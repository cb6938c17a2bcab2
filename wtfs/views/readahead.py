"""Read-ahead across the files of one directory, for readers that open them one after another.

Like the kernel's read-ahead within a file, it follows only sequential opens: the second open in
a row of the next file (in code-point name order, among the directory's files) hands the
``window`` files after it to be landed; the window moves on once the reader is halfway through
what was handed; any other open starts the detection over (a second pass from the first file
reads ahead again). It sees the directory's listing as the lookups and listings last got it and
never lists by itself. Synchronous and FUSE-free: the view calls it on each open.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from ..catalog import CatalogFile, CatalogNode


class FileReadAhead:
    def __init__(self, window: int, land: Callable[[list[CatalogFile]], None]) -> None:
        self.window = window
        self.land = land
        self._children: dict[str, CatalogNode] | None = None
        self._names: list[str] | None = None  # the files' names, sorted, of that listing
        self._last: str | None = None  # the file opened last
        self._handed: str | None = None  # the last file handed to be landed, in this run of opens

    def listed(self, children: dict[str, CatalogNode]) -> None:
        """The directory's listing as last got (a new one is sorted again on the next open)."""
        if children is not self._children:
            self._children, self._names = children, None

    def opened(self, name: str) -> None:
        children = self._children
        if children is None:
            return
        if self._names is None:
            self._names = sorted(n for n, node in children.items() if isinstance(node, CatalogFile))
        names = self._names
        index = bisect.bisect_left(names, name)
        if index == len(names) or names[index] != name:
            return
        last, self._last = self._last, name
        if index == 0 or names[index - 1] != last:
            self._handed = None  # not the next file: start over
            return
        handed_to = 0 if self._handed is None else bisect.bisect_right(names, self._handed)
        if handed_to - (index + 1) > self.window // 2:
            return  # enough is on its way
        start, stop = max(index + 1, handed_to), min(index + 1 + self.window, len(names))
        if start < stop:
            self._handed = names[stop - 1]
            self.land([node for n in names[start:stop] if isinstance(node := children[n], CatalogFile)])
