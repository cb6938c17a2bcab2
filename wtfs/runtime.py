"""Runtime records: which daemon serves which mountpoint (for umount, check, status).

A record names its daemon by pid *and* start time (from /proc): a pid alone may have been
reused by any process since. Records are private (directory 0700, files 0600), and those of
daemons that are gone are removed by the next mount and by ``wtfs umount``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from .procfs import pid_alive, start_time

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


def runtime_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/run/wtfs")
    base = os.environ.get("XDG_RUNTIME_DIR")
    return Path(base) / "wtfs" if base else Path(f"/tmp/wtfs-{os.getuid()}")


def record_path(mountpoint: str) -> Path:
    key = hashlib.sha1(os.path.realpath(mountpoint).encode()).hexdigest()[:16]
    return runtime_dir() / f"{key}.json"


def _prepare_dir(directory: Path) -> None:
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    mode = directory.stat().st_mode & 0o777
    if mode & ~DIR_MODE:
        directory.chmod(DIR_MODE)
        log.warning("%s was open to other users (mode %o); made private", directory, mode)


def write_record(mountpoint: str, info: dict[str, Any]) -> None:
    """Record the daemon serving ``mountpoint`` (with its start time), after removing the
    records of daemons that are gone."""
    path = record_path(mountpoint)
    _prepare_dir(path.parent)
    prune_dead()
    if isinstance(info.get("pid"), int):
        info = {**info, "start_time": start_time(info["pid"])}
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), "w") as out:
        out.write(json.dumps(info))
    tmp.replace(path)


def read_record(mountpoint: str) -> dict[str, Any] | None:
    return _read(record_path(mountpoint))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def daemon_of(record: dict[str, Any]) -> str:
    """``alive`` if the recorded daemon still runs, ``gone`` if no process has its pid, ``other``
    if the pid now belongs to another process (its start time differs from the recorded one)."""
    pid = record.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return "gone"
    recorded = record.get("start_time")
    if recorded is None:  # written by an older wtfs: the pid is all there is to go by
        return "alive"
    return "alive" if start_time(pid) == recorded else "other"


def prune_dead() -> int:
    """Remove the records of daemons that are gone (killed, crashed); returns how many."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for path in runtime_dir().glob("*.json"):
            record = _read(path)
            if record is not None and daemon_of(record) != "alive":
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def mountpoint_of(path: str) -> Path | None:
    """The innermost parent of ``path`` that a live-recorded wtfs daemon serves."""
    for parent in Path(os.path.abspath(path)).parents:
        if read_record(str(parent)) is not None:
            return parent
    return None


def remove_record(mountpoint: str, pid: int) -> None:
    """Remove the record only if it is still ours (a restart may have replaced it)."""
    record = read_record(mountpoint)
    if record is not None and record.get("pid") == pid:
        record_path(mountpoint).unlink(missing_ok=True)
