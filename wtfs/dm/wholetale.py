"""The WholeTale data manager: wtfs as the FUSE client of a girder-wholetale server.

The server owns sessions, locks, transfers and the private storage; this follows the reference's
basic flow. ``lock`` = ``POST /dm/lock`` then poll ``GET /dm/fs/{item}/raw`` (0.1 s doubling to
1 s, bounded by the stall timeout) until ``dm.cached``; the bytes are ``dm.psPath`` when this host
sees the private storage, else a copy in the host cache, landed and locked by the same embedded
data manager every other source uses (records, leases, one transfer per host, GC), from
``/dm/lock/{id}/download``. ``unlock`` = ``DELETE /dm/lock/{id}``. Every lock this mount takes is
released on stop; its owner id is this host, its host cache and its daemon id, so any mount
started on the host with the same cache deletes the locks of dead mounts (a daemon id that cache no
longer knows), and leaves those of other caches (whose daemons it cannot see) alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ..catalog.girder_api import GirderApi, Unreachable, path_id
from ..catalog.wholetale import WS_SCHEME, WT_SCHEME
from ..config import CacheSettings, Entry
from ..errors import AccessDenied, Interrupted, NotFound, Stalled, TransferFailed, WtfsError
from ..objects import ObjectRef
from ..providers import Providers
from ..providers.wholetale import WholeTaleProvider, WorkspaceProvider, hashed_download
from ..retry import Backoff
from .base import Lock
from .embedded import LEASE_SECONDS, EmbeddedDataManager
from .records import CacheRecords

log = logging.getLogger(__name__)

FOLLOW_SECONDS = 1.0
#: Polls of the server's copy: 0.1 s doubling to 1 s, ended by the stall timeout.
CACHED_POLL = Backoff(0.1, maximum=1.0)
#: status.json shows the server's locks and transfers as asked at most this long ago.
REPORT_TTL = 1.0


@dataclass(frozen=True)
class HostSide:
    """Where this mount keeps local copies: the host cache, and whether psPath may be read."""

    cache_dir: Path
    session: str
    mountpoint: str
    settings: CacheSettings | None = None
    private_storage: bool = True


class WholeTaleDataManager:
    def __init__(
        self,
        api: GirderApi,
        host: HostSide,
        owner: str,
        stall_timeout: float,
        session_id: str | None = None,
        dataset: tuple[Entry, ...] = (),
        tale_id: str | None = None,
    ) -> None:
        self.api = api
        self._workspace = WorkspaceProvider(api)
        providers = Providers({WT_SCHEME: WholeTaleProvider(api, self._held_for), WS_SCHEME: self._workspace})
        self.local = EmbeddedDataManager(
            host.cache_dir, host.session, host.mountpoint, providers, stall_timeout, host.settings
        )
        self.private_storage = host.private_storage
        self.host = owner
        self._stale_prefix = f"{owner}:{cache_tag(host.cache_dir)}:"  # this host's mounts with this cache
        self.owner = f"{self._stale_prefix}{self.local.daemon_id}"
        self.stall_timeout = stall_timeout
        self.session_id = session_id
        self.dataset = dataset
        self.tale_id = tale_id
        self.created_session = False
        self.session: dict[str, Any] = {}
        self._held: dict[str, Lock] = {}
        self._local: dict[str, Lock] = {}  # server lock id -> the host-cache lock under it
        self._offline: dict[str, str | None] = {}  # lock taken while unreachable -> its server lock
        self._ps_paths: dict[str, str] = {}  # item -> the server's storage path last seen
        self._unreleased: set[str] = set()  # server locks to delete once the server is back
        self._waiters: set[trio.CancelScope] = set()
        self._closing = False
        #: called with the reloaded session when its ``seq`` moves (the daemon rebuilds data/)
        self.on_session_change: Callable[[dict[str, Any]], None] | None = None
        #: the workspace's uploads, for the status report
        self.workspace_report: Callable[[], dict[str, Any]] | None = None
        #: at unmount, wait (bounded) for the workspace's pending uploads
        self.workspace_drain: Callable[[], Awaitable[object]] | None = None
        self._report_lock = trio.Lock()
        self._report_cache: tuple[float, list[dict[str, Any]], list[dict[str, Any]]] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        await self.local.start(nursery)
        if self.session_id is None:
            if self.dataset or self.tale_id is None:
                data_set = [{"itemId": e.item_id or e.folder_id, "mountPath": e.mount_path} for e in self.dataset]
                params = {"dataSet": json.dumps(data_set)}
            else:
                params = {"taleId": self.tale_id}  # the session follows the tale's data set
            created = await self.api.call("POST", "dm/session", params, "session")
            self.session_id = str(created["_id"])
            self.created_session = True
            log.info("created WholeTale session %s", self.session_id)
        self.session = await self.api.get(f"dm/session/{self.session_id}", {"loadObjects": "true"}, "session")
        await self._release_stale()
        nursery.start_soon(self._follow)

    async def _release_stale(self) -> None:
        """Delete the locks dead mounts of this host and cache left behind, whatever their
        mountpoint: an owner id of this cache whose daemon it no longer knows (a daemon paused past
        its lease is still known; the host cache's start forgot the dead ones)."""
        live = await trio.to_thread.run_sync(_known_daemons, self.local.cache.db_path)
        prefix = self._stale_prefix
        stale = [
            lock
            for lock in await self.api.list_all("dm/lock", {}, "locks")
            if str(lock.get("ownerId") or "").startswith(prefix) and str(lock["ownerId"])[len(prefix) :] not in live
        ]
        for lock in stale:
            await self.api.call("DELETE", f"dm/lock/{lock['_id']}", what="stale lock")
        if stale:
            log.warning("released %d lock(s) dead mounts of this host left behind", len(stale))

    async def _follow(self) -> None:
        """Poll the session's ``seq``: when its data set changes (directly, or through its tale),
        reload it and hand it to ``on_session_change``."""
        while True:
            await trio.sleep(FOLLOW_SECONDS)
            try:
                if self.api.outage.since is None and (None in self._offline.values() or self._unreleased):
                    await self._relock()
                current = await self.api.get(f"dm/session/{self.session_id}", what="session")
                if current.get("seq") == self.session.get("seq"):
                    continue
                self.session = await self.api.get(f"dm/session/{self.session_id}", {"loadObjects": "true"})
            except Unreachable:
                continue  # said once, by the API's outage record
            except WtfsError as exc:
                log.warning("following session %s: %s", self.session_id, exc)
                continue
            log.info("session %s changed (seq %s): data/ rebuilt", self.session_id, self.session.get("seq"))
            if self.on_session_change is not None:
                self.on_session_change(self.session)

    async def stop(self) -> None:
        self.interrupt()
        with trio.CancelScope(shield=True):
            if self.workspace_drain is not None:
                await self.workspace_drain()  # what is left goes out at the next mount
            for lock in list(self._held.values()):
                await self._release(lock)
            if self.created_session and self.session_id is not None:
                try:
                    await self.api.call("DELETE", f"dm/session/{self.session_id}", what="session")
                    log.info("deleted WholeTale session %s", self.session_id)
                except WtfsError as exc:
                    log.warning("could not delete session %s: %s", self.session_id, exc)
            await self.local.stop()

    def interrupt(self) -> None:
        self._closing = True
        self.local.interrupt()
        for scope in list(self._waiters):
            scope.cancel()

    # -- locks ------------------------------------------------------------------------------

    @staticmethod
    def item_id(obj: ObjectRef) -> str:
        return obj.source.split(":", 1)[1]

    async def lock(self, obj: ObjectRef, owner: str) -> Lock:
        if self._closing:
            raise Interrupted("wtfs is shutting down")
        item = self.item_id(obj)
        params = {"sessionId": self.session_id, "itemId": item, "ownerId": self.owner}
        try:
            created = await self.api.call("POST", "dm/lock", params, f"item {item}")
        except Unreachable:
            return await self._offline_lock(obj, item)
        lock = Lock(str(created["_id"]), obj, "")
        self._held[lock.id] = lock
        try:
            with trio.CancelScope() as scope:
                self._waiters.add(scope)
                try:
                    raw = await self._until_cached(obj, item)
                    path = await self._bytes(obj, lock, raw["dm"])
                finally:
                    self._waiters.discard(scope)
            if scope.cancelled_caught:
                raise Interrupted(f"item {item}: wtfs is shutting down")
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._release(lock)
            raise
        ready = Lock(lock.id, obj, path)
        self._held[lock.id] = ready
        return ready

    async def _offline_lock(self, obj: ObjectRef, item: str) -> Lock:
        """The server is unreachable: a copy this host already has still opens (the server's
        storage as last seen, or the host cache); the server's lock is taken once it is back."""
        ps_path = self._ps_paths.get(item)
        local: Lock | None = None
        if ps_path is not None and await trio.to_thread.run_sync(os.access, ps_path, os.R_OK):
            path = ps_path
        elif await self.local.state(obj) == "cached":
            local = await self.local.lock(obj, self.owner)
            path = local.path
        else:
            raise Unreachable(f"item {item}: the server is unreachable and this host has no copy")
        lock = Lock(f"offline-{uuid.uuid4().hex}", obj, path)
        self._held[lock.id] = lock
        self._offline[lock.id] = None
        if local is not None:
            self._local[lock.id] = local
        return lock

    async def _relock(self) -> None:
        """The server is back: release what could not be released while it was away, and take
        the server's locks of what was opened meanwhile."""
        for server_id in list(self._unreleased):
            with contextlib.suppress(NotFound):  # already gone (another mount's stale-lock sweep)
                await self.api.call("DELETE", f"dm/lock/{server_id}", what="lock")
            self._unreleased.discard(server_id)  # forgotten once the server has no such lock
        for lock_id in [k for k, v in self._offline.items() if v is None]:
            lock = self._held.get(lock_id)
            if lock is None:
                continue
            item = self.item_id(lock.obj)
            params = {"sessionId": self.session_id, "itemId": item, "ownerId": self.owner}
            created = await self.api.call("POST", "dm/lock", params, f"item {item}")
            if lock_id in self._held:
                self._offline[lock_id] = str(created["_id"])
            else:  # closed while its server lock was being taken: that lock is nobody's
                await self._delete_server_lock(str(created["_id"]))
        if self._offline:
            log.info("server locks taken for %d file(s) opened during the outage", len(self._offline))

    async def unlock(self, lock: Lock) -> None:
        if lock.id in self._held:
            await self._release(lock)

    async def _release(self, lock: Lock) -> None:
        self._held.pop(lock.id, None)
        local = self._local.pop(lock.id, None)
        if local is not None:
            await self.local.unlock(local)
        server_id = self._offline.pop(lock.id) if lock.id in self._offline else lock.id
        if server_id is None:
            return  # opened while the server was unreachable, never locked there
        await self._delete_server_lock(server_id)

    async def _delete_server_lock(self, server_id: str) -> None:
        try:
            await self.api.call("DELETE", f"dm/lock/{server_id}", what="lock")
        except Unreachable:
            self._unreleased.add(server_id)  # released once the server is back
        except WtfsError as exc:
            log.warning("releasing lock %s failed: %s", server_id, exc)

    async def _until_cached(self, obj: ObjectRef, item: str) -> dict[str, Any]:
        """Poll the item until the server has it cached; fail on its transfer error or a stall."""
        last, progress_at = -1, trio.current_time()
        for attempt in CACHED_POLL.tries():
            raw = await self.api.get(f"dm/fs/{item}/raw", what=f"item {item}")
            dm = raw.get("dm") or {}
            if dm.get("cached"):
                return dict(raw)
            error = dm.get("transferError")
            if error:
                text = f"item {item}: the server's transfer failed: {error}"
                raise AccessDenied(text) if ("401" in str(error) or "403" in str(error)) else TransferFailed(text)
            done = int((dm.get("transfer") or {}).get("transferred") or 0)
            if done != last:
                last, progress_at = done, trio.current_time()
            elif trio.current_time() - progress_at > self.stall_timeout:
                raise Stalled(f"item {item}: no progress on the server for {self.stall_timeout:g}s")
            await attempt.pause()
        raise AssertionError("unbounded polls end by return or raise")  # pragma: no cover

    async def _bytes(self, obj: ObjectRef, lock: Lock, dm: dict[str, Any]) -> str:
        """The server's copy where this host sees it; else a locked copy in the host cache."""
        ps_path = dm.get("psPath")
        if self.private_storage and ps_path and await trio.to_thread.run_sync(os.access, ps_path, os.R_OK):
            self._ps_paths[self.item_id(obj)] = str(ps_path)  # for opens while the server is away
            return str(ps_path)
        local = await self.local.lock(obj, self.owner)
        self._local[lock.id] = local
        return local.path

    def _held_for(self, obj: ObjectRef) -> str:
        """A server lock this mount holds on ``obj``: the one the provider downloads through."""
        for lock in self._held.values():
            if lock.obj.id == obj.id and self._offline.get(lock.id, lock.id):
                return self._offline.get(lock.id) or lock.id
        raise TransferFailed(f"{obj.source}: no server lock held to download through")

    # -- watching ---------------------------------------------------------------------------

    def prefetch(self, obj: ObjectRef) -> None:
        raise TransferFailed("prefetch is the server's business in WholeTale mode")

    async def state(self, obj: ObjectRef) -> str:
        dm = (await self.api.get(f"dm/fs/{self.item_id(obj)}/raw")).get("dm") or {}
        if dm.get("cached"):
            return "cached"
        if dm.get("transferError"):
            return f"failed: {dm['transferError']}"
        transfer = dm.get("transfer") or {}
        if dm.get("transferInProgress") and transfer.get("size"):
            return f"transferring {100.0 * int(transfer.get('transferred') or 0) / int(transfer['size']):.0f}%"
        return "transferring" if dm.get("transferInProgress") else "remote"

    async def verify(self, obj: ObjectRef, sha256: str, local: str | None = None) -> None:
        """Check the server's copy of an upload is what was sent (hashed as it arrives) and land
        it in the host cache: ``local``, the copy that was sent if it stays unchanged, is linked
        in once the server's bytes match (while unmounting: download and hash, no landing)."""
        if self._closing:
            path = f"item/{path_id(self.item_id(obj))}/download"
            digest = await hashed_download(self.api, path, lambda chunk: None, f"{obj.source}: the server's copy")
        else:
            self._workspace.expect(obj, sha256, local)
            try:
                lock = await self.local.lock(obj, self.owner)
                try:  # no digest: the copy was there already, or another daemon landed it
                    fetched = self._workspace.digest(obj)
                    digest = fetched if fetched is not None else await trio.to_thread.run_sync(_sha256, lock.path)
                finally:
                    await self.local.unlock(lock)
            finally:
                self._workspace.digest(obj)  # forgotten whatever happened
        if digest != sha256:
            raise TransferFailed(f"{obj.source}: the server's copy differs from what was sent (sha256 {digest})")

    async def _server_lists(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """This session's locks and transfers on the server, asked at most every REPORT_TTL: a
        status.json read is a lookup and an open, each rendering it, and a script polling it
        must not load the server that is taking our uploads (measured: 20 polls a second made a
        256 MiB upload 60% slower). Concurrent reads share one answer."""
        async with self._report_lock:
            cached = self._report_cache
            if cached is not None and trio.current_time() - cached[0] < REPORT_TTL:
                return cached[1], cached[2]
            transfers = await self.api.get("dm/transfer", {"sessionId": self.session_id, "discardOld": "false"})
            locks = await self.api.get("dm/lock", {"sessionId": self.session_id, "ownerId": self.owner})
            self._report_cache = (trio.current_time(), locks, transfers)
            return locks, transfers

    async def report(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "mode": "wholetale",
            "server": self.api.api_url,
            "server_state": self.api.outage.describe(),
        }
        if self.workspace_report is not None:
            base["workspace"] = self.workspace_report()
        try:
            if self.api.outage.since is not None:
                raise Unreachable(base["server_state"])
            locks, transfers = await self._server_lists()
        except WtfsError:
            return {**base, "sessions": [], "locks": [], "transfers": []}
        return {
            **base,
            "sessions": [{"sessionId": self.session_id, "ownerId": self.owner}],
            "locks": [
                {"id": lk["_id"], "itemId": lk["itemId"], "sessionId": lk["sessionId"], "ownerId": lk["ownerId"]}
                for lk in locks
            ],
            "transfers": [
                {key: t.get(key) for key in ("_id", "itemId", "path", "status", "size", "transferred", "error")}
                for t in transfers
            ],
        }


def _known_daemons(db_path: Path) -> set[str]:
    records = CacheRecords(db_path, LEASE_SECONDS)
    try:
        return records.known_daemon_ids()
    finally:
        records.close()


def cache_tag(cache_dir: Path) -> str:
    """Which host cache a lock's owner belongs to (mounts with another cache cannot see its daemons)."""
    return hashlib.sha256(os.path.abspath(cache_dir).encode()).hexdigest()[:8]


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
