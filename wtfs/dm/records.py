"""The host cache's records in SQLite (WAL), shared by every wtfs daemon on the host.

Tables follow the references: transfers carry the data-manager statuses 0-5, locks carry
sessionId/itemId/ownerId, objects are the registry of cached copies. Every method here is
synchronous and runs in a worker thread (``DataManager`` calls it through ``trio.to_thread``).
"""

from __future__ import annotations

import contextlib
import enum
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..objects import ObjectRef
from ..procfs import pid_alive

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    id TEXT PRIMARY KEY, source TEXT NOT NULL, size INTEGER, sha256 TEXT,
    status TEXT NOT NULL, registered REAL NOT NULL, last_used REAL, last_unlocked REAL,
    disk_bytes INTEGER
);
CREATE TABLE IF NOT EXISTS transfers (
    id INTEGER PRIMARY KEY AUTOINCREMENT, object_id TEXT NOT NULL, source TEXT NOT NULL,
    daemon_id TEXT NOT NULL, session TEXT NOT NULL, status INTEGER NOT NULL,
    size INTEGER, transferred INTEGER NOT NULL DEFAULT 0,
    start_time REAL, end_time REAL, error TEXT, errno INTEGER
);
CREATE INDEX IF NOT EXISTS transfers_object ON transfers (object_id, status);
CREATE TABLE IF NOT EXISTS locks (
    id TEXT PRIMARY KEY, object_id TEXT NOT NULL, session TEXT NOT NULL, owner TEXT NOT NULL,
    daemon_id TEXT NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS locks_object ON locks (object_id);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS daemons (
    id TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL, session TEXT NOT NULL,
    mountpoint TEXT NOT NULL, started REAL NOT NULL, lease_until REAL NOT NULL
);
"""

#: After the tables (and any added column): usage summed from an index, victims read in order.
INDEXES = """
CREATE INDEX IF NOT EXISTS objects_usage ON objects (status, disk_bytes);
CREATE INDEX IF NOT EXISTS objects_idle ON objects (status, COALESCE(last_unlocked, last_used, registered), registered);
"""
#: Columns added since the first schema: (table, column, declaration).
ADDED_COLUMNS = (("objects", "disk_bytes", "INTEGER"),)


class TransferStatus(enum.IntEnum):
    INITIALIZING = 0
    QUEUED = 1
    TRANSFERRING = 2
    DONE = 3
    FAILED = 4
    FAILED_TEMPORARILY = 5


ACTIVE_STATUSES = (TransferStatus.INITIALIZING, TransferStatus.QUEUED, TransferStatus.TRANSFERRING)


class ObjectStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    TRANSFERRING = "TRANSFERRING"
    EVICTED = "EVICTED"
    FAILED = "FAILED"
    REMOTE = "REMOTE"  # a transfer was interrupted (disk full, shutdown): nothing wrong with the object


@dataclass(frozen=True)
class Claim:
    """Outcome of asking to fetch an object: already cached, ours to fetch, or wait for ``transfer_id``."""

    kind: str  # "cached" | "mine" | "wait"
    transfer_id: int | None = None


@dataclass(frozen=True)
class TransferState:
    status: TransferStatus
    owner_alive: bool
    error: str | None
    errno: int | None


class CacheRecords:
    """One SQLite connection, used from one worker thread at a time (the caller's limiter)."""

    def __init__(self, path: Path, lease: float) -> None:
        self.host = socket.gethostname()
        self.lease = lease
        self.conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        self._migrate()
        self.conn.executescript(INDEXES)

    def close(self) -> None:
        self.conn.close()

    def _migrate(self) -> None:
        """Add columns a cache written by an older wtfs lacks (reconciliation fills them)."""
        for table, column, declaration in ADDED_COLUMNS:
            names = {row["name"] for row in self.conn.execute(f"PRAGMA table_info({table})")}
            if column not in names:
                with contextlib.suppress(sqlite3.OperationalError):  # another daemon added it first
                    self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: decisions made inside hold across daemons."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- daemons and leases -----------------------------------------------------------------

    def register_daemon(self, daemon_id: str, session: str, mountpoint: str) -> None:
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO daemons VALUES (?,?,?,?,?,?,?)",
                (daemon_id, os.getpid(), self.host, session, mountpoint, now, now + self.lease),
            )

    def renew_lease(self, daemon_id: str) -> None:
        with self._write() as db:
            db.execute("UPDATE daemons SET lease_until=? WHERE id=?", (time.time() + self.lease, daemon_id))

    def _alive(self, row: sqlite3.Row | None) -> bool:
        if row is None or row["lease_until"] < time.time():
            return False
        return row["host"] != self.host or pid_alive(row["pid"])

    def _daemon_alive(self, db: sqlite3.Connection, daemon_id: str) -> bool:
        return self._alive(db.execute("SELECT * FROM daemons WHERE id=?", (daemon_id,)).fetchone())

    def reclaim_dead(self) -> list[str]:
        """Release locks and interrupt transfers of daemons whose lease expired; return their ids."""
        with self._write() as db:
            dead = [row["id"] for row in db.execute("SELECT * FROM daemons") if not self._alive(row)]
            for daemon_id in dead:
                self._retire(db, daemon_id, "interrupted: its daemon died")
        return dead

    def retire_daemon(self, daemon_id: str) -> None:
        """A clean shutdown: drop this daemon's locks, end its transfers, forget it."""
        with self._write() as db:
            self._retire(db, daemon_id, "interrupted: daemon stopped")

    def _retire(self, db: sqlite3.Connection, daemon_id: str, reason: str) -> None:
        for (object_id,) in db.execute(
            "SELECT DISTINCT object_id FROM locks WHERE daemon_id=?", (daemon_id,)
        ).fetchall():
            db.execute("UPDATE objects SET last_unlocked=? WHERE id=?", (time.time(), object_id))
        db.execute("DELETE FROM locks WHERE daemon_id=?", (daemon_id,))
        for row in db.execute(
            "SELECT id, object_id FROM transfers WHERE daemon_id=? AND status IN (0,1,2)", (daemon_id,)
        ).fetchall():
            self._end_transfer(db, row["id"], TransferStatus.FAILED_TEMPORARILY, reason, None)
            db.execute(
                "UPDATE objects SET status=? WHERE id=? AND status=?",
                (ObjectStatus.FAILED, row["object_id"], ObjectStatus.TRANSFERRING),
            )
        db.execute("DELETE FROM daemons WHERE id=?", (daemon_id,))

    def daemons(self) -> list[dict[str, object]]:
        return [dict(row) for row in self.conn.execute("SELECT * FROM daemons ORDER BY started")]

    def live_daemon_ids(self) -> set[str]:
        return {row["id"] for row in self.conn.execute("SELECT * FROM daemons") if self._alive(row)}

    # -- transfers --------------------------------------------------------------------------

    def claim(self, obj: ObjectRef, daemon_id: str, session: str, is_cached: Callable[[ObjectRef], bool]) -> Claim:
        """Decide, atomically across daemons, who fetches ``obj``: one transfer per object."""
        now = time.time()
        with self._write() as db:
            row = db.execute("SELECT status FROM objects WHERE id=?", (obj.id,)).fetchone()
            if row is not None and row["status"] == ObjectStatus.ACTIVE and is_cached(obj):
                db.execute("UPDATE objects SET last_used=? WHERE id=?", (now, obj.id))
                return Claim("cached")
            running = db.execute(
                "SELECT id, daemon_id FROM transfers WHERE object_id=? AND status IN (0,1,2) ORDER BY id DESC",
                (obj.id,),
            ).fetchall()
            for transfer in running:
                if self._daemon_alive(db, transfer["daemon_id"]):
                    return Claim("wait", transfer["id"])
                self._end_transfer(
                    db, transfer["id"], TransferStatus.FAILED_TEMPORARILY, "interrupted: its daemon died", None
                )
            cursor = db.execute(
                "INSERT INTO transfers (object_id, source, daemon_id, session, status, size, start_time)"
                " VALUES (?,?,?,?,?,?,?)",
                (obj.id, obj.source, daemon_id, session, TransferStatus.TRANSFERRING, obj.size, now),
            )
            db.execute(
                "INSERT INTO objects (id, source, size, sha256, status, registered) VALUES (?,?,?,?,?,?)"
                " ON CONFLICT(id) DO UPDATE SET status=excluded.status",
                (obj.id, obj.source, obj.size, obj.sha256, ObjectStatus.TRANSFERRING, now),
            )
            return Claim("mine", cursor.lastrowid)

    def progress(self, updates: dict[int, tuple[int, int | None]]) -> None:
        with self._write() as db:
            for transfer_id, (transferred, size) in updates.items():
                db.execute(
                    "UPDATE transfers SET transferred=?, size=COALESCE(?, size) WHERE id=? AND status IN (0,1,2)",
                    (transferred, size, transfer_id),
                )

    def finish(self, transfer_id: int, obj: ObjectRef, size: int, disk_bytes: int) -> None:
        """The copy landed: its bytes on disk are recorded here, so usage is a sum, never a scan."""
        with self._write() as db:
            db.execute("UPDATE transfers SET transferred=?, size=? WHERE id=?", (size, size, transfer_id))
            self._end_transfer(db, transfer_id, TransferStatus.DONE, None, None)
            db.execute(
                "UPDATE objects SET status=?, size=?, disk_bytes=?, last_used=? WHERE id=?",
                (ObjectStatus.ACTIVE, size, disk_bytes, time.time(), obj.id),
            )

    def fail(self, transfer_id: int, obj: ObjectRef, status: TransferStatus, error: str, errno: int | None) -> None:
        """End a transfer that did not land; a temporary failure leaves the object remote."""
        after = ObjectStatus.REMOTE if status == TransferStatus.FAILED_TEMPORARILY else ObjectStatus.FAILED
        with self._write() as db:
            self._end_transfer(db, transfer_id, status, error, errno)
            db.execute("UPDATE objects SET status=? WHERE id=?", (after, obj.id))

    @staticmethod
    def _end_transfer(
        db: sqlite3.Connection, transfer_id: int, status: int, error: str | None, errno: int | None
    ) -> None:
        db.execute(
            "UPDATE transfers SET status=?, end_time=?, error=?, errno=? WHERE id=?",
            (status, time.time(), error, errno, transfer_id),
        )

    def transfer_state(self, transfer_id: int) -> TransferState:
        row = self.conn.execute("SELECT * FROM transfers WHERE id=?", (transfer_id,)).fetchone()
        daemon = self.conn.execute("SELECT * FROM daemons WHERE id=?", (row["daemon_id"],)).fetchone()
        return TransferState(TransferStatus(row["status"]), self._alive(daemon), row["error"], row["errno"])

    def transfers(self, object_id: str | None = None) -> list[dict[str, object]]:
        query = "SELECT * FROM transfers"
        args: tuple[str, ...] = ()
        if object_id is not None:
            query, args = query + " WHERE object_id=?", (object_id,)
        return [dict(row) for row in self.conn.execute(query + " ORDER BY id", args)]

    # -- the registry and GC -----------------------------------------------------------------

    def latest_transfer(self, object_id: str) -> dict[str, object] | None:
        row = self.conn.execute(
            "SELECT * FROM transfers WHERE object_id=? ORDER BY id DESC LIMIT 1", (object_id,)
        ).fetchone()
        return None if row is None else dict(row)

    def is_active(self, object_id: str) -> bool:
        row = self.conn.execute("SELECT status FROM objects WHERE id=?", (object_id,)).fetchone()
        return row is not None and row["status"] == ObjectStatus.ACTIVE

    def set_setting(self, key: str, value: str) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO settings VALUES (?,?)", (key, value))

    def setting(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def objects(self) -> list[dict[str, object]]:
        """The registry: every object with its lock count."""
        rows = self.conn.execute(
            "SELECT o.*, (SELECT COUNT(*) FROM locks l WHERE l.object_id = o.id) AS lock_count"
            " FROM objects o ORDER BY o.registered"
        )
        return [dict(row) for row in rows]

    def usage(self) -> int:
        """Bytes on disk of every complete copy, as recorded at landing (an index sum, no scan)."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(disk_bytes), 0) AS n FROM objects WHERE status='ACTIVE'"
        ).fetchone()
        return int(row["n"])

    def eviction_candidates(self, limit: int, offset: int = 0) -> list[tuple[str, int]]:
        """(id, bytes on disk) of unlocked cached copies, least recently unlocked (or used) first,
        read in pages along the ``objects_idle`` index so GC never loads the whole registry."""
        rows = self.conn.execute(
            "SELECT id, COALESCE(disk_bytes, 0) AS n FROM objects o WHERE status='ACTIVE'"
            " AND NOT EXISTS (SELECT 1 FROM locks l WHERE l.object_id=o.id)"
            " ORDER BY COALESCE(last_unlocked, last_used, registered), registered LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [(str(row["id"]), int(row["n"])) for row in rows]

    def evict(self, object_id: str, remove: Callable[[str], int]) -> int | None:
        """Evict one object if still unlocked; ``remove`` deletes its file inside the transaction,
        so a lock arriving now waits for the eviction and then sees the copy gone. Returns the bytes
        freed (as recorded), None when the object was locked or not cached after all."""
        with self._write() as db:
            locked = db.execute("SELECT 1 FROM locks WHERE object_id=? LIMIT 1", (object_id,)).fetchone()
            row = db.execute("SELECT status, disk_bytes FROM objects WHERE id=?", (object_id,)).fetchone()
            if locked or row is None or row["status"] != ObjectStatus.ACTIVE:
                return None
            freed = remove(object_id)
            db.execute("UPDATE objects SET status=?, disk_bytes=NULL WHERE id=?", (ObjectStatus.EVICTED, object_id))
            return freed if row["disk_bytes"] is None else int(row["disk_bytes"])

    def pinned_bytes(self, besides: str) -> int:
        """Bytes that GC cannot free: locked copies and transfers in flight, other than ``besides``.
        Read from the locks and the few transfers, never across the whole registry."""
        locked = self.conn.execute(
            "SELECT COALESCE(SUM(o.size), 0) AS n FROM (SELECT DISTINCT object_id FROM locks) l"
            " JOIN objects o ON o.id = l.object_id WHERE o.status='ACTIVE' AND o.id != ?",
            (besides,),
        ).fetchone()
        landing = self.conn.execute(
            "SELECT COALESCE(SUM(size), 0) AS n FROM objects WHERE status='TRANSFERRING' AND id != ?", (besides,)
        ).fetchone()
        return int(locked["n"]) + int(landing["n"])

    def reconcile(self, present: dict[str, int]) -> tuple[list[str], list[str]]:
        """Set the records right from the disk (``present``: id -> bytes on disk): ACTIVE records
        without a file become EVICTED, recorded sizes that differ are corrected; returns (those
        missing ids, ids of files with no ACTIVE or landing record, to be removed)."""
        with self._write() as db:
            rows = db.execute("SELECT id, status, disk_bytes FROM objects").fetchall()
            status = {str(r["id"]): str(r["status"]) for r in rows}
            active = {i for i, s in status.items() if s == ObjectStatus.ACTIVE}
            landing = {i for i, s in status.items() if s == ObjectStatus.TRANSFERRING}  # renamed, not yet recorded
            missing = sorted(active - present.keys())
            for object_id in missing:
                db.execute("UPDATE objects SET status=?, disk_bytes=NULL WHERE id=?", (ObjectStatus.EVICTED, object_id))
            for r in rows:
                if r["id"] in active and r["id"] in present and r["disk_bytes"] != present[r["id"]]:
                    db.execute("UPDATE objects SET disk_bytes=? WHERE id=?", (present[r["id"]], r["id"]))
            strays = sorted(present.keys() - active - landing)
        return missing, strays

    # -- locks ------------------------------------------------------------------------------

    def add_lock(self, lock_id: str, object_id: str, session: str, owner: str, daemon_id: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO locks VALUES (?,?,?,?,?,?)", (lock_id, object_id, session, owner, daemon_id, time.time())
            )

    def remove_lock(self, lock_id: str) -> None:
        with self._write() as db:
            row = db.execute("SELECT object_id FROM locks WHERE id=?", (lock_id,)).fetchone()
            db.execute("DELETE FROM locks WHERE id=?", (lock_id,))
            if row is not None:
                db.execute("UPDATE objects SET last_unlocked=? WHERE id=?", (time.time(), row["object_id"]))

    def locks(self, object_id: str | None = None) -> list[dict[str, object]]:
        query = "SELECT * FROM locks"
        args: tuple[str, ...] = ()
        if object_id is not None:
            query, args = query + " WHERE object_id=?", (object_id,)
        return [dict(row) for row in self.conn.execute(query, args)]
