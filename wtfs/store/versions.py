"""Versions on disk: hard-link snapshots of the workspace, each with a manifest.

Layout under ``state_dir/versions/``: one directory per version id holding ``workspace/`` and
``manifest.json`` (id, name, created, dataSet, files). A version's id never changes; its name
does. A snapshot is built under ``.tmp-<id>`` and renamed into place, so a failed one leaves
nothing. All methods are synchronous and process-safe (flock), so the CLI and the daemon can
share one store; the daemon calls them in worker threads.
"""

from __future__ import annotations

import contextlib
import fcntl
import filecmp
import json
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import Spec
from ..errors import Busy, Exists, InvalidName, MountError, NotFound, WtfsError
from .links import LinkIndex, shared_files
from .snapshot import CopyIf, copy_file, snapshot


class Unchanged(WtfsError):
    """``create`` without force found nothing changed since ``version``."""

    def __init__(self, version: Version) -> None:
        super().__init__(f"no change since version {version.name!r} ({version.id})")
        self.version = version


@dataclass(frozen=True)
class Version:
    id: str
    name: str
    created: float
    path: Path

    @property
    def workspace(self) -> Path:
        return self.path / "workspace"


def check_name(name: str) -> str:
    """A version or run name must be one valid filename."""
    if not name or name in {".", ".."} or "/" in name or "\0" in name or len(name.encode()) > 255:
        raise InvalidName(f"{name!r} is not a valid file name")
    if name.startswith("."):
        raise InvalidName(f"{name!r}: names starting with '.' are reserved")
    return name


def default_name(taken: set[str]) -> str:
    """The local time, sortable and safe in a shell or a URL (``2026-11-30T12.00.00``); the
    reference API's ``%c`` has spaces and colons that every user would have to quote."""
    base = time.strftime("%Y-%m-%dT%H.%M.%S")
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def same_filesystem(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


class VersionStore:
    def __init__(self, state_dir: Path, workspace: Path, dataset: list[dict[str, Any]] | None = None) -> None:
        self.root = state_dir / "versions"
        self.workspace = workspace
        self.dataset = dataset or []
        self.links = LinkIndex(self.root / ".links.db")

    def prepare(self) -> None:
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # versions are read through the mount, never directly by users
        if not same_filesystem(self.workspace, self.root):
            raise MountError(
                f"state_dir {self.root.parent} and workspace {self.workspace} are on different filesystems:"
                " versions are hard links, so they must share one"
            )
        for leftover in self.root.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in self.root.glob(".trash-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if self.links.create():  # a store from before the index: find what its versions share
            for version in self.all():
                self.links.add(version.id, shared_files(version.workspace))

    # -- locking ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, name: str, blocking: bool = True) -> Iterator[None]:
        fd = os.open(self.root / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                raise Busy("another version is being created for this session") from None
            yield
        finally:
            os.close(fd)

    # -- reading ----------------------------------------------------------------------------

    def all(self) -> list[Version]:
        versions = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                version = self._load(Path(entry.path))
                if version is not None:
                    versions.append(version)
        return sorted(versions, key=lambda v: (v.created, v.id))

    def _load(self, path: Path) -> Version | None:
        """From the small ``version.json`` (id, name, time): listings never parse manifests."""
        try:
            summary = json.loads((path / "version.json").read_text())
        except (OSError, ValueError):
            return None
        return Version(summary["id"], summary["name"], summary["createdTs"], path)

    def get(self, name: str) -> Version:
        for version in self.all():
            if version.name == name:
                return version
        raise NotFound(f"no version named {name!r}")

    def by_id(self, version_id: str) -> Version:
        version = self._load(self.root / version_id)
        if version is None:
            raise NotFound(f"no version {version_id}")
        return version

    def latest(self) -> Version | None:
        versions = self.all()
        return versions[-1] if versions else None

    # -- creating ---------------------------------------------------------------------------

    def create(self, name: str | None = None, force: bool = True, copy_if: CopyIf | None = None) -> Version:
        """Snapshot the workspace; EBUSY if a creation is already running, EEXIST for a taken name.

        ``copy_if(stat)`` names files to copy rather than link (those open for writing)."""
        with self._lock("create", blocking=False):
            taken = {v.name for v in self.all()}
            name = check_name(name) if name is not None else default_name(taken)
            if name in taken:
                raise Exists(f"version {name!r} exists")
            if not force:
                latest = self.latest()
                if latest is not None and not self.changed_since(latest):
                    raise Unchanged(latest)
            version_id = uuid.uuid4().hex[:24]
            temp = self.root / f".tmp-{version_id}"
            try:
                taken_files = snapshot(self.workspace, temp / "workspace", copy_if)
                files = taken_files.files
                created = time.time()
                manifest = {
                    "id": version_id,
                    "name": name,
                    "created": datetime.fromtimestamp(created, UTC).isoformat(),
                    "createdTs": created,
                    "dataSet": self.dataset,
                    "files": files,
                }
                write_json(temp / "manifest.json", manifest)
                write_json(temp / "version.json", _summary(manifest))
                with self._lock("names"):
                    if name in {v.name for v in self.all()}:
                        raise Exists(f"version {name!r} exists")
                    os.rename(temp, self.root / version_id)
                self.links.add(version_id, taken_files.linked)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
        return Version(version_id, name, created, self.root / version_id)

    def unshare(self, st: os.stat_result) -> None:
        """Before the workspace changes inode ``st``, give each version holding it its own copy.

        Waits for a snapshot in progress (the creation lock), so none can link it unseen."""
        with self._lock("create"):
            for version_id, rel in self.links.holders(st.st_dev, st.st_ino):
                self._private_copy(self.root / version_id / "workspace" / rel, st)
            self.links.forget_inode(st.st_dev, st.st_ino)

    def _private_copy(self, path: Path, st: os.stat_result) -> None:
        """Replace a version's link by a copy of the same bytes, atomically (rename)."""
        try:
            if os.lstat(path).st_ino != st.st_ino:
                return
        except FileNotFoundError:
            return  # the version was deleted meanwhile
        temp = path.with_name(f".copy-{uuid.uuid4().hex[:8]}")
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            copy_file(dir_fd, path.name, temp.name, dst_dir_fd=dir_fd)
            os.rename(temp.name, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp.name, dir_fd=dir_fd)
            raise
        finally:
            os.close(dir_fd)

    def changed_since(self, version: Version) -> bool:
        """True if the workspace differs from ``version`` in content, names, types or modes."""
        return not _same_tree(self.workspace, version.workspace)

    # -- renaming and deleting --------------------------------------------------------------

    def rename(self, old: str, new: str) -> None:
        check_name(new)
        with self._lock("names"):
            versions = self.all()
            if any(v.name == new for v in versions):
                raise Exists(f"version {new!r} exists")
            version = next((v for v in versions if v.name == old), None)
            if version is None:
                raise NotFound(f"no version named {old!r}")
            manifest_path = version.path / "manifest.json"
            manifest = json.loads(manifest_path.read_text())
            manifest["name"] = new
            write_json(manifest_path, manifest)
            write_json(version.path / "version.json", _summary(manifest))

    def delete(self, name: str) -> None:
        with self._lock("names"):
            version = self.get(name)
            holders = self.refs(version.id)
            if holders:
                raise Busy(f"version {name!r} is used by {len(holders)} run(s)")
            trash = self.root / f".trash-{version.id}"
            os.rename(version.path, trash)
        self.links.forget_version(version.id)
        shutil.rmtree(trash, ignore_errors=True)

    # -- references (runs) ------------------------------------------------------------------

    def add_ref(self, version_id: str, holder: str) -> None:
        refs = self.by_id(version_id).path / "refs"
        refs.mkdir(exist_ok=True)
        (refs / holder).touch()

    def drop_ref(self, version_id: str, holder: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / version_id / "refs" / holder).unlink()

    def refs(self, version_id: str) -> list[str]:
        try:
            return sorted(os.listdir(self.root / version_id / "refs"))
        except FileNotFoundError:
            return []


def version_store(spec: Spec) -> VersionStore:
    """The store of a spec's session; its manifests record the spec's data set."""
    assert spec.workspace is not None
    dataset = [
        {
            key: value
            for key, value in (
                ("mountPath", e.mount_path),
                ("url", e.url),
                ("itemId", e.item_id),
                ("folderId", e.folder_id),
                ("size", e.size),
                ("sha256", e.sha256),
            )
            if value is not None
        }
        for e in spec.dataset
    ]
    return VersionStore(spec.state_dir, spec.workspace, dataset)


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    return {key: manifest[key] for key in ("id", "name", "created", "createdTs")}


def write_json(path: Path, data: dict[str, Any]) -> None:
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(data, separators=(",", ":")))  # compact: the C encoder, 10x faster
    os.replace(temp, path)


def _same_tree(a: Path, b: Path) -> bool:
    try:
        left, right = _entries(a), _entries(b)
    except FileNotFoundError:
        return False
    return left.keys() == right.keys() and all(
        _same_entry(a / name, b / name, st, right[name]) for name, st in left.items()
    )


def _same_entry(a: Path, b: Path, st_a: os.stat_result, st_b: os.stat_result) -> bool:
    """Same type and mode, and same content: a shared inode, or equal bytes."""
    if st_a.st_mode != st_b.st_mode:
        return False
    if stat.S_ISDIR(st_a.st_mode):
        return _same_tree(a, b)
    if stat.S_ISLNK(st_a.st_mode):
        return os.readlink(a) == os.readlink(b)
    if (st_a.st_dev, st_a.st_ino) == (st_b.st_dev, st_b.st_ino):
        return True
    return st_a.st_size == st_b.st_size and filecmp.cmp(a, b, shallow=False)


def _entries(path: Path) -> dict[str, os.stat_result]:
    with os.scandir(path) as it:
        return {e.name: e.stat(follow_symlinks=False) for e in it}


__all__ = ["Unchanged", "Version", "VersionStore", "check_name", "default_name"]
