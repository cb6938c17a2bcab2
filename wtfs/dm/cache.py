"""The host cache's files: complete copies under objects/, partial ones under tmp/.

A copy becomes visible only by rename after fsync and verification, so a partial copy is never
served nor counted as cached. Everything here is private to the daemon's user: data sets and
their sources are nobody else's business (directories 0700, files 0600). With ``cache_group``
the group's members may read the copies too: directories 0750 and setgid (what is made inside
takes the group), copies 0640, all of that group. The database stays 0600 whatever the group:
its records hold sources as given (a URL's ``user:pass@``) and transfer errors.
"""

from __future__ import annotations

import grp
import hashlib
import logging
import os
import stat
from functools import cached_property
from pathlib import Path

from ..errors import SpecError, TransferFailed
from ..objects import ObjectRef

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
GROUP_DIR_MODE = 0o2750
GROUP_FILE_MODE = 0o640
#: ``HostCache(group=AS_FOUND)``: keep the group the cache has (its root is setgid), or none.
AS_FOUND = -1
#: The database and the files SQLite keeps beside it (they take the database's mode when made);
#: always FILE_MODE, never the group's.
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


def group_id(name: str) -> int:
    """The gid of ``cache_group`` (a name, or a number), checked before anything is made: only
    root may give files a group it is not in (else every chown would fail mid-mount)."""
    try:
        gid = grp.getgrnam(name).gr_gid
    except KeyError:
        if not name.isdigit():
            raise SpecError("cache_group", "", f"no group named {name!r} on this host") from None
        gid = int(name)
    if os.geteuid() != 0 and gid != os.getegid() and gid not in os.getgroups():
        raise SpecError("cache_group", "", f"{name!r}: this user (uid {os.geteuid()}) is not in that group")
    return gid


def settle(path: Path | str, mode: int, group: int | None) -> bool:
    """Give ``path`` ``mode`` (with a group: exactly, and that group; alone: only take away what
    ``mode`` does not give). True if it had permissions ``mode`` does not give."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    current = stat.S_IMODE(st.st_mode)
    if group is None:
        return tighten(path, mode)
    if st.st_gid != group:
        os.chown(path, -1, group, follow_symlinks=False)  # first: a chown may clear setgid
    if current != mode or st.st_gid != group:
        os.chmod(path, mode, follow_symlinks=False)
    return bool(current & ~mode)


class HostCache:
    def __init__(self, root: Path, group: int | None = AS_FOUND) -> None:
        self.root = root
        self._group = group
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self.resume = root / "resume"  # partials kept for a later transfer (dm/partials.py)

    @cached_property
    def group(self) -> int | None:
        """The group that may read the cache, or None: private to its owner."""
        if self._group != AS_FOUND:
            return self._group
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            return None
        return st.st_gid if st.st_mode & stat.S_ISGID else None

    @property
    def dir_mode(self) -> int:
        return DIR_MODE if self.group is None else GROUP_DIR_MODE

    @property
    def file_mode(self) -> int:
        return FILE_MODE if self.group is None else GROUP_FILE_MODE

    def prepare(self) -> int:
        """Make the directories private (to the owner, or to the owner and the cache's group) and
        the database the owner's alone; returns how many existing paths had looser modes and were
        tightened (a cache made by an older wtfs, or shared more widely before)."""
        tightened = 0
        for directory in (self.root, self.objects, self.tmp):
            directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            tightened += settle(directory, self.dir_mode, self.group)
        for directory in (self.resume,):  # partials stay the owner's
            directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            tightened += tighten(directory, DIR_MODE)
        for kept in os.scandir(self.resume):  # a few partials at most
            tightened += tighten(kept.path, FILE_MODE)
        for shard in os.scandir(self.objects):  # at most 256 shards; their files: see ``scan``
            tightened += shard.is_dir(follow_symlinks=False) and settle(shard.path, self.dir_mode, self.group)
        os.close(os.open(self.db_path, os.O_RDWR | os.O_CREAT, FILE_MODE))  # before SQLite makes it 0644
        for suffix in DB_SUFFIXES:  # a group given 0640 by an older wtfs loses it
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

    def open_cached(self, obj: ObjectRef) -> int | None:
        """``is_cached``, opening the copy for reading: its descriptor, or None."""
        try:
            fd = os.open(self.path_for(obj.id), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        if obj.size is None or os.fstat(fd).st_size == obj.size:
            return fd
        os.close(fd)
        return None

    def open_temp(self, obj: ObjectRef, daemon_id: str, transfer_id: int) -> tuple[int, Path]:
        path = self.tmp / f"{daemon_id}.{transfer_id}.{obj.id}.part"
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, FILE_MODE), path

    def commit(
        self, fd: int, temp: Path, obj: ObjectRef, reported_size: int | None, durable: bool = True
    ) -> tuple[Path, int, int]:
        """fsync (unless not ``durable``), check size (and sha256), rename into place; raise
        TransferFailed otherwise. Returns the path, the size and the bytes on disk (what the
        records sum as usage). A copy committed without fsync must have a known size: a crash
        that loses its bytes leaves a file of another size, which ``is_cached`` refuses."""
        if durable:
            os.fsync(fd)
        info = os.fstat(fd)
        size = info.st_size
        expected = obj.size if obj.size is not None else reported_size
        if expected is not None and size != expected:
            raise TransferFailed(f"{obj.source}: got {size} bytes, expected {expected}")
        if obj.sha256 is not None:
            digest = _sha256(fd)
            if digest != obj.sha256:
                raise TransferFailed(f"{obj.source}: sha256 mismatch (got {digest[:12]}…, expected {obj.sha256[:12]}…)")
        final = self.path_for(obj.id)
        if not final.parent.is_dir():
            final.parent.mkdir(mode=DIR_MODE, exist_ok=True)
            settle(final.parent, self.dir_mode, self.group)
        if self.group is not None:
            os.fchown(fd, -1, self.group)
        os.fchmod(fd, self.file_mode)
        os.rename(temp, final)
        return final, size, info.st_blocks * 512

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
                        info = entry.stat(follow_symlinks=False)
                        tightened += self._settle_copy(entry.path, info)
                    except FileNotFoundError:
                        continue
                    sizes[entry.name] = info.st_blocks * 512
        return sizes, tightened

    def _settle_copy(self, path: str, st: os.stat_result) -> bool:
        """Give a copy found on the disk the cache's mode (and group); True if it was looser."""
        wrong_group = self.group is not None and st.st_gid != self.group
        if stat.S_IMODE(st.st_mode) == self.file_mode and not wrong_group:
            return False
        return settle(path, self.file_mode, self.group)

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
