"""What /proc says about a process: alive or not, when it started, its process group, its groups.

``/proc/PID/stat`` starts ``PID (COMM) STATE PPID PGRP …`` and COMM may hold spaces and
parentheses, so the fields are split after its last ``)``; that is done here only.
"""

from __future__ import annotations

import os


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after COMM (STATE first), or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return fields or None


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (dead, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks after boot (field 22 of stat), or None if it is gone:
    with the pid, it names one process for good, since a reused pid starts later."""
    fields = _stat(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def group_alive(pgid: int) -> bool:
    """True while any live (non-zombie) process is in process group ``pgid``."""
    for entry in os.listdir("/proc"):
        fields = _stat(entry) if entry.isdigit() else None
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def groups_of(pid: int, gid: int) -> set[int]:
    """A process's groups (its gid and supplementary groups), from /proc; just ``gid`` if gone."""
    groups = {gid}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("Groups:"):
                    groups.update(int(g) for g in line.split()[1:])
    except OSError:
        pass
    return groups
