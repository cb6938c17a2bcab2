"""The local side of a publish: which directories and regular files a PATH holds.

Symbolic links are never followed (a link out of a workspace must not publish what it points
at); they are listed so the command can say they were left out.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import NotFound


@dataclass(frozen=True)
class LocalFile:
    rel: str  # POSIX path relative to PATH's destination folder, as on disk
    path: Path
    size: int
    mtime_ns: int

    @property
    def folder(self) -> str:
        """The relative directory holding the file ('' for the destination itself)."""
        return self.rel.rpartition("/")[0]

    @property
    def name(self) -> str:
        return self.rel.rpartition("/")[2]


@dataclass
class LocalTree:
    dirs: list[str] = field(default_factory=list)  # parents before children
    files: list[LocalFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # symbolic links and special files

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def scan(path: Path) -> LocalTree:
    """A file publishes as one item; a directory as its contents, recursively."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file or directory") from None
    tree = LocalTree()
    if stat.S_ISREG(st.st_mode):
        tree.files.append(LocalFile(path.name, path, st.st_size, st.st_mtime_ns))
    elif stat.S_ISDIR(st.st_mode):
        _walk(path, "", tree)
    else:
        tree.skipped.append(path.name)
    return tree


def _walk(directory: Path, prefix: str, tree: LocalTree) -> None:
    with os.scandir(directory) as entries:
        listed = sorted(entries, key=lambda e: e.name)
    for entry in listed:
        rel = f"{prefix}{entry.name}"
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(st.st_mode):
            tree.files.append(LocalFile(rel, Path(entry.path), st.st_size, st.st_mtime_ns))
        elif stat.S_ISDIR(st.st_mode):
            tree.dirs.append(rel)
            _walk(Path(entry.path), f"{rel}/", tree)
        else:
            tree.skipped.append(rel)
