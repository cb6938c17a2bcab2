"""The kernel's mount table and mountpoint checks, used before mounting and by umount/check."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading


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


def mount_fstype(path: str) -> str | None:
    """The filesystem type mounted exactly at ``path`` (e.g. ``fuse.wtfs``), or None."""
    target = os.path.abspath(path)
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        for line in table:
            fields = line.split()
            sep = fields.index("-")
            if _unescape(fields[4]) == target:
                found = fields[sep + 1]
    return found


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
    """Is the wtfs mount at ``mountpoint`` healthy? (for monitoring and ExecStartPost)"""
    from . import runtime

    path = os.path.abspath(mountpoint)
    fstype = mount_fstype(path)
    if fstype is None:
        return False, "not mounted"
    if is_stale(path):
        return False, "stale: its daemon died (Transport endpoint is not connected)"
    record = runtime.read_record(path)
    if record is None:
        return False, f"mounted ({fstype}) but no wtfs daemon is recorded for it"
    pid = int(record.get("pid", 0))
    who = runtime.daemon_of(record)
    if who != "alive":
        return False, f"its daemon (pid {pid}) is gone" + (" (another process has its pid)" if who == "other" else "")
    answered = threading.Event()
    failures: list[str] = []

    def probe() -> None:
        try:
            os.statvfs(path)
        except OSError as exc:
            failures.append(exc.strerror or str(exc))
        answered.set()

    threading.Thread(target=probe, daemon=True).start()
    if not answered.wait(timeout):
        return False, f"daemon pid {pid} does not answer within {timeout:g}s"
    if failures:
        return False, f"the mount answers with an error: {failures[0]}"
    return True, f"ok: session {record.get('session')}, daemon pid {pid}"
