"""The write-back journal of a WholeTale workspace: local copies waiting to go to the server.

A file written through ``workspace/`` is written into a private local copy (0600, in the state
directory); one SQLite row per path says which copy, which server version it was based on
(``base``: the item's ``updated``, empty for a new file), how often it was changed (``gen``)
and, once sent, the sha256 of the bytes sent. Every change is one autocommitted statement, so a
``kill -9`` after close loses nothing: the next mount finds the row and finishes the upload.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    rel TEXT PRIMARY KEY,
    copy TEXT NOT NULL,
    base TEXT NOT NULL,
    gen INTEGER NOT NULL DEFAULT 0,
    open INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class Pending:
    """A path with local changes: ``copy`` is the local file's name, ``base`` the server version
    it started from, ``gen`` bumped by every change (an upload of an older gen is not the last)."""

    rel: str
    copy: str
    base: str
    gen: int
    open: bool


def workspace_state(state_dir: Path, api_url: str, tale_id: str) -> Path:
    """One journal and copies directory per server and tale."""
    digest = hashlib.sha256(f"{api_url.rstrip('/')}\0{tale_id}".encode()).hexdigest()[:16]
    return state_dir / "wt-workspace" / digest


def _private_dir(path: Path) -> None:
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR)


class WriteBack:
    """Thread-safe (callers use worker threads): one connection behind a lock, autocommit."""

    def __init__(self, root: Path) -> None:
        _private_dir(root)
        self.copies = root / "copies"
        _private_dir(self.copies)
        path = root / "journal.sqlite"
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE))
        os.chmod(path, PRIVATE_FILE)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def copy_path(self, row: Pending) -> Path:
        return self.copies / row.copy

    def get(self, rel: str) -> Pending | None:
        with self._lock:
            row = self._db.execute("SELECT rel, copy, base, gen, open FROM pending WHERE rel = ?", (rel,)).fetchone()
        return None if row is None else Pending(row[0], row[1], row[2], row[3], bool(row[4]))

    def all(self) -> list[Pending]:
        with self._lock:
            rows = self._db.execute("SELECT rel, copy, base, gen, open FROM pending ORDER BY rel").fetchall()
        return [Pending(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    def start(self, rel: str, base: str, fill: int | None) -> Pending:
        """A local copy for ``rel`` (the existing one, or a new one filled from ``fill``, a
        descriptor of the server's bytes, or empty); marked open for writing."""
        row = self.get(rel)
        if row is None:
            name = uuid.uuid4().hex
            fd = os.open(self.copies / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
            try:
                if fill is not None:
                    _copy_fd(fill, fd)
                    os.fsync(fd)
            finally:
                os.close(fd)
            with self._lock:
                self._db.execute("INSERT INTO pending VALUES (?, ?, ?, 1, 1)", (rel, name, base))
        else:
            with self._lock:
                self._db.execute("UPDATE pending SET open = open + 1, gen = gen + 1 WHERE rel = ?", (rel,))
        found = self.get(rel)
        assert found is not None
        return found

    def closed(self, rel: str) -> Pending | None:
        """A writer closed: the row says the copy is complete. No fsync: a killed daemon's
        writes stay in the page cache (fsync on the file asks for more, and gets it)."""
        if self.get(rel) is None:
            return None
        with self._lock:
            self._db.execute("UPDATE pending SET open = max(open - 1, 0), gen = gen + 1 WHERE rel = ?", (rel,))
        return self.get(rel)

    def reopened_all(self) -> None:
        """At start: no writer of a previous daemon is open any more."""
        with self._lock:
            self._db.execute("UPDATE pending SET open = 0")

    def uploaded(self, rel: str, gen: int, base: str) -> bool:
        """The server holds generation ``gen``: forget the row (True) unless changed since; then
        the next upload is based on what we just sent."""
        with self._lock:
            done = self._db.execute("DELETE FROM pending WHERE rel = ? AND gen = ? AND open = 0", (rel, gen)).rowcount
            if not done:
                self._db.execute("UPDATE pending SET base = ? WHERE rel = ?", (base, rel))
        return bool(done)

    def rebase(self, rel: str, base: str) -> None:
        """The server now holds what we sent: a later upload is based on it, not a conflict."""
        with self._lock:
            self._db.execute("UPDATE pending SET base = ? WHERE rel = ?", (base, rel))

    def rename(self, old: str, new: str) -> None:
        """Rows follow their paths (a directory's rows too)."""
        with self._lock:
            self._db.execute("DELETE FROM pending WHERE rel = ? OR rel LIKE ? ESCAPE '\\'", (new, _below(new)))
            self._db.execute("UPDATE pending SET rel = ? WHERE rel = ?", (new, old))
            rows = self._db.execute("SELECT rel FROM pending WHERE rel LIKE ? ESCAPE '\\'", (_below(old),)).fetchall()
            for (rel,) in rows:
                self._db.execute("UPDATE pending SET rel = ? WHERE rel = ?", (new + rel[len(old) :], rel))

    def drop(self, rel: str) -> None:
        """The path was deleted: its row goes; its copy too once no writer holds it."""
        row = self.get(rel)
        if row is None:
            return
        with self._lock:
            self._db.execute("DELETE FROM pending WHERE rel = ?", (rel,))
        remove_copy(self.copy_path(row))


def remove_copy(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _below(rel: str) -> str:
    escaped = rel.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "/%"


def _copy_fd(src: int, dst: int) -> None:
    offset = 0
    while True:
        sent = os.copy_file_range(src, dst, 1 << 30, offset, offset)
        if sent == 0:
            return
        offset += sent
