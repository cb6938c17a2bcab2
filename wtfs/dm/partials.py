"""Partial copies that outlive their transfer, so a later one resumes instead of starting over.

A transfer writes ``tmp/<daemon>.<transfer>.<object>.part`` (what reclaim removes once its
daemon is gone). For providers that resume, the same inode is also linked as
``resume/<object>.part``, beside ``resume/<object>.json`` naming the source and the version of it
the bytes came from (an ETag or Last-Modified). An unmount, a stall or a ``kill -9`` leaves that
second link; the next transfer of the object takes it over and asks only for the rest, guarded
by If-Range. The transfer's owner holds an ``flock`` on it, so a daemon paused past its lease
never shares its partial with the one that took its transfer over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..objects import ObjectRef
from .cache import DIR_MODE, FILE_MODE, HostCache


@dataclass
class Partial:
    """A partial copy: its descriptor, its temp name and (if resumable) its lasting name."""

    fd: int
    path: Path
    resume: Path | None = None
    offset: int = 0
    validator: str | None = None
    parts: list[tuple[int, int, int]] | None = None  # (start, written up to, end) of ranged streams

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def remember(self, source: str, validator: str | None, parts: list[tuple[int, int, int]] | None) -> None:
        """Record which version of ``source`` the bytes are (written before they are) and, for
        ranged streams, how far each range got (written after its bytes)."""
        if self.resume is not None:
            meta: dict[str, object] = {"source": source, "validator": validator, "parts": parts}
            _write_meta(_meta_path(self.resume), meta)

    def discard(self, keep: bool) -> None:
        """Close and remove the temp name; the lasting name too unless ``keep``."""
        self.close()
        self.path.unlink(missing_ok=True)
        if self.resume is not None and not keep:
            forget(self.resume)

    def unkeep(self) -> None:
        """Bytes will be written past the prefix (holes): drop the lasting name, so neither a
        failure nor a crash leaves this partial to be continued from its size."""
        if self.resume is not None:
            forget(self.resume)
            self.resume = None

    def landed(self) -> None:
        """The temp name was renamed into place: the lasting name is no longer needed."""
        if self.resume is not None:
            forget(self.resume)


def open_partial(cache: HostCache, obj: ObjectRef, daemon_id: str, transfer_id: int, resumable: bool) -> Partial:
    """A partial to fill: the kept one of an earlier transfer if it is free and still of this
    source (resumable only with a validator or a checksum to prove the bytes), else a new one."""
    temp = cache.tmp / f"{daemon_id}.{transfer_id}.{obj.id}.part"
    if not resumable:
        return Partial(_create(temp), temp)
    cache.resume.mkdir(mode=DIR_MODE, exist_ok=True)
    kept = cache.resume / f"{obj.id}.part"
    partial, busy = _take_over(kept, temp, obj)
    if partial is not None:
        return partial
    fd = _create(temp)
    if busy:
        return Partial(fd, temp)  # a paused daemon's: never shared, never removed
    fcntl.flock(fd, fcntl.LOCK_EX)  # a new file: nobody else has it
    try:
        forget(kept)  # one of no use: nothing proves its bytes
        os.link(temp, kept)
    except OSError:
        return Partial(fd, temp)
    return Partial(fd, temp, kept)


def _take_over(kept: Path, temp: Path, obj: ObjectRef) -> tuple[Partial | None, bool]:
    """The kept partial of an earlier transfer, if usable; and whether a live transfer holds it."""
    try:
        fd = os.open(kept, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, False
    if not _locked(fd):
        os.close(fd)
        return None, True
    meta = _read_meta(_meta_path(kept))
    validator = meta.get("validator") if meta.get("source") == obj.source else None
    if not isinstance(validator, str) and obj.sha256 is None:
        os.close(fd)
        return None, False
    parts = _parts(meta.get("parts"))
    if parts is None and meta.get("parts") is not None:
        os.close(fd)
        return None, False  # ranges recorded, unreadably: nothing proves which bytes are there
    try:
        temp.unlink(missing_ok=True)
        os.link(kept, temp)
    except OSError:
        os.close(fd)
        raise
    offset = os.fstat(fd).st_size if parts is None else sum(pos - start for start, pos, _ in parts)
    return Partial(fd, temp, kept, offset, validator if isinstance(validator, str) else None, parts), False


def _parts(value: object) -> list[tuple[int, int, int]] | None:
    """Ranges as remembered, if they make sense (else the partial is taken as contiguous)."""
    if not isinstance(value, list) or not value:
        return None
    parts = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 3 and all(isinstance(n, int) for n in item)):
            return None
        start, pos, end = item
        if not 0 <= start <= pos <= end:
            return None
        parts.append((start, pos, end))
    return parts


def _create(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)


def _locked(fd: int) -> bool:
    """Hold the partial for this transfer: False if another live transfer holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


#: A kept partial no transfer took over for this long is removed (``prune``): its source has
#: likely changed or gone, and its bytes count against no capacity.
KEEP_SECONDS = 7 * 24 * 3600.0


def prune(cache: HostCache, landed: Callable[[str], bool], now: float | None = None) -> int:
    """Remove the kept partials nobody will resume: of objects that landed since (``landed``)
    or older than ``KEEP_SECONDS``. One held by a live transfer (its flock) is left alone.
    Returns how many went."""
    if not cache.resume.is_dir():
        return 0
    now = time.time() if now is None else now
    removed = 0
    for kept in cache.resume.glob("*.part"):
        try:
            fd = os.open(kept, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not _locked(fd):
                continue
            stale = now - os.fstat(fd).st_mtime > KEEP_SECONDS
            if stale or landed(kept.stem):
                forget(kept)
                removed += 1
        finally:
            os.close(fd)
    for meta in cache.resume.glob("*.json"):  # one whose partial went (a crash between the two)
        if not meta.with_suffix(".part").exists():
            meta.unlink(missing_ok=True)
    return removed


def forget(kept: Path) -> None:
    kept.unlink(missing_ok=True)
    _meta_path(kept).unlink(missing_ok=True)


def _meta_path(kept: Path) -> Path:
    return kept.with_suffix(".json")


def _read_meta(path: Path) -> dict[str, object]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_meta(path: Path, meta: dict[str, object]) -> None:
    """Atomically, 0600: a crash leaves the old record or the new one, never half of one."""
    temp = path.with_suffix(".json.new")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        os.write(fd, json.dumps(meta).encode())
    finally:
        os.close(fd)
    os.replace(temp, path)
