"""Build the data tree from a spec's entries."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import PurePosixPath

import trio

from ..config import Entry, Spec, local_path
from ..errors import SpecError, WtfsError
from ..objects import ObjectRef
from .girder import GirderContext, resolve_entry
from .nodes import CatalogFile, CatalogNode, StaticDir, local_node

log = logging.getLogger(__name__)

#: Asks a server for an object's size and mtime in ns (HTTP HEAD); None for what it cannot tell,
#: and why it told nothing (e.g. ``HEAD answered 404 Not Found``), None if it answered.
SizeProbe = Callable[[str], Awaitable[tuple[int | None, int | None, str | None]]]
#: Told one line per entry that mounts but will likely fail to open (said by ``wtfs mount``).
Warn = Callable[[str], None]


async def build_catalog(
    spec: Spec, probe_size: SizeProbe, girder: GirderContext | None = None, warn: Warn | None = None
) -> StaticDir:
    """The root of data/: every entry at its mountPath, with intermediate directories."""
    root = StaticDir("")
    nodes: dict[int, CatalogNode] = {}
    errors: list[WtfsError] = []

    said: dict[int, list[str]] = {entry.index: [] for entry in spec.dataset}

    async def resolve(entry: Entry) -> None:
        try:
            nodes[entry.index] = await _entry_node(spec, entry, probe_size, girder, said[entry.index].append)
        except WtfsError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for entry in spec.dataset:
            nursery.start_soon(resolve, entry)
    if errors:
        raise errors[0]  # one clear line: the first entry that cannot be mounted
    for entry in spec.dataset:  # in the spec's order, whatever order the HEADs came back in
        for message in said[entry.index]:
            (warn or _log_warning)(message)
    for entry in spec.dataset:
        place(root, entry.mount_path, nodes[entry.index])
    return root


def _log_warning(message: str) -> None:
    log.warning("%s", message)


async def _entry_node(
    spec: Spec, entry: Entry, probe_size: SizeProbe, girder: GirderContext | None, warn: Warn
) -> CatalogNode:
    name = PurePosixPath(entry.mount_path).name
    if entry.item_id or entry.folder_id:
        assert girder is not None
        key = f"dataset[{entry.index}].{'itemId' if entry.item_id else 'folderId'}"
        try:
            return await resolve_entry(girder, name, entry.item_id, entry.folder_id)
        except WtfsError as exc:
            raise SpecError(str(spec.path), key, str(exc)) from None
    url = entry.url or ""
    if entry.scheme == "globus":
        return CatalogFile(name, ObjectRef.for_source(url, entry.size, entry.sha256), time.time_ns())
    if entry.scheme in {"http", "https"}:
        size, mtime_ns, problem = (entry.size, None, None) if entry.size is not None else await probe_size(url)
        if problem is not None:
            warn(f"data{entry.mount_path}: {problem}: shown as 0 bytes, opening it will likely fail")
        elif size is None:
            log.warning("%s: size unknown until first open (HEAD gave none)", entry.mount_path)
        obj = ObjectRef.for_source(url, size, entry.sha256)
        return CatalogFile(name, obj, mtime_ns or time.time_ns())
    path = local_path(url)
    try:
        path, st = await trio.to_thread.run_sync(_real_stat, path)
    except OSError as exc:
        raise SpecError(str(spec.path), f"dataset[{entry.index}].url", f"{path}: {exc.strerror}") from None
    node = local_node(name, path, st, spec.metadata_ttl)
    if node is None:
        raise SpecError(str(spec.path), f"dataset[{entry.index}].url", f"{path}: not a file or directory")
    if isinstance(node, CatalogFile) and (entry.size is not None or entry.sha256):
        if entry.size is not None and entry.size != st.st_size:
            log.warning("%s: spec size %d differs from %s (%d)", entry.mount_path, entry.size, path, st.st_size)
        node.obj = ObjectRef.for_source(node.obj.source, entry.size or st.st_size, entry.sha256, str(st.st_mtime_ns))
    return node


def _real_stat(path: str) -> tuple[str, os.stat_result]:
    """The operator's path resolved once, at mount time: what is beneath it is then walked
    without following any symlink (``wtfs.confine``)."""
    real = os.path.realpath(path)
    return real, os.stat(real)


def place(root: StaticDir, mount_path: str, node: CatalogNode) -> None:
    """Put ``node`` at ``mount_path`` below ``root``, creating the directories on the way."""
    parts = PurePosixPath(mount_path).parts[1:]
    directory = root
    for part in parts[:-1]:
        child = directory.entries.get(part)
        if not isinstance(child, StaticDir):
            child = directory.entries[part] = StaticDir(part)
        directory = child
    directory.entries[parts[-1]] = node
