"""The kernel's mount table and mountpoint checks, used before mounting and by umount/check."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1 : i + 4]) == 3 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


FSTYPE = "fuse.wtfs"


def _mounts() -> dict[str, tuple[str, str]]:
    """mountpoint -> (fstype, super options) of the topmost mount at each mountpoint."""
    found: dict[str, tuple[str, str]] = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        for line in table:
            fields = line.split()
            sep = fields.index("-")
            found[_unescape(fields[4])] = (fields[sep + 1], fields[sep + 3] if len(fields) > sep + 3 else "")
    return found


def mount_fstype(path: str) -> str | None:
    """The filesystem type mounted exactly at ``path`` (e.g. ``fuse.wtfs``), or None."""
    mounted = _mounts().get(os.path.abspath(path))
    return mounted[0] if mounted else None


def wtfs_mount_of(path: str) -> Path | None:
    """The innermost wtfs mount holding ``path`` (or at it), for any user: from the mount table,
    not from the runtime records of the mount's owner."""
    mounts = _mounts()
    here = Path(os.path.abspath(path))
    for candidate in (here, *here.parents):
        if mounts.get(str(candidate), ("", ""))[0] == FSTYPE:
            return candidate
    return None


def mount_owner(path: str) -> int | None:
    """The uid that mounted the FUSE mount at ``path`` (its ``user_id=`` option)."""
    options = _mounts().get(os.path.abspath(path), ("", ""))[1].split(",")
    owner = next((option.removeprefix("user_id=") for option in options if option.startswith("user_id=")), None)
    return int(owner) if owner is not None and owner.isdigit() else None


def is_stale(path: str) -> bool:
    """A FUSE mount whose daemon died answers ENOTCONN ("Transport endpoint is not connected")."""
    try:
        os.statvfs(path)  # never answered from the kernel's attribute cache
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def fusermount(path: str, lazy: bool = False) -> tuple[bool, str]:
    """Unmount with fusermount3 (works for the mount's owner without root)."""
    tool = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
    args = [tool, "-u"] + (["-z"] if lazy else []) + [path]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    return proc.returncode == 0, proc.stderr.strip()


def check(mountpoint: str, timeout: float = 10.0) -> tuple[bool, str]:
    """Is the wtfs mount at ``mountpoint`` healthy? (for monitoring and ExecStartPost)

    Its owner checks the recorded daemon; any other user asks the mount itself (``.wtfs/``)."""
    from . import runtime

    path = os.path.abspath(mountpoint)
    fstype = mount_fstype(path)
    if fstype is None:
        return False, "not mounted"
    if is_stale(path):
        return False, "stale: its daemon died (Transport endpoint is not connected)"
    record = runtime.read_record(path)
    if record is None:
        if fstype != FSTYPE:
            return False, f"mounted ({fstype}) but not a wtfs mount"
        return _ask_the_mount(path, timeout)
    pid = int(record.get("pid", 0))
    who = runtime.daemon_of(record)
    if who != "alive":
        return False, f"its daemon (pid {pid}) is gone" + (" (another process has its pid)" if who == "other" else "")
    answered, failure = _within(timeout, lambda: os.statvfs(path))
    if not answered:
        return False, f"daemon pid {pid} does not answer within {timeout:g}s"
    if failure is not None:
        return False, f"the mount answers with an error: {failure.strerror or failure}"
    return True, f"ok: session {record.get('session')}, daemon pid {pid}"


def _ask_the_mount(path: str, timeout: float) -> tuple[bool, str]:
    """A mount of another user: healthy if it answers ``.wtfs/status.json``."""
    status: list[dict[str, Any]] = []
    answered, failure = _within(timeout, lambda: status.append(read_status(path)))
    if not answered:
        return False, f"the mount does not answer within {timeout:g}s"
    if failure is not None:
        return False, unreadable(path, failure)
    return True, f"ok: session {status[0].get('session')}, daemon pid {status[0].get('pid')} (asked through .wtfs/)"


def read_status(mountpoint: str | Path) -> dict[str, Any]:
    """The mount's own ``.wtfs/status.json``: what any user who may enter the mount can see."""
    with open(os.path.join(mountpoint, ".wtfs", "status.json"), encoding="utf-8") as status:
        report = json.load(status)
    return report if isinstance(report, dict) else {}


def unreadable(mountpoint: str | Path, exc: OSError) -> str:
    """One line saying why this user cannot ask the mount, and what would let them."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        owner = mount_owner(str(mountpoint))
        return (
            f"permission denied: only its owner (uid {owner}) may enter this mount; "
            "ask them to mount it with -o allow_other"
        )
    return f"the mount answers with an error: {exc.strerror or exc}"


def _within(timeout: float, probe: Callable[[], object]) -> tuple[bool, OSError | None]:
    """Run ``probe`` in a thread (a hung mount must not hang the caller): (answered, its error)."""
    answered = threading.Event()
    failures: list[OSError] = []

    def run() -> None:
        try:
            probe()
        except OSError as exc:
            failures.append(exc)
        except ValueError as exc:  # not JSON: a mount that is not what it claims
            failures.append(OSError(errno.EIO, f"unreadable status ({exc})"))
        answered.set()

    threading.Thread(target=run, daemon=True).start()
    if not answered.wait(timeout):
        return False, None
    return True, failures[0] if failures else None
