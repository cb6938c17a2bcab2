"""runs/: one directory per run, with a live .status, the run's version and its workspace, and
where this host has them, a live .stdout and .stderr.

Live files are opened with direct_io and shown with a zero attribute timeout: ``stat`` gives
the current size and reads never see stale bytes, so ``tail -f`` follows a running run. The
runs are kept by a ``RunRepo`` (this host's store, or a WholeTale server). Where the spec has
``[publish]``, a run marked for it also shows ``.publish``, its publish state, as live.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..errors import NotFound, ReadOnly
from ..store.repos import Entry, RunRepo
from .base import Attr, Caller, FdFile, Node, OpenFile, wants_write
from .contents import ContentNodes
from .paths import LIVE_TTL

#: A run's publish state line (``"done\n"``…) by its id; None for a run not published.
PublishState = Callable[[str], Awaitable[str | None]]


class RunsDir(Node):
    key = "runs"

    def __init__(self, repo: RunRepo, publish_state: PublishState | None = None) -> None:
        self.repo = repo
        self.publish_state = publish_state
        self.contents = ContentNodes("run")  # a run's workspace, opened once
        self.mtime_ns = time.time_ns()

    async def attr(self) -> Attr:
        return Attr.directory(self.mtime_ns, perm=0o755, ttl=LIVE_TTL)

    def _node(self, run: Entry) -> Node:
        return RunDir(run, self.repo, self.contents, self.publish_state)

    def _changed(self) -> None:
        self.mtime_ns = time.time_ns()

    async def lookup(self, name: str) -> Node:
        return self._node(await self.repo.get(name))

    async def listdir(self) -> list[tuple[str, Node]]:
        return [(r.name, self._node(r)) for r in await self.repo.all()]

    async def mkdir(self, name: str, mode: int, caller: Caller) -> Node:
        run = await self.repo.create(name)
        self._changed()
        return self._node(run)

    async def rename(self, name: str, new_parent: Node, new_name: str, flags: int) -> None:
        if new_parent is not self:
            raise ReadOnly("runs can only be renamed within runs/")
        await self.repo.rename(name, new_name)
        self._changed()

    async def rmdir(self, name: str) -> None:
        run = await self.repo.get(name)
        await self.repo.delete(name)
        self.contents.drop(run.id)
        self._changed()


class RunDir(Node):
    def __init__(
        self, run: Entry, repo: RunRepo, contents: ContentNodes, publish_state: PublishState | None = None
    ) -> None:
        self.run = run
        self.repo = repo
        self.contents = contents
        self.publish_state = publish_state
        self.key = ("run", run.id)

    async def attr(self) -> Attr:
        return Attr.directory(self.run.created_ns, perm=0o755, ttl=LIVE_TTL)

    def _children(self) -> dict[str, Node]:
        run = self.run
        outputs: dict[str, Node] = {f".{which}": OutputNode(run.id, which, path) for which, path in run.outputs.items()}
        return {
            ".status": StatusNode(run, self.repo),
            **outputs,
            "version": VersionLink(run, self.repo),
            "workspace": self.contents.node(run.id, run.contents),
        }

    async def _publish_node(self) -> dict[str, Node]:
        """``.publish`` for a run the daemon publishes (or did)."""
        if self.publish_state is None or await self.publish_state(self.run.id) is None:
            return {}
        return {".publish": PublishNode(self.run.id, self.publish_state)}

    async def lookup(self, name: str) -> Node:
        node = (await self._publish_node()).get(name) if name == ".publish" else self._children().get(name)
        if node is None:
            raise NotFound(name)
        return node

    async def listdir(self) -> list[tuple[str, Node]]:
        return sorted({**self._children(), **await self._publish_node()}.items())


class VersionLink(Node):
    """``version`` → ``../../versions/<the version's current name>``; follows renames."""

    def __init__(self, run: Entry, repo: RunRepo) -> None:
        self.run, self.repo = run, repo
        self.key = ("run-version", run.id)

    async def readlink(self) -> str:
        return f"../../versions/{await self.repo.version_name(self.run)}"

    async def attr(self) -> Attr:
        target = await self.readlink()
        now = time.time_ns()
        return Attr(stat.S_IFLNK | 0o777, len(target.encode()), now, now, now, 1, LIVE_TTL)


class StatusNode(Node):
    """``.status``: the run's status line as it is at this moment."""

    def __init__(self, run: Entry, repo: RunRepo) -> None:
        self.run, self.repo = run, repo
        self.key = ("run-status", run.id)

    async def attr(self) -> Attr:
        line = await self.repo.status_line(self.run.id)
        return Attr.file(len(line.encode()), self.run.created_ns, ttl=LIVE_TTL)

    async def open(self, flags: int) -> OpenFile:
        if wants_write(flags):
            raise ReadOnly(".status is written by the run only")
        await self.repo.status_line(self.run.id)  # ENOENT now for a run that is gone
        return StatusFile(self.repo, self.run.id)


class StatusFile(OpenFile):
    """Each read asks anew: a status read through one handle follows the run."""

    direct_io = True

    def __init__(self, repo: RunRepo, run_id: str) -> None:
        self.repo, self.run_id = repo, run_id

    async def read(self, offset: int, size: int) -> bytes:
        line = (await self.repo.status_line(self.run_id)).encode()
        return line[offset : offset + size]


class PublishNode(Node):
    """``.publish``: ``pending``, ``uploading N/M files``, ``done`` or ``failed: …``, as it is now."""

    def __init__(self, run_id: str, state: PublishState) -> None:
        self.run_id, self.state = run_id, state
        self.key = ("run-publish", run_id)

    async def line(self) -> bytes:
        line = await self.state(self.run_id)
        if line is None:
            raise NotFound(".publish")
        return line.encode()

    async def attr(self) -> Attr:
        return Attr.file(len(await self.line()), time.time_ns(), ttl=LIVE_TTL)

    async def open(self, flags: int) -> OpenFile:
        if wants_write(flags):
            raise ReadOnly(".publish is written by the daemon only")
        await self.line()
        return PublishFile(self)


class PublishFile(OpenFile):
    """Each read asks anew, as for ``.status``."""

    direct_io = True

    def __init__(self, node: PublishNode) -> None:
        self.node = node

    async def read(self, offset: int, size: int) -> bytes:
        return (await self.node.line())[offset : offset + size]


class OutputNode(Node):
    """``.stdout`` or ``.stderr``: a file of this host the run's process appends to."""

    def __init__(self, run_id: str, which: str, path: Path) -> None:
        self.which = which
        self.path = path
        self.key = (f"run-{which}", run_id)

    async def attr(self) -> Attr:
        st = os.stat(self.path)
        return Attr.file(st.st_size, st.st_mtime_ns, ttl=LIVE_TTL)

    async def open(self, flags: int) -> OpenFile:
        if wants_write(flags):
            raise ReadOnly(f".{self.which} is written by the run only")
        return OutputFile(os.open(self.path, os.O_RDONLY | os.O_CLOEXEC))


class OutputFile(FdFile):
    direct_io = True  # the file grows while it is read
