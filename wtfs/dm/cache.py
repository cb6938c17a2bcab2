"""The host cache's files: complete copies under objects/, partial ones under tmp/.

A copy becomes visible only by rename after fsync and verification, so a partial copy is never
served nor counted as cached. Everything here is private to the daemon's user: data sets and
their sources are nobody else's business (directories 0700, files 0600).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from ..errors import TransferFailed
from ..objects import ObjectRef

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
#: The database and the files SQLite keeps beside it (they take the database's mode when made).
DB_SUFFIXES = ("", "-wal", "-shm")


def tighten(path: Path | str, mode: int) -> bool:
    """Take from ``path`` any permission ``mode`` does not give; True if it had more."""
    try:
        current = os.stat(path, follow_symlinks=False).st_mode & 0o7777
    except FileNotFoundError:
        return False
    if current & ~mode == 0:
        return False
    os.chmod(path, current & mode, follow_symlinks=False)
    return True


class HostCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"

    def prepare(self) -> int:
        """Make the directories and the database file private; returns how many existing paths
        had looser modes and were tightened (a cache made by an older wtfs)."""
        tightened = 0
        for directory in (self.root, self.objects, self.tmp):
            directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            tightened += tighten(directory, DIR_MODE)
        for shard in os.scandir(self.objects):  # at most 256 shards; their files: see ``scan``
            tightened += shard.is_dir(follow_symlinks=False) and tighten(shard.path, DIR_MODE)
        os.close(os.open(self.db_path, os.O_RDWR | os.O_CREAT, FILE_MODE))  # before SQLite makes it 0644
        for suffix in DB_SUFFIXES:
            tightened += tighten(f"{self.db_path}{suffix}", FILE_MODE)
        return tightened

    @property
    def db_path(self) -> Path:
        return self.root / "cache.db"

    def path_for(self, object_id: str) -> Path:
        return self.objects / object_id[:2] / object_id

    def is_cached(self, obj: ObjectRef) -> bool:
        try:
            size = self.path_for(obj.id).stat().st_size
        except FileNotFoundError:
            return False
        return obj.size is None or size == obj.size

    def open_temp(self, obj: ObjectRef, daemon_id: str, transfer_id: int) -> tuple[int, Path]:
        path = self.tmp / f"{daemon_id}.{transfer_id}.{obj.id}.part"
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, FILE_MODE), path

    def commit(self, fd: int, temp: Path, obj: ObjectRef, reported_size: int | None) -> tuple[Path, int, int]:
        """fsync, check size (and sha256), rename into place; raise TransferFailed otherwise.
        Returns the path, the size and the bytes on disk (what the records sum as usage)."""
        os.fsync(fd)
        stat = os.fstat(fd)
        size = stat.st_size
        expected = obj.size if obj.size is not None else reported_size
        if expected is not None and size != expected:
            raise TransferFailed(f"{obj.source}: got {size} bytes, expected {expected}")
        if obj.sha256 is not None:
            digest = _sha256(fd)
            if digest != obj.sha256:
                raise TransferFailed(f"{obj.source}: sha256 mismatch (got {digest[:12]}…, expected {obj.sha256[:12]}…)")
        final = self.path_for(obj.id)
        final.parent.mkdir(mode=DIR_MODE, exist_ok=True)
        os.fchmod(fd, FILE_MODE)
        os.rename(temp, final)
        return final, size, stat.st_blocks * 512

    def remove(self, object_id: str) -> int:
        """Delete a complete copy; returns the bytes on disk it took."""
        path = self.path_for(object_id)
        try:
            freed = path.stat().st_blocks * 512
        except FileNotFoundError:
            return 0
        path.unlink(missing_ok=True)
        return freed

    def scan(self) -> tuple[dict[str, int], int]:
        """Bytes on disk of every complete copy, per object id, and how many copies were readable
        by others and made private: a walk of ``objects/``, done only to reconcile the records with
        the disk (start-up, ``wtfs cache gc``), never on an open."""
        sizes: dict[str, int] = {}
        tightened = 0
        for shard in os.scandir(self.objects):
            if shard.is_dir(follow_symlinks=False):
                for entry in os.scandir(shard.path):
                    try:
                        stat = entry.stat(follow_symlinks=False)
                        tightened += bool(stat.st_mode & ~FILE_MODE & 0o7777) and tighten(entry.path, FILE_MODE)
                    except FileNotFoundError:
                        continue
                    sizes[entry.name] = stat.st_blocks * 512
        return sizes, tightened

    def discard(self, temp: Path) -> None:
        temp.unlink(missing_ok=True)

    def remove_temps(self, keep_daemons: set[str]) -> int:
        """Remove partial copies of daemons that are gone; returns how many."""
        removed = 0
        for entry in self.tmp.iterdir():
            if entry.name.split(".", 1)[0] not in keep_daemons:
                self.discard(entry)
                removed += 1
        return removed


def _sha256(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, 4 * 1024 * 1024, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()
