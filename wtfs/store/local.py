"""versions/ and runs/ kept on this host: the repos over ``VersionStore`` and ``RunStore``.

Creating, renaming and deleting walk, link or copy whole trees and take flocks, so they run in
worker threads; reading one small record (a run's status, a version's name) stays on the loop.
"""

from __future__ import annotations

import trio

from .repos import Entry, LocalTree
from .runs import Run, RunStore, create_run
from .snapshot import CopyIf
from .versions import Version, VersionStore


def version_entry(version: Version) -> Entry:
    return Entry(version.id, version.name, int(version.created * 1e9), LocalTree(version.path))


def run_entry(run: Run) -> Entry:
    """A run's workspace is its own copy, written in place: served writable, like the workspace."""
    outputs = {"stdout": run.stdout, "stderr": run.stderr}
    return Entry(run.id, run.name, int(run.created * 1e9), LocalTree(run.workspace, True), run.version_id, outputs)


class LocalVersions:
    """``copy_if`` names the files open for writing through the mount: a snapshot copies them."""

    def __init__(self, store: VersionStore, copy_if: CopyIf | None = None) -> None:
        self.store = store
        self.copy_if = copy_if

    async def all(self) -> list[Entry]:
        return [version_entry(v) for v in await trio.to_thread.run_sync(self.store.all)]

    async def get(self, name: str) -> Entry:
        return version_entry(await trio.to_thread.run_sync(self.store.get, name))

    async def create(self, name: str) -> Entry:
        return version_entry(await trio.to_thread.run_sync(self.store.create, name, True, self.copy_if))

    async def rename(self, old: str, new: str) -> None:
        await trio.to_thread.run_sync(self.store.rename, old, new)

    async def delete(self, name: str) -> None:
        await trio.to_thread.run_sync(self.store.delete, name)


class LocalRuns:
    """``copy_if`` as for versions: a run may take a version of the workspace first."""

    def __init__(self, runs: RunStore, copy_if: CopyIf | None = None) -> None:
        self.runs = runs
        self.copy_if = copy_if

    async def all(self) -> list[Entry]:
        return [run_entry(r) for r in await trio.to_thread.run_sync(self.runs.all)]

    async def get(self, name: str) -> Entry:
        return run_entry(await trio.to_thread.run_sync(self.runs.get, name))

    async def create(self, name: str) -> Entry:
        run = await trio.to_thread.run_sync(create_run, self.runs, self.runs.versions, name, None, self.copy_if)
        return run_entry(run)

    async def rename(self, old: str, new: str) -> None:
        await trio.to_thread.run_sync(self.runs.rename, old, new)

    async def delete(self, name: str) -> None:
        await trio.to_thread.run_sync(self.runs.delete, name)

    async def status_line(self, run_id: str) -> str:
        run = await trio.to_thread.run_sync(self.runs.by_id, run_id)  # a JSON read: off the loop
        return run.status_line

    async def version_name(self, run: Entry) -> str:
        version = await trio.to_thread.run_sync(self.runs.versions.by_id, run.version_id)
        return version.name
