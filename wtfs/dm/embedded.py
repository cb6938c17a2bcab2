"""The embedded data manager: locks, transfers and the host cache on local disk.

``lock`` waits until the object's copy has landed. One transfer per object: within this daemon
concurrent locks join one landing; across daemons the SQLite claim decides who fetches and the
others poll its record. No pyfuse3 here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

from ..config import CacheSettings
from ..errors import Interrupted, NoSpace, Stalled, TransferFailed, WtfsError, from_errno
from ..objects import ObjectRef
from ..providers import Providers, Sink
from ..retry import Backoff
from . import gc
from .base import Lock
from .cache import HostCache
from .gc import GcReport, disk_usage
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
        """Open the records, register this daemon, reclaim what dead daemons left."""
        self._records = await trio.to_thread.run_sync(self._open_records)
        await self._db(self._records.register_daemon, self.daemon_id, self.session, self.mountpoint)
        await self._db(self._records.set_setting, "capacity", str(self.settings.capacity))
        await self._reclaim()
        await self._reconcile()
        self._nursery = nursery
        nursery.start_soon(self._housekeeping)

    def _open_records(self) -> CacheRecords:
        self.cache.prepare()
        return CacheRecords(self.cache.db_path, LEASE_SECONDS)

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
        return await trio.to_thread.run_sync(fn, *args, limiter=self._db_limiter)

    async def _reclaim(self) -> None:
        dead = await self._db(self.records.reclaim_dead)
        live = await self._db(self.records.live_daemon_ids)
        removed = await trio.to_thread.run_sync(self.cache.remove_temps, live)
        if dead or removed:
            log.info("reclaimed %d dead daemon(s), removed %d partial copies", len(dead), removed)

    async def _reconcile(self) -> None:
        """Records and files that disagree are set right: never serve a copy we cannot vouch for."""
        present = await trio.to_thread.run_sync(lambda: set(disk_usage(self.cache)[1]))
        missing, strays = await self._db(self.records.reconcile, present)
        for object_id in strays:
            self.cache.path_for(object_id).unlink(missing_ok=True)
        if missing or strays:
            log.warning(
                "cache reconciled: %d records without a file, %d files without a record", len(missing), len(strays)
            )

    async def collect(self, force: bool = False) -> GcReport:
        return await self._db(gc.collect, self.cache, self.records, self.settings, force)

    async def _housekeeping(self) -> None:
        """Renew the lease, publish progress, reclaim after dead daemons, collect garbage."""
        renewed = collected = trio.current_time()
        while True:
            await trio.sleep(PROGRESS_SECONDS)
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
            return f"failed: {last['error']}"
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
        while True:
            claim: Claim = await self._db(self.records.claim, obj, self.daemon_id, self.session, self.cache.is_cached)
            if claim.kind == "cached":
                return str(self.cache.path_for(obj.id))
            assert claim.transfer_id is not None
            if claim.kind == "mine":
                return await self._transfer(obj, claim.transfer_id)
            await self._await_foreign(claim.transfer_id)

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
        fd, temp = await trio.to_thread.run_sync(self.cache.open_temp, obj, self.daemon_id, transfer_id)
        self._running[obj.id] = (0, obj.size)
        watchdog = trio.CancelScope(deadline=trio.current_time() + self.stall_timeout)
        sink = Sink(fd, lambda done: self._on_progress(watchdog, transfer_id, obj.id, done, sink), str(temp))
        try:
            with watchdog:
                await provider.fetch(obj, sink)
            if watchdog.cancelled_caught:
                raise Stalled(f"{obj.source}: no progress for {self.stall_timeout:g}s")
            path, size = await trio.to_thread.run_sync(self.cache.commit, fd, temp, obj, sink.expected_size)
        except WtfsError as exc:
            await self._record_failure(temp, transfer_id, obj, TransferStatus.FAILED, str(exc), exc.errno)
            log.warning("transfer of %s failed: %s", obj.source, exc)
            raise
        except BaseException as exc:
            status = TransferStatus.FAILED_TEMPORARILY if isinstance(exc, trio.Cancelled) else TransferStatus.FAILED
            await self._record_failure(temp, transfer_id, obj, status, f"interrupted: {type(exc).__name__}", None)
            raise
        finally:
            self._progress.pop(transfer_id, None)
            self._running.pop(obj.id, None)
            _close_quietly(fd)
        await self._db(self.records.finish, transfer_id, obj, size)
        log.info("landed %s (%d bytes)", obj.source, size)
        assert self._nursery is not None
        self._nursery.start_soon(self.collect)
        return str(path)

    def _on_progress(self, watchdog: trio.CancelScope, transfer_id: int, obj_id: str, done: int, sink: Sink) -> None:
        watchdog.deadline = trio.current_time() + self.stall_timeout
        self._progress[transfer_id] = (done, sink.expected_size)
        self._running[obj_id] = (done, sink.expected_size)

    async def _record_failure(
        self, temp: Path, transfer_id: int, obj: ObjectRef, status: TransferStatus, error: str, errno: int | None
    ) -> None:
        with trio.CancelScope(shield=True):
            self.cache.discard(temp)
            if self._records is not None:
                await self._db(self._records.fail, transfer_id, obj, status, error, errno)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
