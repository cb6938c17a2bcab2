"""The publish journal: one SQLite file per (source, destination) recording each file's state.

Every state change is one autocommitted statement (small files' ``done`` rows a batch per
transaction), so a ``kill -9`` at any moment leaves a journal whose rows are true: what is done,
and where an unfinished upload stands (Girder's upload id and the last offset it acknowledged).
A rerun reads it to skip and to resume; a small file whose row was not yet written is found
done by Girder's ``meta.sha256`` and one local hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..journaldb import open_journal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    rel TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    upload_id TEXT,
    offset INTEGER NOT NULL DEFAULT 0,
    item_id TEXT,
    file_id TEXT,
    sha256 TEXT
);
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class State(StrEnum):
    PENDING = "pending"
    UPLOADING = "uploading"
    DONE = "done"


@dataclass(frozen=True)
class Record:
    """One file's journal row; ``size``/``mtime_ns`` say which local bytes it is about."""

    rel: str
    state: State
    size: int
    mtime_ns: int
    upload_id: str | None = None
    offset: int = 0
    item_id: str | None = None
    file_id: str | None = None
    sha256: str | None = None

    def describes(self, size: int, mtime_ns: int) -> bool:
        """True while the local file is still the one this row was written for."""
        return self.size == size and self.mtime_ns == mtime_ns


def state_root() -> Path:
    """The user's state directory (XDG_STATE_HOME wins, so tests and users can move it)."""
    if base := os.environ.get("XDG_STATE_HOME"):
        return Path(base) / "wtfs"
    if os.geteuid() == 0:
        return Path("/var/lib/wtfs")
    return Path.home() / ".local" / "state" / "wtfs"


def journal_path(source: Path, api_url: str, destination: str) -> Path:
    """One journal per source and destination: the same command finds the same file."""
    key = json.dumps([os.path.realpath(source), api_url.rstrip("/"), destination])
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return state_root() / "publish" / f"{digest}.sqlite"


class Journal:
    """Thread-safe (callers use worker threads): one connection behind a lock, autocommit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = open_journal(path, _SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def set_info(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO info VALUES (?, ?)", (key, value))

    def get(self, rel: str) -> Record | None:
        with self._lock:
            row = self._db.execute(
                "SELECT rel, state, size, mtime_ns, upload_id, offset, item_id, file_id, sha256"
                " FROM files WHERE rel = ?",
                (rel,),
            ).fetchone()
        return None if row is None else Record(row[0], State(row[1]), *row[2:])

    def all(self) -> list[Record]:
        with self._lock:
            rows = self._db.execute(
                "SELECT rel, state, size, mtime_ns, upload_id, offset, item_id, file_id, sha256 FROM files"
            ).fetchall()
        return [Record(row[0], State(row[1]), *row[2:]) for row in rows]

    def pending(self, rel: str, size: int, mtime_ns: int) -> None:
        """Known, nothing sent yet (or a previous attempt abandoned)."""
        self._put(Record(rel, State.PENDING, size, mtime_ns))

    def uploading(self, rel: str, size: int, mtime_ns: int, item_id: str, upload_id: str, offset: int) -> None:
        """Girder holds ``offset`` bytes of upload ``upload_id``: a rerun resumes there."""
        self._put(Record(rel, State.UPLOADING, size, mtime_ns, upload_id, offset, item_id))

    def done(self, rel: str, size: int, mtime_ns: int, item_id: str, file_id: str, sha256: str) -> None:
        self._put(Record(rel, State.DONE, size, mtime_ns, None, size, item_id, file_id, sha256))

    def done_many(self, records: list[Record]) -> None:
        """Files Girder holds in full with their sha256 set, in one transaction."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany(_PUT, [_row(r) for r in records])

    def _put(self, r: Record) -> None:
        with self._lock:
            self._db.execute(_PUT, _row(r))


_PUT = "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _row(r: Record) -> tuple[object, ...]:
    return (r.rel, r.state.value, r.size, r.mtime_ns, r.upload_id, r.offset, r.item_id, r.file_id, r.sha256)
