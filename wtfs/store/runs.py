"""Runs on disk: each run of a version has its own copy of its workspace, a record and its output.

Layout under ``state_dir/runs/<id>/``: ``run.json`` (id, name, versionId, status, exitCode,
times, executor and process ids), ``workspace/`` (a copy of the version's workspace, not links:
the entrypoint writes it in place, outside the mount, and the version must never change),
``stdout`` and ``stderr`` (the
executor's process writes straight into them). Process-safe like the version store.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import Busy, Exists, NotFound
from ..procfs import pid_alive
from .snapshot import CopyIf, snapshot
from .versions import Unchanged, Version, VersionStore, check_name, default_name, write_json


class RunStatus(enum.IntEnum):
    UNKNOWN = 0
    STARTING = 1
    RUNNING = 2
    COMPLETED = 3
    FAILED = 4
    CANCELLED = 5


ACTIVE = (RunStatus.STARTING, RunStatus.RUNNING)
ENDED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


@dataclass(frozen=True)
class Run:
    id: str
    name: str
    version_id: str
    status: RunStatus
    created: float
    path: Path
    record: dict[str, Any]

    @property
    def workspace(self) -> Path:
        return self.path / "workspace"

    @property
    def stdout(self) -> Path:
        return self.path / "stdout"

    @property
    def stderr(self) -> Path:
        return self.path / "stderr"

    @property
    def status_line(self) -> str:
        return f"{int(self.status)} {self.status.name}\n"


class RunStore:
    """``publish``: the spec has ``[publish]``, so each run is created with its ``publish``
    state ``pending`` (the daemon publishes it once it ends, see ``wtfs.publish.runs``)."""

    def __init__(self, state_dir: Path, versions: VersionStore, publish: bool = False) -> None:
        self.root = state_dir / "runs"
        self.versions = versions
        self.publish = publish

    def prepare(self) -> list[Run]:
        """Create the store; runs whose executor died are marked FAILED. Returns those runs."""
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in [*self.root.glob(".tmp-*"), *self.root.glob(".trash-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        orphans = [run for run in self.all() if run.status in ACTIVE and not self.executor_alive(run)]
        for run in orphans:
            self.update(run.id, status=RunStatus.FAILED, endTime=time.time(), error="its executor died")
        return orphans

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- reading ----------------------------------------------------------------------------

    def _load(self, path: Path) -> Run | None:
        try:
            record = json.loads((path / "run.json").read_text())
        except (OSError, ValueError):
            return None
        return Run(
            record["id"],
            record["name"],
            record["versionId"],
            RunStatus(record["status"]),
            record["created"],
            path,
            record,
        )

    def all(self) -> list[Run]:
        runs = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                if not entry.name.startswith("."):
                    run = self._load(Path(entry.path))
                    if run is not None:
                        runs.append(run)
        return sorted(runs, key=lambda r: (r.created, r.id))

    def get(self, name: str) -> Run:
        for run in self.all():
            if run.name == name:
                return run
        raise NotFound(f"no run named {name!r}")

    def by_id(self, run_id: str) -> Run:
        run = self._load(self.root / run_id)
        if run is None:
            raise NotFound(f"no run {run_id}")
        return run

    def executor_alive(self, run: Run) -> bool:
        pid = run.record.get("executorPid")
        return isinstance(pid, int) and pid_alive(pid)

    # -- changing ---------------------------------------------------------------------------

    def create(self, name: str | None, version_id: str) -> Run:
        version = self.versions.by_id(version_id)
        run_id = uuid.uuid4().hex[:24]
        temp = self.root / f".tmp-{run_id}"
        with self._lock():
            taken = {r.name for r in self.all()}
            name = check_name(name) if name is not None else default_name(taken)
            if name in taken:
                raise Exists(f"run {name!r} exists")
            try:
                snapshot(version.workspace, temp / "workspace", link=False)  # the run writes in place
                (temp / "stdout").touch()
                (temp / "stderr").touch()
                record = {
                    "id": run_id,
                    "name": name,
                    "versionId": version.id,
                    "status": int(RunStatus.UNKNOWN),
                    "created": time.time(),
                    "exitCode": None,
                    "startTime": None,
                    "endTime": None,
                }
                if self.publish:
                    record["publish"] = "pending"
                write_json(temp / "run.json", record)
                self.versions.add_ref(version.id, run_id)
                os.rename(temp, self.root / run_id)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                self.versions.drop_ref(version.id, run_id)
                raise
        return self.by_id(run_id)

    def update(self, run_id: str, **fields: Any) -> Run:
        with self._lock():
            run = self.by_id(run_id)
            record = {**run.record, **{k: int(v) if isinstance(v, RunStatus) else v for k, v in fields.items()}}
            write_json(run.path / "run.json", record)
        return self.by_id(run_id)

    def rename(self, old: str, new: str) -> None:
        check_name(new)
        with self._lock():
            runs = self.all()
            if any(r.name == new for r in runs):
                raise Exists(f"run {new!r} exists")
            run = next((r for r in runs if r.name == old), None)
            if run is None:
                raise NotFound(f"no run named {old!r}")
            write_json(run.path / "run.json", {**run.record, "name": new})

    def delete(self, name: str) -> None:
        with self._lock():
            run = self.get(name)
            if run.status in ACTIVE and self.executor_alive(run):
                raise Busy(f"run {name!r} is {run.status.name}")
            trash = self.root / f".trash-{run.id}"
            os.rename(run.path, trash)
        self.versions.drop_ref(run.version_id, run.id)
        shutil.rmtree(trash, ignore_errors=True)


def create_run(
    runs: RunStore, versions: VersionStore, name: str | None, version_name: str | None, copy_if: CopyIf | None = None
) -> Run:
    """A run of the named version, or of the latest one, taken first if the workspace changed
    (``copy_if`` as in ``VersionStore.create``: files open for writing are copied, not linked)."""
    version: Version
    if version_name is not None:
        version = versions.get(version_name)
    else:
        try:
            version = versions.create(None, force=False, copy_if=copy_if)
        except Unchanged as unchanged:
            version = unchanged.version
    return runs.create(name, version.id)
