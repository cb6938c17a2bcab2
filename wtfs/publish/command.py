"""``wtfs publish PATH …``: arguments, defaults from the mount PATH is in, and the run.

Exit status: 0 everything uploaded and verified (or already there), 1 some file failed (one
line each) or Girder refused the key or could not be reached, 2 a usage or configuration error.
The API key is read from an environment variable or a file, never taken on the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .. import __version__, runtime
from ..catalog.girder_api import GirderApi, Unreachable, read_secret
from ..config import GirderSettings, Secrets, Spec, WholeTaleSettings, load_spec
from ..errors import SpecError, WtfsError
from ..procfs import pid_alive
from .journal import Journal, journal_path
from .progress import Reporter, Tally, reporter
from .publisher import Options, Publisher
from .remote import CALL_TIMEOUT, Remote, make_client
from .tree import LocalTree, scan

EXIT_FAILED = 1
WHERE = "publish"


@dataclass(frozen=True)
class Target:
    """Where to publish and as whom; ``destination`` names it in the journal's key."""

    api_url: str
    api_key: str | None
    token: str | None
    destination: str
    wtfs_meta: dict[str, Any]


def run(args: argparse.Namespace) -> int:
    """The command; WtfsErrors propagate to the CLI (SpecError → 2, the others → 1)."""
    if args.folder_path and not args.collection:
        raise SpecError(WHERE, "--folder-path", "needs --collection")
    path = Path(os.path.abspath(args.path))
    if not os.path.lexists(path):
        raise SpecError(WHERE, "PATH", f"{args.path}: no such file or directory")
    target = resolve_target(args, path)
    tree = scan(path)
    for rel in tree.skipped:
        print(f"wtfs: publish: {rel}: not a regular file or directory, left out", file=sys.stderr)
    journal = Journal(journal_path(path, target.api_url, target.destination))
    try:
        failures = trio.run(_publish, args, target, tree, journal)
    finally:
        journal.close()
    for failure in failures:
        print(f"wtfs: publish: {failure}", file=sys.stderr)
    return EXIT_FAILED if failures else 0


def resolve_target(args: argparse.Namespace, path: Path) -> Target:
    spec = mount_spec(path)
    settings: GirderSettings | WholeTaleSettings | None = None
    if spec is not None:
        settings = spec.girder or spec.wholetale
    api_url = args.girder_url or (settings.api_url if settings else None)
    if not api_url:
        raise SpecError(WHERE, "--girder-url", "needed: PATH is not in a wtfs mount with [girder] or [wholetale]")
    secrets = _secrets(args, settings)
    api_key, token = read_secret(secrets, WHERE, "girder")
    if args.collection and not args.folder_path:
        args.folder_path = path.name  # Girder keeps items in folders, not in collections
    destination = f"folder:{args.folder_id}" if args.folder_id else f"collection:{args.collection}/{args.folder_path}"
    meta = {"version": __version__, "session": _session(spec), "source": _source(path, spec)}
    return Target(api_url.rstrip("/"), api_key, token, destination, meta)


def _secrets(args: argparse.Namespace, settings: GirderSettings | WholeTaleSettings | None) -> Secrets:
    if args.api_key_env:
        return Secrets(api_key_env=args.api_key_env)
    if args.api_key_file:
        return Secrets(api_key_file=Path(args.api_key_file))
    if settings is not None:
        return settings.secrets
    raise SpecError(WHERE, "--api-key-env", "needed (or --api-key-file): no mount spec gives a key")


def mount_spec(path: Path) -> Spec | None:
    """The spec of the live wtfs mount ``path`` is in, if any."""
    mountpoint = runtime.mountpoint_of(str(path))
    if mountpoint is None:
        return None
    record = runtime.read_record(str(mountpoint)) or {}
    if not pid_alive(int(record.get("pid", 0))) or "spec" not in record:
        return None
    return load_spec(record["spec"], record.get("options", []))


def _session(spec: Spec | None) -> str | None:
    if spec is None:
        return None
    return (spec.wholetale.session_id if spec.wholetale else None) or spec.name


def _source(path: Path, spec: Spec | None) -> dict[str, Any]:
    """The version or run PATH is (name and id), else the path."""
    mountpoint = runtime.mountpoint_of(str(path)) if spec is not None else None
    parts = path.relative_to(mountpoint).parts if mountpoint is not None else ()
    if spec is None or len(parts) != 2 or parts[0] not in ("versions", "runs"):
        return {"path": str(path)}
    try:
        from ..store import session_stores

        versions, runs = session_stores(spec)
        found = versions.get(parts[1]) if parts[0] == "versions" else runs.get(parts[1])
    except (WtfsError, OSError):
        return {"path": str(path), parts[0][:-1]: parts[1]}
    return {"path": str(path), parts[0][:-1]: found.name, "id": found.id}


async def _publish(args: argparse.Namespace, target: Target, tree: LocalTree, journal: Journal) -> list[str]:
    tally = Tally(total_files=len(tree.files), total_bytes=tree.total_bytes)
    show = reporter(tally, args.json, args.heartbeat)
    async with make_client(args.jobs) as client:
        remote = Remote(GirderApi(client, target.api_url, target.api_key, target.token, CALL_TIMEOUT))
        await remote.api.authenticate()
        root_id = await _destination(remote, args, target)
        options = Options(target.wtfs_meta, args.jobs, args.chunk_size, not args.no_overwrite)
        publisher = Publisher(remote, journal, options, tally)
        await _showing(show, publisher.publish(tree, root_id))
    show.finish()
    return _failure_lines(publisher)


async def _showing(show: Reporter, work: Awaitable[None]) -> None:
    """Progress shown while ``work`` runs; its WtfsError raised as itself (not in an exception
    group), so the CLI prints its one line."""
    error: WtfsError | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(show.run)
        try:
            await work
        except WtfsError as exc:
            error = exc
        nursery.cancel_scope.cancel()
    if error is not None:
        raise error


def _failure_lines(publisher: Publisher) -> list[str]:
    lines = [str(f) for f in publisher.failures]
    if publisher.not_started:
        why = "Girder stopped answering" if isinstance(publisher.halted, Unreachable) else "access denied"
        lines.append(f"{why}: {publisher.not_started} files not started; run the same command again")
    return lines


async def _destination(remote: Remote, args: argparse.Namespace, target: Target) -> str:
    """The folder id to publish into: --folder-id, or the collection and its path, made as needed."""
    found, _ = await remote.destination(args.folder_id, args.collection, args.folder_path or "", target.wtfs_meta)
    return found
