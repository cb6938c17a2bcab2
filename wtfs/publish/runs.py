"""``[publish]``: the daemon publishes the workspace of every run that ends to
``<destination>/<run name>`` in Girder.

A run created while the spec has ``[publish]`` carries ``"publish": "pending"`` in its
``run.json``; once the run has ended, the daemon publishes it (one run at a time, as trio tasks
of its loop: the disk work is in worker threads) and writes ``done`` or ``failed: …`` there. The
journal is the run's own (``runs/<id>/publish.sqlite``, gone with the run), so a daemon stopped
mid-way resumes where Girder stands when it starts again; a failed publish is tried again then
too. While uploading, ``.publish`` shows ``uploading N/M files`` from memory.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import trio

from .. import __version__
from ..catalog.girder_api import GirderApi, Unreachable, read_secret
from ..config import GirderSettings, PublishSettings, Spec
from ..errors import NotFound, WtfsError
from ..groups import sole
from ..store.runs import ENDED, Run, RunStore
from .journal import Journal
from .progress import Tally
from .publisher import Options, Publisher
from .remote import CALL_TIMEOUT, Remote, make_client
from .tree import LocalTree, scan

log = logging.getLogger(__name__)

PENDING, UPLOADING, DONE = "pending", "uploading", "done"
JOURNAL = "publish.sqlite"
#: How often the daemon looks for runs that ended (a run.json read each, in a worker thread).
POLL_INTERVAL = 1.0
JOBS = 4


@dataclass
class RunPublishing:
    """Publishes ended runs marked ``pending``; ``state`` is what ``runs/NAME/.publish`` shows."""

    runs: RunStore
    settings: PublishSettings
    girder: GirderSettings
    session: str
    where: str  # the spec's path, for errors about its secrets
    interval: float = POLL_INTERVAL
    live: dict[str, Tally] = field(default_factory=dict)  # run id → the tally of its publish under way

    async def serve(self) -> None:
        """Until cancelled (the daemon stops): publish each run once it has ended. The first
        pass also retries what failed before (the daemon restarting is the retry)."""
        retry_failed = True
        while True:
            due = await trio.to_thread.run_sync(self._due, retry_failed)
            retry_failed = False
            for run in due:
                await self.publish(run)
            await trio.sleep(self.interval)

    def _due(self, retry_failed: bool) -> list[Run]:
        def due(state: Any) -> bool:
            return state in (PENDING, UPLOADING) or (retry_failed and str(state).startswith("failed"))

        return [run for run in self.runs.all() if run.status in ENDED and due(run.record.get("publish"))]

    async def state(self, run_id: str) -> str | None:
        """The publish state line of a run, or None for a run not published."""
        tally = self.live.get(run_id)
        if tally is not None:
            return f"{UPLOADING} {tally.counters.n_files_processed}/{tally.total_files} files\n"
        record = (await trio.to_thread.run_sync(self.runs.by_id, run_id)).record
        state = record.get("publish")
        return None if state is None else f"{state}\n"

    async def publish(self, run: Run) -> None:
        """One run, to ``done`` or ``failed: …`` in its record; cancelled (the daemon stopping),
        it stays ``uploading`` for the next start."""
        log.info("run %r: publishing its workspace", run.name)
        tally = self.live[run.id] = Tally()
        try:
            await self._record(run, UPLOADING)
            outcome = await self._outcome(run, tally)
        finally:
            del self.live[run.id]
        await self._record(run, outcome)
        (log.info if outcome == DONE else log.warning)("run %r: publish %s", run.name, outcome)

    async def _outcome(self, run: Run, tally: Tally) -> str:
        try:
            failures = await self._send(run, tally)
        except Exception as raised:  # any failure ends in the record, never kills the daemon
            exc = sole(raised)
            if not isinstance(exc, WtfsError | OSError):
                log.error("run %r: publish failed unexpectedly", run.name, exc_info=exc)
            return f"failed: {_describe(exc)}"
        if failures:
            more = f" (and {len(failures) - 1} more; see the daemon's log)" if len(failures) > 1 else ""
            for line in failures:
                log.warning("run %r: publish: %s", run.name, line)
            return f"failed: {failures[0]}{more}"
        return DONE

    async def _record(self, run: Run, state: str) -> None:
        with contextlib.suppress(NotFound):  # the run was deleted meanwhile
            await trio.to_thread.run_sync(lambda: self.runs.update(run.id, publish=state))

    async def _send(self, run: Run, tally: Tally) -> list[str]:
        """Publish the run's workspace; the failed files' lines."""
        api_key, token = read_secret(self.girder.secrets, self.where, "girder")
        tree: LocalTree = await trio.to_thread.run_sync(scan, run.workspace)
        tally.total_files, tally.total_bytes = len(tree.files), tree.total_bytes
        meta = {"version": __version__, "session": self.session, "source": _source(run)}
        journal = await trio.to_thread.run_sync(Journal, run.path / JOURNAL)
        try:
            async with make_client(JOBS) as client:
                remote = Remote(GirderApi(client, self.girder.api_url, api_key, token, CALL_TIMEOUT))
                await remote.api.authenticate()
                s = self.settings
                parent, kind = await remote.destination(s.folder_id, s.collection, s.folder_path or "", meta)
                folder = await remote.create_folder(parent, run.name, {"wtfs": meta}, kind)
                publisher = Publisher(remote, journal, Options(meta, JOBS), tally)
                await publisher.publish(tree, folder)
        finally:
            await trio.to_thread.run_sync(journal.close)
        return _failure_lines(publisher, tree)


def _source(run: Run) -> dict[str, Any]:
    return {"path": str(run.workspace), "run": run.name, "id": run.id}


def _failure_lines(publisher: Publisher, tree: LocalTree) -> list[str]:
    lines = [str(f) for f in publisher.failures]
    if publisher.not_started:
        why = "Girder stopped answering" if isinstance(publisher.halted, Unreachable) else "access denied"
        lines.append(f"{why}: {publisher.not_started} of {len(tree.files)} files not started")
    return lines


def _describe(exc: BaseException) -> str:
    if isinstance(exc, WtfsError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror or str(exc)
    return type(exc).__name__


def run_publishing(spec: Spec, runs: RunStore) -> RunPublishing | None:
    """The daemon's publishing of runs, where the spec asks for it (the spec loader checked its needs)."""
    if spec.publish is None or spec.girder is None:
        return None
    return RunPublishing(runs, spec.publish, spec.girder, spec.name, str(spec.path))
