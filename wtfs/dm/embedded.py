"""The embedded data manager: locks, transfers and the host cache on local disk.

``lock`` waits until the object's copy has landed. One transfer per object: within this daemon
concurrent locks join one landing; across daemons the SQLite claim decides who fetches and the
others poll its record. No pyfuse3 here.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

from ..config import CacheSettings
from ..errors import DiskFull, Interrupted, NoSpace, Stalled, TransferFailed, WtfsError, from_errno
from ..log import mask_credentials
from ..objects import ObjectRef
from ..providers import Provider, Providers, Sink
from ..retry import Backoff
from . import gc
from .base import Lock
from .cache import HostCache
from .gc import GcReport
from .records import CacheRecords, Claim, TransferStatus
from .report import status_report

log = logging.getLogger(__name__)
T = TypeVar("T")

LEASE_SECONDS = 30.0
RENEW_SECONDS = 5.0
PROGRESS_SECONDS = 0.5
#: How often a transfer another daemon owns is looked at: soon at first, then every half second.
FOREIGN_POLL = Backoff(0.05, maximum=0.5)


@dataclass
class _Landing:
    """One in-flight landing of an object inside this daemon, joined by every waiting lock."""

    done: trio.Event = field(default_factory=trio.Event)
    path: str = ""
    error: WtfsError | None = None


class EmbeddedDataManager:
    def __init__(
        self,
        cache_dir: Path,
        session: str,
        mountpoint: str,
        providers: Providers,
        stall_timeout: float,
        settings: CacheSettings | None = None,
    ) -> None:
        self.cache = HostCache(cache_dir)
        self.settings = settings or CacheSettings()
        self.session = session
        self.mountpoint = mountpoint
        self.providers = providers
        self.stall_timeout = stall_timeout
        self.daemon_id = uuid.uuid4().hex[:16]
        self._db_limiter = trio.CapacityLimiter(1)
        self._records: CacheRecords | None = None
        self._nursery: trio.Nursery | None = None
        self._landings: dict[str, _Landing] = {}
        self._progress: dict[int, tuple[int, int | None]] = {}  # not yet written to the records
        self._running: dict[str, tuple[int, int | None]] = {}  # object id -> (bytes, size), for xattrs
        self._waiters: set[trio.CancelScope] = set()
        self._held: dict[str, Lock] = {}
        self._closing = False

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Open the records, register this daemon, reclaim what dead daemons left, and reconcile
        the records with the disk (the one walk of the cache), making it private on the way."""
        tightened = await trio.to_thread.run_sync(self.cache.prepare)
        self._records = await trio.to_thread.run_sync(CacheRecords, self.cache.db_path, LEASE_SECONDS)
        await self._db(self.records.register_daemon, self.daemon_id, self.session, self.mountpoint)
        await self._db(self.records.set_setting, "capacity", str(self.settings.capacity))
        await self._reclaim()
        tightened += (await self._db(gc.reconcile, self.cache, self.records)).tightened
        if tightened:
            log.warning("%s: %d paths were open to other users; made private", self.cache.root, tightened)
        self._nursery = nursery
        nursery.start_soon(self._housekeeping)

    async def stop(self) -> None:
        """Release every lock this daemon holds and record its transfers as interrupted."""
        self.interrupt()
        if self._records is not None:
            with trio.CancelScope(shield=True):
                await self._db(self._records.retire_daemon, self.daemon_id)
                await self._db(self._records.close)
            self._records = None
        self._held.clear()

    def interrupt(self) -> None:
        self._closing = True
        for scope in list(self._waiters):
            scope.cancel()

    @property
    def records(self) -> CacheRecords:
        if self._records is None:
            raise Interrupted("the data manager is not running")
        return self._records

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a records call in the worker thread; SQLite's "database or disk is full" is ENOSPC."""
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._db_limiter)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                raise
            raise DiskFull(f"{self.cache.root}: the cache's filesystem is full ({exc})") from None

    async def _reclaim(self) -> None:
        dead = await self._db(self.records.reclaim_dead)
        live = await self._db(self.records.live_daemon_ids)
        removed = await trio.to_thread.run_sync(self.cache.remove_temps, live)
        if dead or removed:
            log.info("reclaimed %d dead daemon(s), removed %d partial copies", len(dead), removed)

    async def collect(self, force: bool = False) -> GcReport:
        return await self._db(gc.collect, self.cache, self.records, self.settings, force)

    async def _housekeeping(self) -> None:
        """Renew the lease, publish progress, reclaim after dead daemons, collect garbage."""
        renewed = collected = trio.current_time()
        while True:
            await trio.sleep(PROGRESS_SECONDS)
            try:
                renewed, collected = await self._housekeep(renewed, collected)
            except DiskFull as exc:  # the records cannot grow for now: try again next round
                log.warning("housekeeping: %s", exc)

    async def _housekeep(self, renewed: float, collected: float) -> tuple[float, float]:
        """One round of housekeeping; returns when the lease was renewed and GC last ran."""
        if self._progress:
            updates, self._progress = self._progress, {}
            await self._db(self.records.progress, updates)
        if trio.current_time() - renewed >= RENEW_SECONDS:
            await self._db(self.records.renew_lease, self.daemon_id)
            await self._reclaim()
            renewed = trio.current_time()
        if trio.current_time() - collected >= self.settings.gc_interval:
            await self.collect()
            collected = trio.current_time()
        return renewed, collected

    # -- locks ------------------------------------------------------------------------------

    async def lock(self, obj: ObjectRef, owner: str) -> Lock:
        if self._closing:
            raise Interrupted("wtfs is shutting down")
        lock_id = uuid.uuid4().hex
        await self._db(self.records.add_lock, lock_id, obj.id, self.session, owner, self.daemon_id)
        try:
            path = await self._landed(obj)
        except BaseException:
            with trio.CancelScope(shield=True):
                if self._records is not None:
                    await self._db(self._records.remove_lock, lock_id)
            raise
        lock = Lock(lock_id, obj, path)
        self._held[lock_id] = lock
        return lock

    async def unlock(self, lock: Lock) -> None:
        if self._held.pop(lock.id, None) is not None and self._records is not None:
            await self._db(self._records.remove_lock, lock.id)

    # -- watching and prefetching -----------------------------------------------------------

    def prefetch(self, obj: ObjectRef) -> None:
        """Start landing ``obj`` without a lock (the reference's getexternal); returns at once."""
        if self._closing:
            raise Interrupted("wtfs is shutting down")
        self._landing_of(obj)

    async def state(self, obj: ObjectRef) -> str:
        """``cached``, ``transferring N%`` or ``remote`` (the ``user.wtfs.state`` xattr)."""
        if obj.id in self._running:
            done, size = self._running[obj.id]
            total = obj.size or size
            return f"transferring {100.0 * done / total:.0f}%" if total else "transferring"
        if obj.id in self._landings:
            return "transferring 0%"
        if await self._db(self.records.is_active, obj.id) and self.cache.is_cached(obj):
            return "cached"
        last = await self._db(self.records.latest_transfer, obj.id)
        if last is not None and last["status"] == TransferStatus.FAILED:
            return f"failed: {mask_credentials(str(last['error']))}"
        return "remote"

    async def report(self) -> dict[str, Any]:
        return await self._db(status_report, self.records, self.cache)

    def _landing_of(self, obj: ObjectRef) -> _Landing:
        landing = self._landings.get(obj.id)
        if landing is None:
            assert self._nursery is not None
            landing = self._landings[obj.id] = _Landing()
            self._nursery.start_soon(self._land, obj, landing)
        return landing

    async def _landed(self, obj: ObjectRef) -> str:
        """Join (or start) this daemon's landing of ``obj`` and wait for it."""
        landing = self._landing_of(obj)
        with trio.CancelScope() as scope:
            self._waiters.add(scope)
            try:
                await landing.done.wait()
            finally:
                self._waiters.discard(scope)
        if scope.cancelled_caught:
            raise Interrupted(f"{obj.source}: wtfs is shutting down")
        if landing.error is not None:
            raise landing.error
        return landing.path

    async def _land(self, obj: ObjectRef, landing: _Landing) -> None:
        try:
            landing.path = await self._land_once(obj)
        except WtfsError as exc:
            landing.error = exc
        except Exception as exc:  # a bug or an unexpected library error: EIO, logged
            log.exception("landing %s failed", obj.source)
            landing.error = TransferFailed(f"{obj.source}: {type(exc).__name__}")
        finally:
            del self._landings[obj.id]
            landing.done.set()

    async def _land_once(self, obj: ObjectRef) -> str:
        gc_tried = False
        while True:
            claim: Claim = await self._db(self.records.claim, obj, self.daemon_id, self.session, self.cache.is_cached)
            if claim.kind == "cached":
                return str(self.cache.path_for(obj.id))
            assert claim.transfer_id is not None
            if claim.kind == "wait":
                await self._await_foreign(claim.transfer_id)
                continue
            try:
                return await self._transfer(obj, claim.transfer_id)
            except DiskFull:
                if gc_tried or not (await self._db(gc.relieve, self.cache, self.records, obj.size)).evicted:
                    raise
                gc_tried = True  # unlocked copies made room: one more try

    async def _await_foreign(self, transfer_id: int) -> None:
        """Another daemon fetches it: wait until it lands, fails, or that daemon dies."""
        for attempt in FOREIGN_POLL.tries():
            state = await self._db(self.records.transfer_state, transfer_id)
            if state.status == TransferStatus.DONE or not state.owner_alive:
                return
            if state.status in (TransferStatus.FAILED, TransferStatus.FAILED_TEMPORARILY):
                if state.errno is None:
                    return  # interrupted, not failed: claim it again
                raise from_errno(state.errno, state.error or "transfer failed")
            await attempt.pause()

    async def _transfer(self, obj: ObjectRef, transfer_id: int) -> str:
        provider = self.providers.for_object(obj)
        if obj.size is not None:
            try:
                await self._db(gc.make_room, self.cache, self.records, self.settings, obj.id, obj.size)
            except NoSpace as exc:
                await self._db(self.records.fail, transfer_id, obj, TransferStatus.FAILED, str(exc), exc.errno)
                raise
        partial = _Partial(*await trio.to_thread.run_sync(self.cache.open_temp, obj, self.daemon_id, transfer_id))
        self._running[obj.id] = (0, obj.size)
        try:
            path, size, disk_bytes = await self._fill(obj, transfer_id, provider, partial)
        finally:
            self._progress.pop(transfer_id, None)
            self._running.pop(obj.id, None)
            partial.close()
        await self._db(self.records.finish, transfer_id, obj, size, disk_bytes)
        log.info("landed %s (%d bytes)", obj.source, size)
        assert self._nursery is not None
        self._nursery.start_soon(self.collect)
        return str(path)

    async def _fill(
        self, obj: ObjectRef, transfer_id: int, provider: Provider, partial: _Partial
    ) -> tuple[Path, int, int]:
        """Fetch into the partial and commit it; on failure the partial is closed and removed (so a
        full disk is freed before the failure is recorded) and the failure recorded."""
        watchdog = trio.CancelScope(deadline=trio.current_time() + self.stall_timeout)
        sink = Sink(partial.fd, lambda n: self._on_progress(watchdog, transfer_id, obj.id, n, sink), str(partial.path))
        try:
            with _disk_full_is_nospace(obj, self.cache.root):
                with watchdog:
                    await provider.fetch(obj, sink)
                if watchdog.cancelled_caught:
                    raise Stalled(f"{obj.source}: no progress for {self.stall_timeout:g}s")
                commit = self.cache.commit
                return await trio.to_thread.run_sync(commit, partial.fd, partial.path, obj, sink.expected_size)
        except WtfsError as exc:  # a full disk is not the object's fault: back to remote, tried again
            status = TransferStatus.FAILED_TEMPORARILY if isinstance(exc, DiskFull) else TransferStatus.FAILED
            await self._record_failure(partial, transfer_id, obj, status, str(exc), exc.errno)
            log.warning("transfer of %s failed: %s", obj.source, exc)
            raise
        except BaseException as exc:
            status = TransferStatus.FAILED_TEMPORARILY if isinstance(exc, trio.Cancelled) else TransferStatus.FAILED
            await self._record_failure(partial, transfer_id, obj, status, f"interrupted: {type(exc).__name__}", None)
            raise

    def _on_progress(self, watchdog: trio.CancelScope, transfer_id: int, obj_id: str, done: int, sink: Sink) -> None:
        watchdog.deadline = trio.current_time() + self.stall_timeout
        self._progress[transfer_id] = (done, sink.expected_size)
        self._running[obj_id] = (done, sink.expected_size)

    async def _record_failure(
        self, partial: _Partial, transfer_id: int, obj: ObjectRef, status: TransferStatus, error: str, errno: int | None
    ) -> None:
        with trio.CancelScope(shield=True):
            partial.close()  # first: an unlinked file still open keeps its blocks (a full disk stays full)
            self.cache.discard(partial.path)
            if self._records is not None:
                await self._db(self._records.fail, transfer_id, obj, status, error, errno)


@dataclass
class _Partial:
    """A partial copy's descriptor and path; closed once, before its file is removed."""

    fd: int
    path: Path

    def close(self) -> None:
        if self.fd >= 0:
            _close_quietly(self.fd)
            self.fd = -1


@contextlib.contextmanager
def _disk_full_is_nospace(obj: ObjectRef, root: Path) -> Iterator[None]:
    """ENOSPC or EDQUOT from writing the partial (an OSError, hence EIO) becomes DiskFull."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFull(f"{obj.source}: the cache's filesystem ({root}) is full") from None


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
