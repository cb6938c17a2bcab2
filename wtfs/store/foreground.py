"""A run executed by a foreground ``wtfs run start``: Ctrl-C cancels it, and the command exits
with the entrypoint's status as a shell would report it.

The entrypoint leads its own session (so cancelling reaches its whole process tree), which puts
it out of the terminal's reach: Ctrl-C signals only ``wtfs``. The first SIGINT is therefore
passed on to the entrypoint's process group, after the run is marked as cancelled (it ends
CANCELLED, its exit code recorded); a second one kills the group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from .executor import execute
from .runs import ACTIVE, Run, RunStatus, RunStore

#: How long a Ctrl-C that came before the entrypoint started waits for its process group.
START_WAIT = 30.0


def run_in_foreground(runs: RunStore, run_id: str, workdir: Path, entrypoint: str) -> Run:
    """Execute the run here, to its end; Ctrl-C cancels it instead of leaving it behind."""
    with _interrupts_cancel(runs, run_id):
        return execute(runs, run_id, workdir, entrypoint)


def exit_status(run: Run) -> int:
    """The entrypoint's exit code, or 128+N when signal N ended it (130 for Ctrl-C), as shells
    report a command; 1 for a run that never recorded one."""
    code = run.record.get("exitCode")
    if not isinstance(code, int):
        return 0 if run.status == RunStatus.COMPLETED else 1
    return 128 - code if code < 0 else code


@contextlib.contextmanager
def _interrupts_cancel(runs: RunStore, run_id: str) -> Iterator[None]:
    count = 0

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        # Only flags and a thread here: the main thread may hold the run store's flock.
        nonlocal count
        count += 1
        signum = signal.SIGINT if count == 1 else signal.SIGKILL
        threading.Thread(target=_cancel, args=(runs, run_id, signum), daemon=True).start()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _cancel(runs: RunStore, run_id: str, signum: int) -> None:
    """Record the cancellation, then signal the entrypoint's group once it has one."""
    if signum == signal.SIGINT:
        print("wtfs: cancelling the run (Ctrl-C again to kill it)", file=sys.stderr, flush=True)
    runs.update(run_id, cancelRequested=True)
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        run = runs.by_id(run_id)
        pgid = run.record.get("pid")
        if isinstance(pgid, int):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signum)
            return
        if run.status not in (RunStatus.UNKNOWN, *ACTIVE):
            return  # it never started
        time.sleep(0.02)
