"""The run executor: runs an entrypoint in a run's workspace and records it.

The entrypoint's stdout and stderr are the run's output files themselves (opened for append),
so output is byte-accurate, ordered within each stream, live, and never held in memory. The
entrypoint leads its own process group, so cancelling reaches the whole tree.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from ..errors import WtfsError
from ..procfs import group_alive
from .runs import ACTIVE, Run, RunStatus, RunStore


class RunError(WtfsError):
    """The run cannot be started or cancelled in its current state."""


def command_for(workdir: Path, entrypoint: str) -> list[str]:
    path = workdir / entrypoint
    if not path.is_file():
        raise RunError(f"{entrypoint}: no such entrypoint in the run's workspace")
    return [str(path)] if os.access(path, os.X_OK) else ["/bin/sh", str(path)]


def execute(runs: RunStore, run_id: str, workdir: Path, entrypoint: str) -> Run:
    """Run to completion in this process; returns the finished run."""
    run = runs.by_id(run_id)
    if run.status != RunStatus.UNKNOWN:
        raise RunError(f"run {run.name!r} was already started ({run.status.name})")
    runs.update(run_id, status=RunStatus.STARTING, executorPid=os.getpid(), startTime=time.time())
    with open(run.stdout, "ab", buffering=0) as out, open(run.stderr, "ab", buffering=0) as err:
        try:
            proc = subprocess.Popen(
                command_for(workdir, entrypoint),
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        except (OSError, RunError) as exc:
            err.write(f"wtfs: cannot start {entrypoint}: {exc}\n".encode())
            return runs.update(run_id, status=RunStatus.FAILED, exitCode=127, endTime=time.time())
        runs.update(run_id, status=RunStatus.RUNNING, pid=proc.pid)
        previous = signal.signal(signal.SIGTERM, lambda *_: _signal_group(proc.pid, signal.SIGTERM))
        try:
            code = _wait(proc)
        finally:
            signal.signal(signal.SIGTERM, previous)
    cancelled = bool(runs.by_id(run_id).record.get("cancelRequested"))
    status = RunStatus.CANCELLED if cancelled else RunStatus.COMPLETED if code == 0 else RunStatus.FAILED
    return runs.update(run_id, status=status, exitCode=code, endTime=time.time())


def _wait(proc: subprocess.Popen[bytes]) -> int:
    while True:
        try:
            return proc.wait()
        except InterruptedError:
            continue


def cancel(runs: RunStore, run_id: str, grace: float = 10.0) -> Run:
    """SIGTERM the run's process group, SIGKILL after ``grace``; the run ends CANCELLED."""
    run = runs.by_id(run_id)
    if run.status not in ACTIVE:
        raise RunError(f"run {run.name!r} is not running ({run.status.name})")
    runs.update(run_id, cancelRequested=True)
    pgid = run.record.get("pid")
    if isinstance(pgid, int):
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
            while group_alive(pgid):
                time.sleep(0.02)
    deadline = time.monotonic() + 10
    while runs.by_id(run_id).status in ACTIVE and runs.executor_alive(runs.by_id(run_id)):
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if runs.by_id(run_id).status in ACTIVE:  # the executor is gone: record it ourselves
        runs.update(run_id, status=RunStatus.CANCELLED, endTime=time.time())
    return runs.by_id(run_id)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _main(argv: list[str]) -> int:
    """Detached executor: ``python -m wtfs.store.executor STATE_DIR RUN_ID WORKDIR ENTRYPOINT``."""
    from .versions import VersionStore

    state_dir, run_id, workdir, entrypoint = argv
    runs = RunStore(Path(state_dir), VersionStore(Path(state_dir), Path(workdir)))
    run = execute(runs, run_id, Path(workdir), entrypoint)
    return 0 if run.status == RunStatus.COMPLETED else 1


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
