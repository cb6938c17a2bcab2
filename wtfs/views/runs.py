"""runs/: one directory per run, with live .status, .stdout and .stderr.

Live files are opened with direct_io and shown with a zero attribute timeout: ``stat`` gives
the current size and reads never see stale bytes, so ``tail -f`` follows a running run.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Hashable

import trio

from ..errors import NotFound, ReadOnly
from ..store.runs import Run, RunStore
from ..store.versions import Unchanged, Version, VersionStore
from .base import Attr, Caller, FdFile, Node, OpenFile, wants_write
from .paths import LIVE_TTL
from .workspace import WorkspaceTree


class RunsDir(Node):
    key = "runs"

    def __init__(self, runs: RunStore, versions: VersionStore) -> None:
        self.runs = runs
        self.versions = versions
        self.mtime_ns = time.time_ns()
        self.trees: dict[str, WorkspaceTree] = {}  # run id -> its workspace, opened once

    async def attr(self) -> Attr:
        return Attr.directory(self.mtime_ns, perm=0o755, ttl=LIVE_TTL)

    def _node(self, run: Run) -> Node:
        return RunDir(run.id, self.runs, self.versions, self._tree)

    def _tree(self, run: Run) -> WorkspaceTree:
        tree = self.trees.get(run.id)
        if tree is None:
            tree = self.trees[run.id] = WorkspaceTree(str(run.workspace), tag=f"run-ws-{run.id}")
        return tree

    async def lookup(self, name: str) -> Node:
        return self._node(await trio.to_thread.run_sync(self.runs.get, name))

    async def listdir(self) -> list[tuple[str, Node]]:
        runs = await trio.to_thread.run_sync(self.runs.all)
        return [(r.name, self._node(r)) for r in runs]

    async def mkdir(self, name: str, mode: int, caller: Caller) -> Node:
        run = await trio.to_thread.run_sync(create_run, self.runs, self.versions, name, None)
        self.mtime_ns = time.time_ns()
        return self._node(run)

    async def rename(self, name: str, new_parent: Node, new_name: str, flags: int) -> tuple[Hashable, Hashable] | None:
        if new_parent is not self:
            raise ReadOnly("runs can only be renamed within runs/")
        await trio.to_thread.run_sync(self.runs.rename, name, new_name)
        self.mtime_ns = time.time_ns()
        return None

    async def rmdir(self, name: str) -> None:
        run = await trio.to_thread.run_sync(self.runs.get, name)
        await trio.to_thread.run_sync(self.runs.delete, name)
        tree = self.trees.pop(run.id, None)
        if tree is not None:
            tree.close()
        self.mtime_ns = time.time_ns()


def create_run(runs: RunStore, versions: VersionStore, name: str | None, version_name: str | None) -> Run:
    """A run of the named version, or of the latest one (taken first if the workspace changed)."""
    version: Version
    if version_name is not None:
        version = versions.get(version_name)
    else:
        try:
            version = versions.create(None, force=False)
        except Unchanged as unchanged:
            version = unchanged.version
    return runs.create(name, version.id)


class RunDir(Node):
    def __init__(
        self, run_id: str, runs: RunStore, versions: VersionStore, tree_of: Callable[[Run], WorkspaceTree]
    ) -> None:
        self.run_id = run_id
        self.runs = runs
        self.versions = versions
        self.tree_of = tree_of
        self.key = ("run", run_id)

    def run(self) -> Run:
        return self.runs.by_id(self.run_id)

    async def attr(self) -> Attr:
        return Attr.directory(int(self.run().created * 1e9), perm=0o755, ttl=LIVE_TTL)

    def _children(self, run: Run) -> dict[str, Node]:
        return {
            ".status": LiveFile(("run-status", run.id), self.runs, run.id, "status"),
            ".stdout": LiveFile(("run-stdout", run.id), self.runs, run.id, "stdout"),
            ".stderr": LiveFile(("run-stderr", run.id), self.runs, run.id, "stderr"),
            "version": VersionLink(run.id, self.runs, self.versions),
            "workspace": self.tree_of(run).root,
        }

    async def lookup(self, name: str) -> Node:
        node = self._children(self.run()).get(name)
        if node is None:
            raise NotFound(name)
        return node

    async def listdir(self) -> list[tuple[str, Node]]:
        return sorted(self._children(self.run()).items())


class VersionLink(Node):
    """``version`` → ``../../versions/<the version's current name>``; follows renames."""

    def __init__(self, run_id: str, runs: RunStore, versions: VersionStore) -> None:
        self.run_id, self.runs, self.versions = run_id, runs, versions
        self.key = ("run-version", run_id)

    async def readlink(self) -> str:
        version = self.versions.by_id(self.runs.by_id(self.run_id).version_id)
        return f"../../versions/{version.name}"

    async def attr(self) -> Attr:
        target = await self.readlink()
        now = time.time_ns()
        return Attr(stat.S_IFLNK | 0o777, len(target.encode()), now, now, now, 1, LIVE_TTL)


class LiveFile(Node):
    """A run's status line or output, as it is at this moment."""

    def __init__(self, key: Hashable, runs: RunStore, run_id: str, which: str) -> None:
        self.key = key
        self.runs = runs
        self.run_id = run_id
        self.which = which

    async def attr(self) -> Attr:
        run = self.runs.by_id(self.run_id)
        if self.which == "status":
            return Attr.file(len(run.status_line), int(run.created * 1e9), ttl=LIVE_TTL)
        st = os.stat(run.path / self.which)
        return Attr.file(st.st_size, st.st_mtime_ns, ttl=LIVE_TTL)

    async def open(self, flags: int) -> OpenFile:
        if wants_write(flags):
            raise ReadOnly(f".{self.which} is written by the run only")
        run = self.runs.by_id(self.run_id)
        if self.which == "status":
            return StatusFile(self.runs, self.run_id)
        return OutputFile(os.open(run.path / self.which, os.O_RDONLY))


class StatusFile(OpenFile):
    direct_io = True

    def __init__(self, runs: RunStore, run_id: str) -> None:
        self.runs, self.run_id = runs, run_id

    async def read(self, offset: int, size: int) -> bytes:
        line = self.runs.by_id(self.run_id).status_line.encode()
        return line[offset : offset + size]


class OutputFile(FdFile):
    direct_io = True  # the file grows while it is read
