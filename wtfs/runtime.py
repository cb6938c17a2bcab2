"""Runtime records: which daemon serves which mountpoint (for umount, check, status)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def runtime_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/run/wtfs")
    base = os.environ.get("XDG_RUNTIME_DIR")
    return Path(base) / "wtfs" if base else Path(f"/tmp/wtfs-{os.getuid()}")


def record_path(mountpoint: str) -> Path:
    key = hashlib.sha1(os.path.realpath(mountpoint).encode()).hexdigest()[:16]
    return runtime_dir() / f"{key}.json"


def write_record(mountpoint: str, info: dict[str, Any]) -> None:
    path = record_path(mountpoint)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)


def read_record(mountpoint: str) -> dict[str, Any] | None:
    try:
        data = json.loads(record_path(mountpoint).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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
