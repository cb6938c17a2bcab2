"""What /proc says about a process: alive or not, when it started, its process group, its groups,
whether a signal waits for it.

``/proc/PID/stat`` starts ``PID (COMM) STATE PPID PGRP …`` and COMM may hold spaces and
parentheses, so the fields are split after its last ``)``; that is done here only.
"""

from __future__ import annotations

import os
import signal

#: Signals whose default action does not end a process: ignored (CHLD, CONT, URG, WINCH) or stop.
_HARMLESS_BY_DEFAULT = frozenset(
    {
        signal.SIGCHLD,
        signal.SIGCONT,
        signal.SIGURG,
        signal.SIGWINCH,
        signal.SIGSTOP,
        signal.SIGTSTP,
        signal.SIGTTIN,
        signal.SIGTTOU,
    }
)
_MASKS = ("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")


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


def interrupted(pid: int) -> bool:
    """True if process (or thread) ``pid`` is gone, or a signal is pending for it that it catches
    or that would end it. The kernel holds a process inside a FUSE request it has sent, even one
    being killed, until the filesystem answers; for a caught signal it asks to interrupt the
    request (FUSE_INTERRUPT, which pyfuse3 does not pass on). A daemon that would rather answer
    EINTR than keep such a caller waiting asks this, cheaply, while it waits."""
    status = _status(pid)
    if status is None or status.get("State", "Z").startswith(("Z", "X")):
        return True
    try:
        pnd, shd, blk, ign, cgt = (int(status[name], 16) for name in _MASKS)
    except (KeyError, ValueError):
        return False
    pending = (pnd | shd) & ~blk
    for signum in range(1, pending.bit_length() + 1):
        bit = 1 << (signum - 1)
        if not pending & bit or (ign & bit and not cgt & bit):
            continue
        if cgt & bit or signum not in _HARMLESS_BY_DEFAULT:
            return True
    return False


def _status(pid: int) -> dict[str, str] | None:
    """/proc/PID/status as name -> value, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    return {name: value.strip() for name, _, value in (line.partition(":") for line in lines)}
