"""The daemon's lifecycle: check, mount, serve, and on unmount or a signal release and exit.

Everything the mount owns lives in one nursery; the finally-block order is the shutdown order:
handles released (their locks go), the data manager retired (its records finished), unmounted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyfuse3
import trio

from . import mounttable, posix, runtime
from .catalog import build_catalog
from .catalog.girder import GIRDER_SCHEME, GirderContext
from .catalog.girder_api import GirderApi, read_secret
from .catalog.nodes import CatalogDir
from .catalog.wholetale import session_tree
from .config import GlobusSettings, Spec, WholeTaleSettings
from .dm import EmbeddedDataManager
from .dm.base import SessionDataManager
from .dm.wholetale import HostSide, WholeTaleDataManager
from .errors import AccessDenied, MountError, WtfsError
from .fs import FsCore, Presentation
from .fs.adapter import Operations
from .log import reopen_log
from .providers import HttpProvider, default_providers
from .providers.girder import GirderProvider
from .providers.globus import GlobusProvider, check_staging, transfer_client
from .providers.http import make_client, probe_size
from .store import session_stores
from .store.local import LocalRuns, LocalVersions
from .store.repos import RunRepo, VersionRepo
from .store.wholetale import tale_repos
from .views import DataContext, DataDir, Node, StaticDirNode
from .views.control import GeneratedFile
from .views.runs import RunsDir
from .views.versions import VersionsDir
from .views.workspace import WorkspaceTree

log = logging.getLogger("wtfs")

#: Upper bound on concurrent FUSE handlers: opens blocked on transfers each hold one.
MAX_FUSE_TASKS = 4096


@dataclass
class ReadyReport:
    """How the daemon tells its starter how the mount went (pipe fd, sd_notify)."""

    fd: int | None = None

    def ready(self) -> None:
        self._send(b"ready\n")
        sd_notify("READY=1")

    def failed(self, message: str) -> None:
        self._send(f"error: {message}\n".encode())

    def _send(self, data: bytes) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, data)
            os.close(self.fd)
        except OSError:
            pass
        self.fd = None


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError as exc:
            log.warning("sd_notify failed: %s", exc)


def check_mountpoint(mountpoint: str) -> None:
    """Refuse a mountpoint we cannot use; recover one left stale by a dead daemon."""
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse is missing: load the fuse module or run with --device /dev/fuse")
    if mounttable.is_stale(mountpoint):
        ok, err = mounttable.fusermount(mountpoint, lazy=True)
        if not ok:
            raise MountError(f"{mountpoint}: stale mount (its daemon died) and lazy unmount failed: {err}")
        log.warning("%s: recovered a stale mount left by a dead daemon", mountpoint)
    if not os.path.isdir(mountpoint):
        raise MountError(f"{mountpoint}: no such directory")
    fstype = mounttable.mount_fstype(mountpoint)
    if fstype is not None and fstype.startswith("fuse"):
        raise MountError(f"{mountpoint}: already mounted ({fstype})")


def fuse_options(spec: Spec) -> set[str]:
    """The kernel checks permissions against what stat shows; no setuid or devices unless asked."""
    options = set(pyfuse3.default_options) | {f"fsname=wtfs:{spec.name}", "subtype=wtfs", "default_permissions"}
    if not spec.mount.suid:
        options.add("nosuid")
    if not spec.mount.dev:
        options.add("nodev")
    if spec.mount.allow_other:
        options.add("allow_other")
    if spec.mount.auto_unmount:
        options.add("auto_unmount")
    if spec.mount.ro:
        options.add("ro")
    return options


def run(spec: Spec, mountpoint: str, report: ReadyReport, log_file: str | None = None) -> int:
    """Serve the mount until unmounted or signalled; the exit status. ``log_file``: where the
    log goes, reopened on SIGHUP (logrotate)."""
    mountpoint = os.path.abspath(mountpoint)
    try:
        check_mountpoint(mountpoint)
        trio.run(_serve, spec, mountpoint, report, log_file)
    except Exception as raised:
        exc = _sole(raised)
        if isinstance(exc, WtfsError):
            report.failed(str(exc))
            log.error("%s", exc)
        else:
            report.failed(f"{type(exc).__name__}: {exc}")
            log.exception("daemon failed", exc_info=exc)
        return 1
    return 0


def _sole(exc: BaseException) -> BaseException:
    """The one error inside nested nursery exception groups, if there is just one."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@dataclass
class Session:
    """One session's tree, ready to be served: the FUSE-free core and the data manager under it."""

    core: FsCore
    dm: SessionDataManager
    closed: bool = False

    async def close(self) -> None:
        """Release every handle (their locks go too), then retire the data manager; once."""
        if self.closed:
            return
        self.closed = True
        with trio.CancelScope(shield=True):
            for failure in await self.core.release_all():
                log.error("releasing a handle at shutdown", exc_info=failure)
            await self.dm.stop()


@contextlib.asynccontextmanager
async def open_session(spec: Spec, mountpoint: str) -> AsyncIterator[Session]:
    """Build the session's tree and core (no mount); on exit, handles released, the DM stopped.

    The daemon serves this through FUSE; tests drive the same core in-process."""
    async with make_client(spec.stall_timeout) as client, trio.open_nursery() as nursery:
        backend = await _data_backend(spec, mountpoint, client, nursery)
        dm, catalog = backend.dm, backend.catalog
        session: Session | None = None
        try:
            data = DataDir(catalog, DataContext(dm, owner=f"{spec.name}@{mountpoint}", ttl=spec.metadata_ttl))
            control = StaticDirNode(
                ".wtfs",
                {
                    "status.json": GeneratedFile.json(".wtfs/status.json", dm.report),
                    "transfers.json": GeneratedFile.json(".wtfs/transfers.json", lambda: _transfers(dm)),
                },
            )
            trees = await backend.trees()
            posix.raise_fd_limit()  # every workspace inode the kernel holds keeps a handle open
            root = StaticDirNode("root", {"data": data, **trees}, hidden={".wtfs": control})
            session = Session(FsCore(root, _presentation(spec)), dm)
            yield session
        finally:
            await (session.close() if session is not None else _shielded(dm.stop()))
            nursery.cancel_scope.cancel()


async def _shielded(work: Awaitable[None]) -> None:
    with trio.CancelScope(shield=True):
        await work


def _presentation(spec: Spec) -> Presentation:
    return Presentation(
        uid=spec.mount.uid if spec.mount.uid is not None else os.getuid(),
        gid=spec.mount.gid if spec.mount.gid is not None else os.getgid(),
        umask=spec.mount.umask or 0,
        statfs_path=str(spec.workspace or spec.cache_dir),
    )


async def _serve(spec: Spec, mountpoint: str, report: ReadyReport, log_file: str | None) -> None:
    async with open_session(spec, mountpoint) as session, trio.open_nursery() as nursery:
        try:
            pyfuse3.init(Operations(session.core), mountpoint, fuse_options(spec))
        except RuntimeError as exc:
            raise MountError(f"{mountpoint}: mount failed: {exc}") from None
        try:  # mounted: from here on, shutdown unmounts
            if threading.current_thread() is threading.main_thread():
                nursery.start_soon(_watch_signals, session.dm.interrupt, log_file)
            nursery.start_soon(_announce, spec, mountpoint, report)
            await pyfuse3.main(min_tasks=2, max_tasks=MAX_FUSE_TASKS)
        finally:
            with trio.CancelScope(shield=True):
                sd_notify("STOPPING=1")
                await session.close()
                pyfuse3.close(unmount=True)
                runtime.remove_record(mountpoint, os.getpid())
            nursery.cancel_scope.cancel()
    log.info("unmounted %s", mountpoint)


@dataclass(frozen=True)
class Backend:
    """What the spec's mode serves: its data manager (started), data/, and the session's other
    trees (workspace/, versions/, runs/), built once the data manager runs."""

    dm: SessionDataManager
    catalog: CatalogDir
    trees: Callable[[], Awaitable[dict[str, Node]]]


async def _data_backend(spec: Spec, mountpoint: str, client: httpx.AsyncClient, nursery: trio.Nursery) -> Backend:
    """The backend chosen by the spec, its data manager started."""
    if spec.wholetale is not None:
        return await _wholetale_backend(spec, spec.wholetale, mountpoint, client, nursery)
    return await _embedded_backend(spec, mountpoint, client, nursery)


async def _wholetale_backend(
    spec: Spec, settings: WholeTaleSettings, mountpoint: str, client: httpx.AsyncClient, nursery: trio.Nursery
) -> Backend:
    """A server's data manager; versions/ and runs/ are the tale's, when the spec names one."""
    api_key, token = read_secret(settings.secrets, str(spec.path), "wholetale")
    api = GirderApi(client, settings.api_url, api_key, token)
    await _login(api, token, settings.api_url)
    owner = f"wtfs:{socket.gethostname()}:{mountpoint}"
    host = HostSide(spec.cache_dir, spec.name, mountpoint, spec.cache, settings.private_storage)
    wt = WholeTaleDataManager(api, host, owner, spec.stall_timeout, settings.session_id, spec.dataset, settings.tale_id)
    try:
        await wt.start(nursery)
    except WtfsError as exc:
        raise MountError(f"{settings.api_url}: {exc}") from None
    return Backend(wt, _followed_session(wt, spec.metadata_ttl), _tale_trees(api, settings.tale_id, wt.local.cache.tmp))


def _followed_session(wt: WholeTaleDataManager, ttl: float) -> CatalogDir:
    """data/ of the server's session, rebuilt whenever the session's data set changes."""
    tree = session_tree(wt.session, wt.api, ttl)

    def rebuild(session: dict[str, Any]) -> None:
        tree.entries = session_tree(session, wt.api, ttl).entries

    wt.on_session_change = rebuild
    return tree


def _tale_trees(api: GirderApi, tale_id: str | None, scratch: Path) -> Callable[[], Awaitable[dict[str, Node]]]:
    """versions/ and runs/ of the tale, kept by the server; none without a tale."""

    async def trees() -> dict[str, Node]:
        return {} if tale_id is None else _repo_trees(*tale_repos(api, tale_id, scratch))

    return trees


async def _embedded_backend(spec: Spec, mountpoint: str, client: httpx.AsyncClient, nursery: trio.Nursery) -> Backend:
    """This host's data manager and providers; workspace/, versions/ and runs/ kept here."""
    http = HttpProvider(client)
    providers = default_providers(http)
    girder = await _girder(spec, client)
    if girder is not None:
        providers.by_scheme[GIRDER_SCHEME] = GirderProvider(girder.api, http)
    if spec.globus is not None:
        providers.by_scheme["globus"] = _globus(spec, spec.globus)
    dm = EmbeddedDataManager(spec.cache_dir, spec.name, mountpoint, providers, spec.stall_timeout, spec.cache)
    await dm.start(nursery)
    try:
        catalog = await build_catalog(spec, lambda url: probe_size(client, url), girder)
    except BaseException:
        with trio.CancelScope(shield=True):
            await dm.stop()
        raise
    return Backend(dm, catalog, lambda: _session_trees(spec))


def _globus(spec: Spec, settings: GlobusSettings) -> GlobusProvider:
    """Check the [globus] section before mounting; the client itself is made on first use."""
    check_staging(settings, spec.cache_dir, str(spec.path))
    return GlobusProvider(settings, transfer_client(settings, str(spec.path)))  # refuses missing credentials now


async def _girder(spec: Spec, client: httpx.AsyncClient) -> GirderContext | None:
    """Log in to Girder at mount time: a refused key or an unreachable server stops the mount."""
    if spec.girder is None:
        return None
    api_key, token = read_secret(spec.girder.secrets, str(spec.path), "girder")
    api = GirderApi(client, spec.girder.api_url, api_key, token)
    await _login(api, token, spec.girder.api_url)
    return GirderContext(api, spec.metadata_ttl, local_roots=tuple(map(str, spec.local_roots)))


async def _login(api: GirderApi, token: str | None, api_url: str) -> None:
    """A refused key or token, or an unreachable server, stops the mount in one line."""
    try:
        await api.authenticate()
        if token is not None and await api.get("user/me", what="the Girder token") is None:
            raise AccessDenied("the Girder token was refused")
    except WtfsError as exc:
        raise MountError(f"{api_url}: {exc}" if api_url not in str(exc) else str(exc)) from None


async def _transfers(dm: SessionDataManager) -> list[dict[str, Any]]:
    report = await dm.report()
    transfers: list[dict[str, Any]] = report["transfers"]
    return transfers


def _repo_trees(versions: VersionRepo, runs: RunRepo) -> dict[str, Node]:
    return {"versions": VersionsDir(versions), "runs": RunsDir(runs)}


async def _session_trees(spec: Spec) -> dict[str, Node]:
    """workspace/, versions/ and runs/ when the spec names a workspace."""
    if spec.workspace is None:
        return {}
    versions, runs = session_stores(spec)
    await trio.to_thread.run_sync(versions.prepare)
    for orphan in await trio.to_thread.run_sync(runs.prepare):
        log.warning("run %r was left %s by an executor that died: marked FAILED", orphan.name, orphan.status.name)
    workspace = WorkspaceTree(str(spec.workspace), unshare=versions.unshare, devices=spec.mount.dev)
    copy_if = workspace.open_for_writing  # files open for writing are copied into a version, not linked
    return {"workspace": workspace.root, **_repo_trees(LocalVersions(versions, copy_if), LocalRuns(runs, copy_if))}


async def _announce(spec: Spec, mountpoint: str, report: ReadyReport) -> None:
    """Report ready only once the mount answers a stat through the kernel."""
    await trio.to_thread.run_sync(os.stat, mountpoint)
    runtime.write_record(
        mountpoint,
        {
            "pid": os.getpid(),
            "mountpoint": mountpoint,
            "session": spec.name,
            "spec": str(spec.path),
            "options": list(spec.options),
            "cache_dir": str(spec.cache_dir),
            "state_dir": str(spec.state_dir),
            "mode": "wholetale" if spec.wholetale else "embedded",
            "workspace": str(spec.workspace) if spec.workspace else None,
            "started": time.time(),
        },
    )
    log.info("mounted session %s at %s", spec.name, mountpoint)
    report.ready()


async def _watch_signals(interrupt: Callable[[], None], log_file: str | None) -> None:
    """SIGTERM and SIGINT unmount; SIGHUP only reopens the log (logrotate's postrotate sends it)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                _reopen(log_file)
                continue
            log.info("%s: releasing locks and unmounting", signal.Signals(signum).name)
            interrupt()
            pyfuse3.terminate()
            return


def _reopen(log_file: str | None) -> None:
    if log_file is None:
        log.info("SIGHUP: the log is this process's stderr (foreground or journal): nothing to reopen")
        return
    try:
        reopen_log(log_file)
    except OSError as exc:
        log.error("SIGHUP: cannot reopen %s: %s; logging on to the old file", log_file, exc.strerror)
        return
    log.info("SIGHUP: log reopened at %s", log_file)
