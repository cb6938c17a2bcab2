"""Which version files share an inode with the workspace: (st_dev, st_ino) → (version, path).

A version holds hard links of the workspace's files. Before the workspace changes an inode, the
store asks this index who else holds it and gives each version a private copy, so the
workspace keeps its inode (and every descriptor open on it) and the version keeps its bytes.
SQLite, so that the daemon and the CLI share it safely.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS links (dev INTEGER, ino INTEGER, version TEXT, rel TEXT);
CREATE INDEX IF NOT EXISTS links_inode ON links (dev, ino);
CREATE INDEX IF NOT EXISTS links_version ON links (version);
"""


class LinkIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._schema_made = False  # once per process, not on every call

    def create(self) -> bool:
        """Make the index file (0600) if missing; True if it was new and needs a rebuild."""
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            return False
        return True

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60)
        try:
            if not self._schema_made:
                db.executescript(_SCHEMA)
                self._schema_made = True
            with db:
                yield db
        finally:
            db.close()

    def add(self, version_id: str, linked: Iterable[tuple[int, int, str]]) -> None:
        with self._db() as db:
            db.executemany(
                "INSERT INTO links VALUES (?, ?, ?, ?)", ((dev, ino, version_id, rel) for dev, ino, rel in linked)
            )

    def holders(self, dev: int, ino: int) -> list[tuple[str, str]]:
        with self._db() as db:
            rows = db.execute("SELECT version, rel FROM links WHERE dev = ? AND ino = ?", (dev, ino)).fetchall()
        return [(str(version), str(rel)) for version, rel in rows]

    def forget_inode(self, dev: int, ino: int) -> None:
        with self._db() as db:
            db.execute("DELETE FROM links WHERE dev = ? AND ino = ?", (dev, ino))

    def forget_version(self, version_id: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM links WHERE version = ?", (version_id,))


def shared_files(workspace: Path) -> Iterator[tuple[int, int, str]]:
    """(dev, ino, rel) of every regular file with more than one link (for a rebuild)."""
    for directory, _, names in os.walk(workspace):
        for name in names:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                yield st.st_dev, st.st_ino, os.path.relpath(path, workspace)
