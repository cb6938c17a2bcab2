"""The daemon's lifecycle: check, mount, serve, and on unmount or a signal release and exit.

Everything the mount owns lives in one nursery; the finally-block order is the shutdown order:
handles released (their locks go), the data manager retired (its records finished), unmounted.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
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
from .errors import AccessDenied, MountError, SpecError, WtfsError
from .fs import FsCore, Presentation
from .fs.adapter import Operations
from .groups import sole
from .log import mask_credentials, reopen_log
from .objects import ObjectRef
from .providers import HttpProvider, default_providers
from .providers.girder import GirderProvider
from .providers.globus import GlobusProvider, check_staging, transfer_client
from .providers.http import make_client, probe
from .publish.runs import run_publishing
from .store import session_stores
from .store.local import LocalRuns, LocalVersions
from .store.repos import RunRepo, VersionRepo
from .store.wholetale import tale_repos
from .store.wt_workspace import STOP_WAIT, VERSION_WAIT, open_workspace
from .views import DataContext, DataDir, Node, StaticDirNode
from .views.control import GeneratedFile
from .views.runs import PublishState, RunsDir
from .views.versions import VersionsDir
from .views.workspace import WorkspaceTree
from .views.wt_workspace import WsTree

log = logging.getLogger("wtfs")

#: Exit status for a spec (or its environment, e.g. an unset api_key_env) that cannot be used.
EXIT_CONFIG = 2
#: Upper bound on concurrent FUSE handlers: opens blocked on transfers each hold one.
MAX_FUSE_TASKS = 4096
#: Allocations between two passes over the young generation (Python's default: 700).
GC_YOUNG = 100_000


@dataclass
class ReadyReport:
    """How the daemon tells its starter how the mount went (pipe fd, sd_notify)."""

    fd: int | None = None

    def ready(self) -> None:
        self._send(b"ready\n")
        sd_notify("READY=1")

    def warn(self, message: str) -> None:
        """A line the starter says on its stderr before ready (e.g. an entry whose HEAD failed)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.fd, f"warning: {message}\n".encode())

    def failed(self, message: str, config: bool = False) -> None:
        """``config``: the spec or its environment is wrong (the starter exits 2, not 1)."""
        self._send(f"{'config-error' if config else 'error'}: {message}\n".encode())

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
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise MountError(
            f"/dev/fuse: permission denied for uid {os.getuid()}: make it usable by all (chmod 0666 /dev/fuse, "
            "as distributions ship it) or by a group of this user, or mount as root with -o allow_other"
        )
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
    """The kernel checks permissions against what stat shows; no setuid or devices unless asked.

    The fsname is the spec's path, as fstab names it, so ``mount -a`` sees the mount as done."""
    fsname = fuse_escape(mount_source(spec))
    options = set(pyfuse3.default_options) | {f"fsname={fsname}", "subtype=wtfs", "default_permissions"}
    options.add("suid" if spec.mount.suid else "nosuid")  # libfuse's default is nosuid,nodev
    options.add("dev" if spec.mount.dev else "nodev")
    for flag in ("allow_other", "allow_root", "debug"):
        if getattr(spec.mount, flag):
            options.add(flag)
    if spec.mount.auto_unmount:
        options.add("auto_unmount")
    if spec.mount.ro:
        options.add("ro")
    return options


def mount_source(spec: Spec) -> str:
    """``-o fsname=``, else the spec's path; ``wtfs:NAME`` for a path libfuse cannot take (not ASCII)."""
    source = spec.mount.fsname or str(spec.path)
    return source if source.isascii() else f"wtfs:{spec.name}"


def fuse_escape(value: str) -> str:
    """libfuse splits ``-o`` on commas; a backslash keeps one (a spec path may hold any)."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


def run(spec: Spec, mountpoint: str, report: ReadyReport, log_file: str | None = None) -> int:
    """Serve the mount until unmounted or signalled; the exit status. ``log_file``: where the
    log goes, reopened on SIGHUP (logrotate)."""
    mountpoint = os.path.abspath(mountpoint)
    try:
        check_mountpoint(mountpoint)
        trio.run(_serve, spec, mountpoint, report, log_file)
    except Exception as raised:
        exc = sole(raised)
        if isinstance(exc, WtfsError):
            report.failed(str(exc), config=isinstance(exc, SpecError))
            log.error("%s", exc)
            return EXIT_CONFIG if isinstance(exc, SpecError) else 1
        report.failed(f"{type(exc).__name__}: {exc}")
        log.exception("daemon failed", exc_info=exc)
        return 1
    return 0


@dataclass
class Session:
    """One session's tree, ready to be served: the FUSE-free core and the data manager under it."""

    core: FsCore
    dm: SessionDataManager
    closed: bool = False
    #: what was wrong at mount but did not stop it (an entry whose HEAD failed), one line each
    warnings: list[str] = field(default_factory=list)

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
            context = DataContext(
                dm,
                owner=f"{spec.name}@{mountpoint}",
                ttl=spec.metadata_ttl,
                streaming=dm if isinstance(dm, EmbeddedDataManager) else None,
                stream=_stream_rule(spec),
                prefetch_dir=_dir_prefetch(dm, spec.prefetch_dir),
                read_ahead=_read_ahead_files(dm, spec.readahead_files),
                readahead_files=spec.readahead_files,
            )
            data = DataDir(catalog, context)

            async def status() -> dict[str, Any]:
                return await _status(spec, dm, context.paths, backend.warnings)

            control = StaticDirNode(
                ".wtfs",
                {
                    "status.json": GeneratedFile.json(".wtfs/status.json", status),
                    "transfers.json": GeneratedFile.json(".wtfs/transfers.json", lambda: _transfers(status)),
                },
            )
            trees = await backend.trees()
            posix.raise_fd_limit()  # every workspace inode the kernel holds keeps a handle open
            root = StaticDirNode("root", {"data": data, **trees}, hidden={".wtfs": control})
            session = Session(FsCore(root, _presentation(spec)), dm, warnings=backend.warnings)
            yield session
        finally:
            await (session.close() if session is not None else _shielded(dm.stop()))
            nursery.cancel_scope.cancel()


def _dir_prefetch(dm: object, limit: int) -> Callable[[list[ObjectRef]], None] | None:
    """``prefetch_dir``: a directory's first listing lands its files, at most ``limit`` at once
    (the embedded data manager's; in WholeTale mode prefetching is the server's business)."""
    if limit <= 0 or not isinstance(dm, EmbeddedDataManager):
        return None
    return functools.partial(dm.prefetch_all, limit=limit)


def _read_ahead_files(dm: object, window: int) -> Callable[[list[ObjectRef]], None] | None:
    """``readahead_files``: files landed ahead of a reader opening them in order, as many at
    once as the window (the embedded data manager's; in WholeTale mode the server's business)."""
    if window <= 0 or not isinstance(dm, EmbeddedDataManager):
        return None
    return functools.partial(dm.read_ahead, limit=window)


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
            nursery.start_soon(_announce, spec, mountpoint, report, session.warnings, log_file)
            _settle_gc()
            await pyfuse3.main(min_tasks=2, max_tasks=MAX_FUSE_TASKS)
        finally:
            with trio.CancelScope(shield=True):
                sd_notify("STOPPING=1")
                await session.close()
                pyfuse3.close(unmount=True)
                runtime.remove_record(mountpoint, os.getpid())
            nursery.cancel_scope.cancel()
    log.info("unmounted %s", mountpoint)


def _settle_gc() -> None:
    """What start-up built (modules, the catalog, the tree) lives as long as the daemon: keep it
    out of the cycle collector's passes (``gc.freeze``), and let the young generation grow
    larger before a pass. A listing of thousands of entries then is not paused by passes over
    objects that never become garbage."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


@dataclass(frozen=True)
class Backend:
    """What the spec's mode serves: its data manager (started), data/, and the session's other
    trees (workspace/, versions/, runs/), built once the data manager runs."""

    dm: SessionDataManager
    catalog: CatalogDir
    trees: Callable[[], Awaitable[dict[str, Node]]]
    warnings: list[str] = field(default_factory=list)


async def _data_backend(spec: Spec, mountpoint: str, client: httpx.AsyncClient, nursery: trio.Nursery) -> Backend:
    """The backend chosen by the spec, its data manager started."""
    if spec.wholetale is not None:
        return await _wholetale_backend(spec, spec.wholetale, mountpoint, client, nursery)
    return await _embedded_backend(spec, mountpoint, client, nursery)


async def _wholetale_backend(
    spec: Spec, settings: WholeTaleSettings, mountpoint: str, client: httpx.AsyncClient, nursery: trio.Nursery
) -> Backend:
    """A server's data manager; versions/ and runs/ are the tale's, when the spec names one."""
    if spec.workspace is not None:
        raise SpecError(str(spec.path), "workspace", "in WholeTale mode workspace/ is the tale's folder on the server")
    api_key, token = read_secret(settings.secrets, str(spec.path), "wholetale")
    api = GirderApi(client, settings.api_url, api_key, token)
    await _login(api, token, settings.api_url)
    owner = f"wtfs:{socket.gethostname()}"  # the data manager adds its daemon id
    host = HostSide(spec.cache_dir, spec.name, mountpoint, spec.cache, settings.private_storage)
    wt = WholeTaleDataManager(api, host, owner, spec.stall_timeout, settings.session_id, spec.dataset, settings.tale_id)
    try:
        await wt.start(nursery)
    except WtfsError as exc:
        raise MountError(f"{settings.api_url}: {exc}") from None
    return Backend(wt, _followed_session(wt, spec.metadata_ttl), _tale_trees(spec, wt, settings.tale_id, nursery))


def _followed_session(wt: WholeTaleDataManager, ttl: float) -> CatalogDir:
    """data/ of the server's session, rebuilt whenever the session's data set changes."""
    tree = session_tree(wt.session, wt.api, ttl)

    def rebuild(session: dict[str, Any]) -> None:
        tree.entries = session_tree(session, wt.api, ttl).entries

    wt.on_session_change = rebuild
    return tree


def _tale_trees(
    spec: Spec, wt: WholeTaleDataManager, tale_id: str | None, nursery: trio.Nursery
) -> Callable[[], Awaitable[dict[str, Node]]]:
    """workspace/ (the tale's workspace folder, written back), versions/ and runs/ of the tale,
    kept by the server; none without a tale. A version first waits for pending uploads."""

    async def trees() -> dict[str, Node]:
        if tale_id is None:
            return {}
        verify = lambda entry, digest, local: wt.verify(entry.object(), digest, local)  # noqa: E731
        host = socket.gethostname()
        sync = await open_workspace(wt.api, tale_id, spec.metadata_ttl, spec.state_dir, verify, host, nursery)
        wt.workspace_report = sync.report
        wt.workspace_drain = lambda: sync.drain(STOP_WAIT)
        versions, runs = tale_repos(wt.api, tale_id, wt.local.cache.tmp)
        versions.before_create = lambda: sync.drain(VERSION_WAIT)
        return {"workspace": WsTree(sync, wt.local, wt.owner).root, **_repo_trees(versions, runs)}

    return trees


async def _embedded_backend(spec: Spec, mountpoint: str, client: httpx.AsyncClient, nursery: trio.Nursery) -> Backend:
    """This host's data manager and providers; workspace/, versions/ and runs/ kept here."""
    warnings: list[str] = []
    http = HttpProvider(client, stall_timeout=spec.stall_timeout, streams=spec.streams)
    providers = default_providers(http)
    girder = await _girder(spec, client)
    if girder is not None:
        providers.by_scheme[GIRDER_SCHEME] = GirderProvider(girder.api, http)
    if spec.globus is not None:
        providers.by_scheme["globus"] = _globus(spec, spec.globus)
    dm = EmbeddedDataManager(
        spec.cache_dir, spec.name, mountpoint, providers, spec.stall_timeout, spec.cache, spec.cache_group
    )
    await dm.start(nursery)
    try:
        catalog = await build_catalog(spec, lambda url: probe(client, url), girder, warn=_warner(warnings))
    except BaseException:
        with trio.CancelScope(shield=True):
            await dm.stop()
        raise
    return Backend(dm, catalog, lambda: _session_trees(spec, nursery), warnings)


def _stream_rule(spec: Spec) -> Callable[[str], bool]:
    """Whether a file of data/ (by its path) is read before it lands: its entry's ``stream`` (the
    deepest entry's, where entries nest), else the spec's."""
    rules = [(f"data{entry.mount_path}", entry.stream) for entry in spec.dataset if entry.stream is not None]
    rules.sort(key=lambda rule: len(rule[0]), reverse=True)

    def stream(path: str) -> bool:
        for prefix, value in rules:
            if path == prefix or path.startswith(prefix + "/"):
                return value
        return spec.stream

    return stream


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


async def _transfers(status: Callable[[], Awaitable[dict[str, Any]]]) -> list[dict[str, Any]]:
    transfers: list[dict[str, Any]] = (await status()).get("transfers", [])
    return transfers


def _repo_trees(versions: VersionRepo, runs: RunRepo, publish_state: PublishState | None = None) -> dict[str, Node]:
    return {"versions": VersionsDir(versions), "runs": RunsDir(runs, publish_state)}


async def _session_trees(spec: Spec, nursery: trio.Nursery) -> dict[str, Node]:
    """workspace/, versions/ and runs/ when the spec names a workspace; with [publish], runs that
    end are published by a task of ``nursery``."""
    if spec.workspace is None:
        return {}
    versions, runs = session_stores(spec)
    await trio.to_thread.run_sync(versions.prepare)
    for orphan in await trio.to_thread.run_sync(runs.prepare):
        log.warning("run %r was left %s by an executor that died: marked FAILED", orphan.name, orphan.status.name)
    workspace = WorkspaceTree(str(spec.workspace), unshare=versions.unshare, devices=spec.mount.dev)
    copy_if = workspace.open_for_writing  # files open for writing are copied into a version, not linked
    publishing = run_publishing(spec, runs)
    if publishing is not None:
        nursery.start_soon(publishing.serve)
    state = publishing.state if publishing is not None else None
    trees = _repo_trees(LocalVersions(versions, copy_if), LocalRuns(runs, copy_if), state)
    return {"workspace": workspace.root, **trees}


async def _status(spec: Spec, dm: SessionDataManager, paths: dict[str, str], warnings: list[str]) -> dict[str, Any]:
    """``.wtfs/status.json``, what the CLI shows any user who can read the mount: the data
    manager's report, each transfer with its path in the mount, and what was wrong at mount."""
    report = await dm.report()
    for transfer in report.get("transfers", []):
        transfer["path"] = paths.get(transfer.get("objectId", ""))
    return {**report, "session": spec.name, "pid": os.getpid(), "warnings": warnings}


def _warner(warnings: list[str]) -> Callable[[str], None]:
    def warn(message: str) -> None:
        log.warning("%s", message)
        warnings.append(mask_credentials(message))

    return warn


#: The kernel's read-ahead on the mount, in KiB (its default, 128, makes every sequential read of
#: data/ a round trip per 128 KiB; measured by `make bench`: cold open+read of a large file).
READ_AHEAD_KB = 4096


def _read_ahead(mountpoint: str) -> None:
    """Widen the kernel's read-ahead on the mount (its backing device's, once FUSE's INIT is done);
    a host that does not let us keeps the default."""
    device = os.stat(mountpoint).st_dev
    try:
        with open(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb", "w") as knob:
            knob.write(str(READ_AHEAD_KB))
    except OSError as exc:
        log.info("%s: read-ahead left as it was (%s)", mountpoint, exc.strerror)


async def _announce(
    spec: Spec, mountpoint: str, report: ReadyReport, warnings: list[str], log_file: str | None
) -> None:
    """Report ready only once the mount answers a stat through the kernel; say the warnings first."""
    await trio.to_thread.run_sync(os.stat, mountpoint)
    await trio.to_thread.run_sync(_read_ahead, mountpoint)
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
            "warnings": warnings,
            "log": log_file,
        },
    )
    log.info("mounted session %s at %s", spec.name, mountpoint)
    for warning in warnings:
        report.warn(warning)
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
