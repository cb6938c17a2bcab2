"""The write-back journal of a WholeTale workspace: local copies waiting to go to the server.

A file written through ``workspace/`` is written into a private local copy (0600, in the state
directory); one SQLite row per path says which copy, which server version it was based on
(``base``: the item's ``updated``, empty for a new file), how often it was changed (``gen``)
and, once sent, the sha256 of the bytes sent. Every change is one autocommitted statement, so a
``kill -9`` after close loses nothing: the next mount finds the row and finishes the upload.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import sqlite3
import stat
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from ..errors import DiskFull, WtfsError
from ..journaldb import PRIVATE_FILE, open_journal, private_dir

P = ParamSpec("P")
T = TypeVar("T")

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


def _journal_errors(method: Callable[Concatenate[WriteBack, P], T]) -> Callable[Concatenate[WriteBack, P], T]:
    """SQLite's and the copies' failures (a full state directory, ...) as WtfsErrors: the view
    answers them with their errno and the uploader logs them; neither ends the mount."""

    @functools.wraps(method)
    def wrapper(self: WriteBack, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            full = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            raise (DiskFull if full else WtfsError)(f"workspace journal in {self.root}: {exc}") from None
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise (DiskFull if full else WtfsError)(f"workspace copies in {self.root}: {exc.strerror or exc}") from None

    return wrapper


class WriteBack:
    """Thread-safe (callers use worker threads): one connection behind a lock, autocommit. Every
    method raises WtfsErrors only (``_journal_errors``)."""

    @_journal_errors
    def __init__(self, root: Path) -> None:
        self.root = root
        private_dir(root)
        self.copies = root / "copies"
        private_dir(self.copies)
        self._lock = threading.Lock()
        self._db = open_journal(root / "journal.sqlite", _SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def copy_path(self, row: Pending) -> Path:
        return self.copies / row.copy

    @_journal_errors
    def get(self, rel: str) -> Pending | None:
        with self._lock:
            row = self._db.execute("SELECT rel, copy, base, gen, open FROM pending WHERE rel = ?", (rel,)).fetchone()
        return None if row is None else Pending(row[0], row[1], row[2], row[3], bool(row[4]))

    @_journal_errors
    def all(self) -> list[Pending]:
        with self._lock:
            rows = self._db.execute("SELECT rel, copy, base, gen, open FROM pending ORDER BY rel").fetchall()
        return [Pending(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    @_journal_errors
    def start(self, rel: str, base: str, fill: int | None) -> Pending:
        """A local copy for ``rel`` (the existing one, or a new one filled from ``fill``, a
        descriptor of the server's bytes, or empty); marked open for writing."""
        row = self.get(rel)
        if row is None:
            name = uuid.uuid4().hex
            fd = os.open(self.copies / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
            try:
                try:
                    if fill is not None:
                        _copy_fd(fill, fd)
                        os.fsync(fd)
                finally:
                    os.close(fd)
                with self._lock:
                    self._db.execute("INSERT INTO pending VALUES (?, ?, ?, 1, 1)", (rel, name, base))
            except BaseException:
                remove_copy(self.copies / name)  # a full disk leaves no orphan copy behind
                raise
        else:
            self._unshare(row)
            with self._lock:
                self._db.execute("UPDATE pending SET open = open + 1, gen = gen + 1 WHERE rel = ?", (rel,))
        found = self.get(rel)
        assert found is not None
        return found

    def _unshare(self, row: Pending) -> None:
        """A copy that was sent may also be the host cache's landed copy (a hard link), or have
        been (a crash kept it, given the cache's mode): before it is written again, the row gets
        a private copy of its own (durable before the row says so)."""
        old = self.copy_path(row)
        try:
            st = os.stat(old)
        except FileNotFoundError:
            return
        if st.st_nlink < 2 and stat.S_IMODE(st.st_mode) == PRIVATE_FILE:
            return
        name = uuid.uuid4().hex
        src = os.open(old, os.O_RDONLY | os.O_CLOEXEC)
        try:
            dst = os.open(self.copies / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
            try:
                _copy_fd(src, dst)
                os.fsync(dst)
            finally:
                os.close(dst)
            with self._lock:
                self._db.execute("UPDATE pending SET copy = ? WHERE rel = ?", (name, row.rel))
        except BaseException:
            remove_copy(self.copies / name)  # a journal that refuses it leaves no orphan copy
            raise
        finally:
            os.close(src)
        remove_copy(old)

    @_journal_errors
    def closed(self, rel: str) -> Pending | None:
        """A writer closed: the row says the copy is complete. No fsync: a killed daemon's
        writes stay in the page cache (fsync on the file asks for more, and gets it)."""
        if self.get(rel) is None:
            return None
        with self._lock:
            self._db.execute("UPDATE pending SET open = max(open - 1, 0), gen = gen + 1 WHERE rel = ?", (rel,))
        return self.get(rel)

    @_journal_errors
    def reopened_all(self) -> None:
        """At start: no writer of a previous daemon is open any more, and a copy no row names
        (a daemon killed while it replaced a row's copy) is removed."""
        with self._lock:
            self._db.execute("UPDATE pending SET open = 0")
            named = {r[0] for r in self._db.execute("SELECT copy FROM pending")}
        for entry in os.scandir(self.copies):
            if entry.name not in named:
                remove_copy(self.copies / entry.name)

    @_journal_errors
    def uploaded(self, rel: str, gen: int, base: str) -> bool:
        """The server holds generation ``gen``: forget the row (True) unless changed since; then
        the next upload is based on what we just sent."""
        with self._lock:
            done = self._db.execute("DELETE FROM pending WHERE rel = ? AND gen = ? AND open = 0", (rel, gen)).rowcount
            if not done:
                self._db.execute("UPDATE pending SET base = ? WHERE rel = ?", (base, rel))
        return bool(done)

    @_journal_errors
    def rebase(self, rel: str, base: str) -> None:
        """The server now holds what we sent: a later upload is based on it, not a conflict."""
        with self._lock:
            self._db.execute("UPDATE pending SET base = ? WHERE rel = ?", (base, rel))

    @_journal_errors
    def rename(self, old: str, new: str) -> None:
        """Rows follow their paths (a directory's rows too); rows the move replaces go, copies too."""
        if old == new:
            return
        with self._lock:
            where = "FROM pending WHERE rel = ? OR rel LIKE ? ESCAPE '\\'"
            replaced = self._db.execute(f"SELECT copy {where}", (new, _below(new))).fetchall()
            self._db.execute(f"DELETE {where}", (new, _below(new)))
            self._db.execute("UPDATE pending SET rel = ? WHERE rel = ?", (new, old))
            rows = self._db.execute("SELECT rel FROM pending WHERE rel LIKE ? ESCAPE '\\'", (_below(old),)).fetchall()
            for (rel,) in rows:
                self._db.execute("UPDATE pending SET rel = ? WHERE rel = ?", (new + rel[len(old) :], rel))
        for (copy,) in replaced:
            remove_copy(self.copies / copy)

    @_journal_errors
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
    """copy_file_range, or sendfile where the host cache is on another filesystem (EXDEV)."""
    offset = 0
    ranged = True
    while True:
        try:
            sent = os.copy_file_range(src, dst, 1 << 30, offset, offset) if ranged else _send(src, dst, offset)
        except OSError as exc:
            if not ranged or exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            ranged = False
            continue
        if sent == 0:
            return
        offset += sent


def _send(src: int, dst: int, offset: int) -> int:
    os.lseek(dst, offset, os.SEEK_SET)
    return os.sendfile(dst, src, offset, 1 << 30)
