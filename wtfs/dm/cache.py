"""The host cache's files: complete copies under objects/, partial ones under tmp/.

A copy becomes visible only by rename after fsync and verification, so a partial copy is never
served nor counted as cached.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from ..errors import TransferFailed
from ..objects import ObjectRef

log = logging.getLogger(__name__)


class HostCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"

    def prepare(self) -> None:
        for directory in (self.root, self.objects, self.tmp):
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)

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
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644), path

    def commit(self, fd: int, temp: Path, obj: ObjectRef, reported_size: int | None) -> tuple[Path, int]:
        """fsync, check size (and sha256), rename into place; raise TransferFailed otherwise."""
        os.fsync(fd)
        size = os.fstat(fd).st_size
        expected = obj.size if obj.size is not None else reported_size
        if expected is not None and size != expected:
            raise TransferFailed(f"{obj.source}: got {size} bytes, expected {expected}")
        if obj.sha256 is not None:
            digest = _sha256(fd)
            if digest != obj.sha256:
                raise TransferFailed(f"{obj.source}: sha256 mismatch (got {digest[:12]}…, expected {obj.sha256[:12]}…)")
        final = self.path_for(obj.id)
        final.parent.mkdir(exist_ok=True)
        os.fchmod(fd, 0o444)
        os.rename(temp, final)
        return final, size

    def remove(self, object_id: str) -> int:
        """Delete a complete copy; returns the bytes on disk it took."""
        path = self.path_for(object_id)
        try:
            freed = path.stat().st_blocks * 512
        except FileNotFoundError:
            return 0
        path.unlink(missing_ok=True)
        return freed

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
