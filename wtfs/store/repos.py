"""The seam between versions/ and runs/ and whoever keeps them: this host (``store.local``) or a
WholeTale server (``store.wholetale``). The views hold one of each and never ask which.

A version or run is an ``Entry``: an id that never changes, a name that may, and its contents
as a ``Contents`` the views know how to serve. Every call may fail with a ``WtfsError``:
NotFound for an unknown name, Exists for a taken one, Busy for a version a run uses or a run
still running (or another version being made), InvalidName, ReadOnly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class LocalTree:
    """A directory on this host that the daemon owns: read by path, or (``writable``, a run's
    workspace) served like the workspace itself."""

    path: Path
    writable: bool = False


@dataclass(frozen=True)
class RemoteEntry:
    """One child of a server's folder: a folder, or a file of ``size`` bytes."""

    id: str
    name: str
    is_dir: bool
    size: int
    mtime_ns: int


class FolderSource(Protocol):
    """Folders and files kept on a server, listed and fetched when asked (never cached)."""

    async def listing(self, folder_id: str) -> list[RemoteEntry]:
        """The folder's children, names already safe as one path component."""
        ...

    async def fetch(self, item_id: str, what: str) -> int:
        """A descriptor, owned by the caller, of a file holding the item's bytes in full."""
        ...


@dataclass(frozen=True)
class RemoteTree:
    """A folder on a server, read-only; ``within``: the child folder of that name instead (a
    run's folder holds its workspace in ``workspace/``, beside the server's own bookkeeping)."""

    source: FolderSource
    folder_id: str
    mtime_ns: int
    within: str = ""


Contents = LocalTree | RemoteTree


@dataclass(frozen=True)
class Entry:
    """A version, or a run (then ``contents`` is its workspace, ``version_id`` its version and
    ``outputs`` its growing ``stdout``/``stderr`` files where this host has them)."""

    id: str
    name: str
    created_ns: int
    contents: Contents
    version_id: str = ""
    outputs: Mapping[str, Path] = field(default_factory=dict)


class Repo(Protocol):
    """What versions/ and runs/ both do: a listing by creation, mkdir, mv and rmdir."""

    async def all(self) -> list[Entry]:
        """Every entry, oldest first (a listing keeps creation order, not name order)."""
        ...

    async def get(self, name: str) -> Entry: ...

    async def create(self, name: str) -> Entry:
        """mkdir: Exists if the name is taken, Busy if another creation is under way."""
        ...

    async def rename(self, old: str, new: str) -> None: ...

    async def delete(self, name: str) -> None:
        """rmdir, contents and all: Busy while something still needs it."""
        ...


class VersionRepo(Repo, Protocol):
    """versions/: ``create`` always takes a new version, changed or not."""


class RunRepo(Repo, Protocol):
    """runs/: ``create`` makes a run of the latest version; the keeper decides when a new version
    is taken first (this host: when the workspace changed; a server: when there is none)."""

    async def status_line(self, run_id: str) -> str:
        """``"<code> <NAME>\\n"`` as it is now."""
        ...

    async def version_name(self, run: Entry) -> str:
        """The current name of the run's version (it follows renames)."""
        ...
