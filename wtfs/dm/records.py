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
#: Usage kept as a running total by triggers, so that reading it costs the same at 10 and at
#: 100,000 cached objects (a SUM over the index grows with them: 60 ms at 100,000). Triggers live
#: in the database: every writer keeps the total, whatever its version.
USAGE = (
    "CREATE TABLE IF NOT EXISTS usage (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL)",
    """CREATE TRIGGER IF NOT EXISTS usage_on_insert AFTER INSERT ON objects WHEN NEW.status = 'ACTIVE'
    BEGIN UPDATE usage SET bytes = bytes + COALESCE(NEW.disk_bytes, 0); END""",
    """CREATE TRIGGER IF NOT EXISTS usage_on_update AFTER UPDATE OF status, disk_bytes ON objects
    WHEN OLD.status = 'ACTIVE' OR NEW.status = 'ACTIVE'
    BEGIN UPDATE usage SET bytes = bytes
        - CASE WHEN OLD.status = 'ACTIVE' THEN COALESCE(OLD.disk_bytes, 0) ELSE 0 END
        + CASE WHEN NEW.status = 'ACTIVE' THEN COALESCE(NEW.disk_bytes, 0) ELSE 0 END; END""",
    """CREATE TRIGGER IF NOT EXISTS usage_on_delete AFTER DELETE ON objects WHEN OLD.status = 'ACTIVE'
    BEGIN UPDATE usage SET bytes = bytes - COALESCE(OLD.disk_bytes, 0); END""",
)
SUM_USAGE = "SELECT COALESCE(SUM(disk_bytes), 0) FROM objects WHERE status='ACTIVE'"
#: Columns added since the first schema: (table, column, declaration).
ADDED_COLUMNS = (("objects", "disk_bytes", "INTEGER"), ("transfers", "heartbeat", "REAL"))


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
    owner: str | None = None  # the daemon fetching it, for "wait"


@dataclass(frozen=True)
class TransferState:
    status: TransferStatus
    owner_alive: bool
    error: str | None
    errno: int | None
    transferred: int = 0
    #: when its owner last said it is alive (bytes, or a server asking to wait): what a waiter
    #: in another daemon judges a stall by
    heartbeat: float | None = None


class Standing(enum.StrEnum):
    """What renewing a lease found: still held, lapsed (others ended its transfers), or gone."""

    HELD = "held"
    LAPSED = "lapsed"
    GONE = "gone"


#: The error of a transfer ended because its owner stopped renewing its lease; the owner may take
#: it back when it resumes (``readopt``), if nobody has claimed the object since.
LAPSED = "interrupted: its daemon stopped renewing its lease"


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
        self._keep_usage()

    def close(self) -> None:
        self.conn.close()

    def _migrate(self) -> None:
        """Add columns a cache written by an older wtfs lacks (reconciliation fills them)."""
        for table, column, declaration in ADDED_COLUMNS:
            names = {row["name"] for row in self.conn.execute(f"PRAGMA table_info({table})")}
            if column not in names:
                with contextlib.suppress(sqlite3.OperationalError):  # another daemon added it first
                    self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def _keep_usage(self) -> None:
        """The usage total and its triggers, with the total's first value, in one transaction (made
        once per cache: later openers only look)."""
        made = "SELECT COUNT(*) FROM sqlite_master WHERE name='usage' OR name LIKE 'usage_on_%'"
        if self.conn.execute(made).fetchone()[0] == len(USAGE) and self._has_usage_row():
            return
        with self._write() as db:
            for statement in USAGE:
                db.execute(statement)
            if db.execute("SELECT 1 FROM usage").fetchone() is None:
                db.execute(f"INSERT INTO usage VALUES (0, ({SUM_USAGE}))")

    def _has_usage_row(self) -> bool:
        return self.conn.execute("SELECT 1 FROM usage WHERE id=0").fetchone() is not None

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

    def renew_lease(self, daemon_id: str) -> Standing:
        """Extend the lease; say whether it had lapsed meanwhile (a pause) or the daemon is gone."""
        now = time.time()
        with self._write() as db:
            row = db.execute("SELECT lease_until FROM daemons WHERE id=?", (daemon_id,)).fetchone()
            db.execute("UPDATE daemons SET lease_until=? WHERE id=?", (now + self.lease, daemon_id))
        if row is None:
            return Standing.GONE
        return Standing.LAPSED if row["lease_until"] < now else Standing.HELD

    def restore_locks(self, daemon_id: str, session: str, held: list[tuple[str, str, str]]) -> None:
        """A daemon forgotten while paused comes back: its held locks ((id, object, owner)) again."""
        with self._write() as db:
            db.executemany(
                "INSERT OR IGNORE INTO locks VALUES (?,?,?,?,?,?)",
                [(lock_id, object_id, session, owner, daemon_id, time.time()) for lock_id, object_id, owner in held],
            )

    def readopt(self, transfer_id: int, daemon_id: str) -> bool:
        """Take back a transfer ended while its owner was paused, unless the object was claimed
        (or landed) since: True if it is the owner's again, to go on with."""
        with self._write() as db:
            row = db.execute(
                "SELECT object_id, status, error FROM transfers WHERE id=? AND daemon_id=?", (transfer_id, daemon_id)
            ).fetchone()
            if row is None or row["status"] in ACTIVE_STATUSES:
                return row is not None
            newer = db.execute(
                "SELECT 1 FROM transfers WHERE object_id=? AND id>? LIMIT 1", (row["object_id"], transfer_id)
            ).fetchone()
            if row["status"] != TransferStatus.FAILED_TEMPORARILY or row["error"] != LAPSED or newer is not None:
                return False
            db.execute(
                "UPDATE transfers SET status=?, end_time=NULL, error=NULL WHERE id=?",
                (TransferStatus.TRANSFERRING, transfer_id),
            )
            db.execute("UPDATE objects SET status=? WHERE id=?", (ObjectStatus.TRANSFERRING, row["object_id"]))
            return True

    def abandon(self, transfer_id: int, error: str) -> None:
        """End a transfer its owner gave up without recording how (or that shows no progress):
        nothing is left TRANSFERRING without someone working on it."""
        with self._write() as db:
            self._end_running(db, transfer_id, error)

    def _alive(self, row: sqlite3.Row | None) -> bool:
        if row is None or row["lease_until"] < time.time():
            return False
        return row["host"] != self.host or pid_alive(row["pid"])

    def _paused(self, row: sqlite3.Row) -> bool:
        """Its lease lapsed but its process is still here (stopped, or starved): it may resume."""
        return row["host"] == self.host and pid_alive(row["pid"])

    def _daemon_alive(self, db: sqlite3.Connection, daemon_id: str) -> bool:
        return self._alive(db.execute("SELECT * FROM daemons WHERE id=?", (daemon_id,)).fetchone())

    def reclaim_dead(self) -> list[str]:
        """End the transfers of daemons whose lease expired, so that others take them over; a
        daemon whose process is gone is also forgotten (its locks released). One whose process is
        still on this host (paused) keeps its record, locks and partials: it may resume. Returns
        the ids of the daemons acted on."""
        acted = []
        with self._write() as db:
            for row in db.execute("SELECT * FROM daemons").fetchall():
                if self._alive(row):
                    continue
                if not self._paused(row):
                    self._retire(db, row["id"], "interrupted: its daemon died")
                    acted.append(row["id"])
                elif self._end_transfers_of(db, row["id"], LAPSED):
                    acted.append(row["id"])
        return acted

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
        self._end_transfers_of(db, daemon_id, reason)
        db.execute("DELETE FROM daemons WHERE id=?", (daemon_id,))

    def _end_transfers_of(self, db: sqlite3.Connection, daemon_id: str, reason: str) -> int:
        """End a daemon's running transfers as interrupted; returns how many."""
        rows = db.execute("SELECT id FROM transfers WHERE daemon_id=? AND status IN (0,1,2)", (daemon_id,)).fetchall()
        for row in rows:
            self._end_running(db, row["id"], reason)
        return len(rows)

    def _end_running(self, db: sqlite3.Connection, transfer_id: int, reason: str) -> None:
        """Interrupt a running transfer: the object goes back to remote unless another transfer
        of it runs (the next open claims it again)."""
        row = db.execute("SELECT object_id FROM transfers WHERE id=? AND status IN (0,1,2)", (transfer_id,)).fetchone()
        if row is None:
            return
        self._end_transfer(db, transfer_id, TransferStatus.FAILED_TEMPORARILY, reason, None)
        self._set_status_unless_running(db, row["object_id"], ObjectStatus.REMOTE, ObjectStatus.TRANSFERRING)

    @staticmethod
    def _set_status_unless_running(db: sqlite3.Connection, object_id: str, status: str, only_from: str | None) -> None:
        """Set an object's status, unless another transfer of it is running (it says TRANSFERRING)."""
        db.execute(
            "UPDATE objects SET status=? WHERE id=? AND (? IS NULL OR status=?) AND NOT EXISTS"
            " (SELECT 1 FROM transfers WHERE object_id=? AND status IN (0,1,2))",
            (status, object_id, only_from, only_from, object_id),
        )

    def daemons(self) -> list[dict[str, object]]:
        return [dict(row) for row in self.conn.execute("SELECT * FROM daemons ORDER BY started")]

    def live_daemon_ids(self) -> set[str]:
        return {row["id"] for row in self.conn.execute("SELECT * FROM daemons") if self._alive(row)}

    def known_daemon_ids(self) -> set[str]:
        """Every daemon still recorded: live, or paused past its lease (whose partials are kept)."""
        return {row["id"] for row in self.conn.execute("SELECT id FROM daemons")}

    # -- transfers --------------------------------------------------------------------------

    def claim(self, obj: ObjectRef, daemon_id: str, session: str, is_cached: Callable[[ObjectRef], bool]) -> Claim:
        """Decide, atomically across daemons, who fetches ``obj``: one transfer per object."""
        now = time.time()
        with self._write() as db:
            if self._touch_if_cached(db, obj, is_cached, now):
                return Claim("cached")
            running = db.execute(
                "SELECT id, daemon_id FROM transfers WHERE object_id=? AND status IN (0,1,2) ORDER BY id DESC",
                (obj.id,),
            ).fetchall()
            for transfer in running:
                if self._daemon_alive(db, transfer["daemon_id"]):
                    return Claim("wait", transfer["id"], transfer["daemon_id"])
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
        now = time.time()
        with self._write() as db:
            for transfer_id, (transferred, size) in updates.items():
                db.execute(
                    "UPDATE transfers SET transferred=?, size=COALESCE(?, size), heartbeat=?"
                    " WHERE id=? AND status IN (0,1,2)",
                    (transferred, size, now, transfer_id),
                )

    def finish(self, transfer_id: int, obj: ObjectRef, size: int, disk_bytes: int) -> int:
        """The copy landed: its bytes on disk are recorded here, so usage is a sum, never a scan.
        Returns the usage after it."""
        with self._write() as db:
            db.execute("UPDATE transfers SET transferred=?, size=? WHERE id=?", (size, size, transfer_id))
            self._end_transfer(db, transfer_id, TransferStatus.DONE, None, None)
            db.execute(
                "UPDATE objects SET status=?, size=?, disk_bytes=?, last_used=? WHERE id=?",
                (ObjectStatus.ACTIVE, size, disk_bytes, time.time(), obj.id),
            )
            return int(db.execute("SELECT bytes FROM usage WHERE id=0").fetchone()[0])

    def fail(self, transfer_id: int, obj: ObjectRef, status: TransferStatus, error: str, errno: int | None) -> None:
        """End a transfer that did not land; a temporary failure leaves the object remote."""
        after = ObjectStatus.REMOTE if status == TransferStatus.FAILED_TEMPORARILY else ObjectStatus.FAILED
        with self._write() as db:
            self._end_transfer(db, transfer_id, status, error, errno)
            self._set_status_unless_running(db, obj.id, after, None)  # one taken over runs on

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
        return TransferState(
            TransferStatus(row["status"]),
            self._alive(daemon),
            row["error"],
            row["errno"],
            row["transferred"],
            row["heartbeat"],
        )

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
        """Bytes on disk of every complete copy, as recorded at landing: one row, kept by triggers."""
        row = self.conn.execute("SELECT bytes FROM usage WHERE id=0").fetchone()
        return int(row["bytes"])

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
            db.execute(f"UPDATE usage SET bytes=({SUM_USAGE})")  # the total checked against the sum, once
        return missing, strays

    # -- locks ------------------------------------------------------------------------------

    def add_lock(self, lock_id: str, object_id: str, session: str, owner: str, daemon_id: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO locks VALUES (?,?,?,?,?,?)", (lock_id, object_id, session, owner, daemon_id, time.time())
            )

    def add_lock_if_cached(
        self,
        lock_id: str,
        obj: ObjectRef,
        session: str,
        owner: str,
        daemon_id: str,
        is_cached: Callable[[ObjectRef], bool],
    ) -> bool:
        """``add_lock``, and in the same transaction whether the copy is cached (then marked used):
        an open of a cached copy is one transaction."""
        now = time.time()
        with self._write() as db:
            db.execute("INSERT INTO locks VALUES (?,?,?,?,?,?)", (lock_id, obj.id, session, owner, daemon_id, now))
            return self._touch_if_cached(db, obj, is_cached, now)

    @staticmethod
    def _touch_if_cached(
        db: sqlite3.Connection, obj: ObjectRef, is_cached: Callable[[ObjectRef], bool], now: float
    ) -> bool:
        """Whether the records and the disk both have the copy; if so it was used ``now``."""
        row = db.execute("SELECT status FROM objects WHERE id=?", (obj.id,)).fetchone()
        if row is None or row["status"] != ObjectStatus.ACTIVE or not is_cached(obj):
            return False
        db.execute("UPDATE objects SET last_used=? WHERE id=?", (now, obj.id))
        return True

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
