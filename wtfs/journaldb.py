"""Private SQLite journals: a 0700 directory, a 0600 file made before SQLite opens it, WAL."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> None:
    """``path`` and its missing parents, 0700 (tightened if it was there already)."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR)


def open_journal(path: Path, schema: str) -> sqlite3.Connection:
    """An autocommit connection for worker threads (callers serialise it with a lock); a kill -9
    loses nothing the OS was given (WAL, synchronous=NORMAL)."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE))
    os.chmod(path, PRIVATE_FILE)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db
