"""The embedded data manager: locks, transfers and the host cache on local disk.

``lock`` waits until the object's copy has landed (``lock_streaming`` only until its transfer
started: reads then wait for their bytes, ``dm/streaming.py``). One transfer per object: within
this daemon concurrent locks join one landing; across daemons the SQLite claim decides who
fetches and the others poll its record. No pyfuse3 here.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

from .. import procfs
from ..config import CacheSettings
from ..errors import CallerInterrupted, DiskFull, Interrupted, NoSpace, Stalled, TransferFailed, WtfsError, from_errno
from ..log import mask_credentials
from ..objects import ObjectRef
from ..providers import LocalProvider, Provider, Providers, Sink
from ..providers.base import Part
from ..retry import Backoff
from . import gc
from .base import REQUESTER, REQUESTER_POLL, Lock
from .cache import HostCache, group_id
from .gc import GcReport
from .partials import Partial, open_partial
from .records import CacheRecords, Claim, Standing, TransferStatus
from .report import status_report
from .streaming import Streamed
from .trips import OneThread

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long a daemon's claims (transfers) hold without renewal; renewed every sixth of it. An
#: operator (or a test) may shorten it with WTFS_LEASE (seconds).
LEASE_SECONDS = float(os.environ.get("WTFS_LEASE", "30"))
PROGRESS_SECONDS = 0.5
#: Housekeeping ticks every PROGRESS_SECONDS; a gap this long means the daemon did not run (a pause).
PAUSE_GAP = 2.0
#: A foreign transfer is taken over after stall_timeout plus this without progress in its record
#: (its owner publishes progress every PROGRESS_SECONDS and fails it itself after stall_timeout).
TAKEOVER_GRACE = 2.0
#: How often a transfer another daemon owns is looked at: soon at first, then every half second.
FOREIGN_POLL = Backoff(0.05, maximum=0.5)
#: Objects of a known size up to this land without a resumable partial and, unless a sha256
#: verified them, without fsync: both cost more than fetching one again, and a crash that loses
#: the bytes leaves a copy of the wrong size (on ext4, XFS and btrfs), which the next open
#: refuses and fetches again.
SMALL_OBJECT_BYTES = 1024 * 1024


def _small(obj: ObjectRef) -> bool:
    return obj.size is not None and obj.size <= SMALL_OBJECT_BYTES


@dataclass
class _Landing:
    """One in-flight landing of an object inside this daemon, joined by every waiting lock."""

    done: trio.Event = field(default_factory=trio.Event)
    path: str = ""
    error: WtfsError | None = None
    started: trio.Event = field(default_factory=trio.Event)  # a transfer runs here, or done
    streamed: Streamed | None = None  # that transfer, for streaming readers


class EmbeddedDataManager:
    def __init__(
        self,
        cache_dir: Path,
        session: str,
        mountpoint: str,
        providers: Providers,
        stall_timeout: float,
        settings: CacheSettings | None = None,
        cache_group: str | None = None,
    ) -> None:
        self.cache = HostCache(cache_dir, group_id(cache_group) if cache_group else None)
        self.cache_group = cache_group
        self.settings = settings or CacheSettings()
        self.session = session
        self.mountpoint = mountpoint
        self.providers = providers
        self.stall_timeout = stall_timeout
        self.daemon_id = uuid.uuid4().hex[:16]
        self._records_thread = OneThread()  # the records' calls, several to a trip when they queue up
        self._records: CacheRecords | None = None
        self._nursery: trio.Nursery | None = None
        self._landings: dict[str, _Landing] = {}
        self._progress: dict[int, tuple[int, int | None]] = {}  # not yet written to the records
        self._running: dict[str, tuple[int, int | None]] = {}  # object id -> (bytes, size), for xattrs
        self._waiters: set[trio.CancelScope] = set()
        self._held: dict[str, Lock] = {}
        self._in_place_fds: dict[str, int] = {}  # lock id -> descriptor: a local source, a partial, a copy
        self._lock_rows: dict[str, tuple[str, str]] = {}  # lock id -> (object id, owner), as recorded
        self._fills: dict[int, trio.CancelScope] = {}  # this daemon's running transfers
        self._tick = self._resumed_at = -float("inf")  # housekeeping's last tick, the last pause's end
        self._closing = False
        self._housekeeper = trio.CancelScope()
        self._housekeeper_done = trio.Event()
        self._prefetch_slots: dict[str, trio.CapacityLimiter] = {}  # prefetch_all's, per pool, shared by all calls
        self._collecting = False  # a GC pass started by a landing is queued or running

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Open the records, register this daemon, reclaim what dead daemons left, and reconcile
        the records with the disk (the one walk of the cache), making it private on the way."""
        tightened = await trio.to_thread.run_sync(self.cache.prepare)
        self._records = await trio.to_thread.run_sync(CacheRecords, self.cache.db_path, LEASE_SECONDS)
        self._tick = trio.current_time()
        await self._db(self.records.register_daemon, self.daemon_id, self.session, self.mountpoint)
        await self._db(self.records.set_setting, "capacity", str(self.settings.capacity))
        await self._reclaim()
        tightened += (await self._db(gc.reconcile, self.cache, self.records)).tightened
        if tightened:
            made = f"limited to group {self.cache_group}" if self.cache_group else "made private"
            log.warning("%s: %d paths were open to other users; %s", self.cache.root, tightened, made)
        self._nursery = nursery
        nursery.start_soon(self._housekeeping)

    async def stop(self) -> None:
        """Release every lock this daemon holds and record its transfers as interrupted."""
        self.interrupt()
        if self._records is not None:
            with trio.CancelScope(shield=True):
                self._housekeeper.cancel()  # and wait: its database call may be queued behind ours
                with trio.move_on_after(30):
                    if self._nursery is not None:
                        await self._housekeeper_done.wait()
                await self._db(self._records.retire_daemon, self.daemon_id)
                await self._db(self._records.close)
            self._records = None
        self._held.clear()
        self._lock_rows.clear()

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
            return await self._records_thread.run(fn, *args)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                raise
            raise DiskFull(f"{self.cache.root}: the cache's filesystem is full ({exc})") from None

    async def _reclaim(self) -> None:
        """End the transfers of daemons whose lease lapsed; remove the partials of those that are
        gone (never of a daemon still recorded: one paused past its lease may resume)."""
        dead = await self._db(self.records.reclaim_dead)
        known = await self._db(self.records.known_daemon_ids)
        removed = await trio.to_thread.run_sync(self.cache.remove_temps, known)
        if dead or removed:
            log.info("reclaimed %d dead or paused daemon(s), removed %d partial copies", len(dead), removed)

    async def collect(self, force: bool = False) -> GcReport:
        return await self._db(gc.collect, self.cache, self.records, self.settings, force)

    async def _housekeeping(self) -> None:
        """Renew the lease, publish progress, reclaim after dead daemons, collect garbage."""
        try:
            with self._housekeeper:
                await self._housekeep_forever()
        finally:
            self._housekeeper_done.set()

    async def _housekeep_forever(self) -> None:
        renewed = collected = trio.current_time()
        while True:
            await trio.sleep(PROGRESS_SECONDS)
            now = trio.current_time()
            if now - self._tick > PAUSE_GAP:
                self._resumed_at = now
            self._tick = now
            try:
                renewed, collected = await self._housekeep(renewed, collected)
            except DiskFull as exc:  # the records cannot grow for now: try again next round
                log.warning("housekeeping: %s", exc)

    async def _housekeep(self, renewed: float, collected: float) -> tuple[float, float]:
        """One round of housekeeping; returns when the lease was renewed and GC last ran."""
        if self._progress:
            updates, self._progress = self._progress, {}
            await self._db(self.records.progress, updates)
        if trio.current_time() - renewed >= LEASE_SECONDS / 6:
            standing = await self._db(self.records.renew_lease, self.daemon_id)
            if standing != Standing.HELD:
                await self._recover(standing)
            await self._reclaim()
            renewed = trio.current_time()
        if trio.current_time() - collected >= self.settings.gc_interval:
            await self.collect()
            collected = trio.current_time()
        return renewed, collected

    async def _recover(self, standing: Standing) -> None:
        """Back from a pause past the lease: others ended this daemon's transfers (and, if they
        took it for gone, forgot it and its locks). Register again, record the locks again, take
        back each transfer nobody claimed since, restart the others (they join the new owner's)."""
        if standing == Standing.GONE:
            await self._db(self.records.register_daemon, self.daemon_id, self.session, self.mountpoint)
            rows = [(lock_id, object_id, owner) for lock_id, (object_id, owner) in self._lock_rows.items()]
            await self._db(self.records.restore_locks, self.daemon_id, self.session, rows)
        resumed = 0
        for transfer_id, scope in list(self._fills.items()):
            if await self._db(self.records.readopt, transfer_id, self.daemon_id):
                resumed += 1
            else:
                scope.cancel()
        log.warning(
            "the lease lapsed (was the daemon paused?): %s; %d transfer(s) resumed, %d restarted",
            "registered again" if standing == Standing.GONE else "renewed",
            resumed,
            len(self._fills) - resumed,
        )

    def _paused_since(self, since: float) -> bool:
        """True if this daemon did not run for a while after ``since`` (stopped, or starved), or
        is only now running again: a stall or a silence measured across it is not the peer's."""
        return self._resumed_at >= since or trio.current_time() - self._tick > PAUSE_GAP

    # -- locks ------------------------------------------------------------------------------

    async def lock(self, obj: ObjectRef, owner: str) -> Lock:
        return await self._lock(obj, owner, stream=False)

    async def lock_streaming(self, obj: ObjectRef, owner: str) -> Lock:
        return await self._lock(obj, owner, stream=True)

    async def _lock(self, obj: ObjectRef, owner: str, stream: bool) -> Lock:
        if self._closing:
            raise Interrupted("wtfs is shutting down")
        lock_id = uuid.uuid4().hex
        in_place = self.providers.in_place(obj)
        cached: int | None = None
        if in_place is None:  # one trip and one transaction when the copy is cached
            cached = await self._db(self._add_lock_opening, lock_id, obj, owner)
        else:
            await self._db(self.records.add_lock, lock_id, obj.id, self.session, owner, self.daemon_id)
        self._lock_rows[lock_id] = (obj.id, owner)
        streamed: Streamed | None = None
        try:
            if cached is not None:
                self._in_place_fds[lock_id] = cached
                path = str(self.cache.path_for(obj.id))
            elif in_place is None and stream:
                path, streamed = await self._started(lock_id, obj)
            elif in_place is None:
                path = await self._landed(obj)
            else:
                path, obj = await self._open_in_place(lock_id, in_place, obj)
        except BaseException:
            self._lock_rows.pop(lock_id, None)
            self._close_in_place(lock_id)
            with trio.CancelScope(shield=True):
                if self._records is not None:
                    await self._db(self._records.remove_lock, lock_id)
            raise
        lock = Lock(lock_id, obj, path, streamed, -1 if cached is None else cached)
        self._held[lock_id] = lock
        return lock

    def _add_lock_opening(self, lock_id: str, obj: ObjectRef, owner: str) -> int | None:
        """In the records' thread: record the lock and, if the copy is cached, open it for the
        view (which would otherwise make a trip of its own to open it). Returns its descriptor,
        or None when it is not cached."""
        opened: list[int] = []

        def open_copy(obj: ObjectRef) -> bool:
            fd = self.cache.open_cached(obj)
            if fd is not None:
                opened.append(fd)
            return fd is not None

        try:
            add = self.records.add_lock_if_cached
            cached = add(lock_id, obj, self.session, owner, self.daemon_id, open_copy)
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise
        return opened[0] if cached else None

    async def unlock(self, lock: Lock) -> None:
        self._lock_rows.pop(lock.id, None)
        self._close_in_place(lock.id)
        if self._held.pop(lock.id, None) is not None and self._records is not None:
            await self._db(self._records.remove_lock, lock.id)

    # -- watching and prefetching -----------------------------------------------------------

    def prefetch(self, obj: ObjectRef) -> None:
        """Start landing ``obj`` without a lock (the reference's getexternal); returns at once."""
        if self._closing:
            raise Interrupted("wtfs is shutting down")
        if self.providers.in_place(obj) is None:  # a local file is there already
            self._landing_of(obj)

    def prefetch_all(self, objs: list[ObjectRef], limit: int, pool: str = "dir") -> None:
        """Land every one of ``objs`` as ``prefetch`` does, at most ``limit`` landings started
        here at once across all calls of the same ``pool`` (``prefetch_dir``: a directory's first
        listing); returns at once. A pool's first limit holds for the daemon's life."""
        if self._closing or not objs:
            return
        slots = self._prefetch_slots.get(pool)
        if slots is None:
            slots = self._prefetch_slots[pool] = trio.CapacityLimiter(limit)
        assert self._nursery is not None
        self._nursery.start_soon(self._prefetch_bounded, objs, slots)

    def read_ahead(self, objs: list[ObjectRef], limit: int) -> None:
        """Land the small ones of ``objs`` (files a reader is about to open one after another),
        ``limit`` at once; those cached or in transfer already are left alone. Returns at once."""
        wanted = [o for o in objs if _small(o) and o.id not in self._landings and self.providers.in_place(o) is None]
        if self._closing or not wanted:
            return
        assert self._nursery is not None
        self._nursery.start_soon(self._read_ahead, wanted, limit)

    async def _read_ahead(self, objs: list[ObjectRef], limit: int) -> None:
        missing = await self._db(lambda: [o for o in objs if not self.cache.is_cached(o)])
        self.prefetch_all(missing, limit, pool="readahead")

    async def _prefetch_bounded(self, objs: list[ObjectRef], slots: trio.CapacityLimiter) -> None:
        async with trio.open_nursery() as nursery:
            for obj in objs:
                slot = object()  # the borrower: an object may be listed twice, or in two listings
                await slots.acquire_on_behalf_of(slot)
                if self._closing:
                    slots.release_on_behalf_of(slot)
                    return
                nursery.start_soon(self._prefetch_one, obj, slots, slot)

    async def _prefetch_one(self, obj: ObjectRef, slots: trio.CapacityLimiter, slot: object) -> None:
        """One slot for the whole landing (joined if one runs already); its failure is its
        record's, shown by ``state``, as for ``prefetch``."""
        try:
            if self.providers.in_place(obj) is None:
                await self._landing_of(obj).done.wait()
        finally:
            slots.release_on_behalf_of(slot)

    async def state(self, obj: ObjectRef) -> str:
        """``cached``, ``transferring N%``, ``remote`` or ``local`` (a local file, served in place
        with no copy): the ``user.wtfs.state`` xattr."""
        if self.providers.in_place(obj) is not None:
            return "local"
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
        await self._await(obj, landing.done)
        if landing.error is not None:
            raise landing.error
        return landing.path

    async def _started(self, lock_id: str, obj: ObjectRef) -> tuple[str, Streamed | None]:
        """Join (or start) the landing of ``obj`` and wait until its transfer runs here: the lock
        holds a descriptor on the partial (the view opens this very file, also once it is renamed
        into place or removed). A copy cached already, or fetched by another daemon, is waited for."""
        landing = self._landing_of(obj)
        await self._await(obj, landing.started)
        streamed = landing.streamed
        if streamed is None or not streamed.open or landing.done.is_set():
            return await self._landed(obj), None
        fd = os.dup(streamed.partial.fd)
        self._in_place_fds[lock_id] = fd
        return f"/proc/self/fd/{fd}", streamed

    async def _await(self, obj: ObjectRef, event: trio.Event) -> None:
        """Wait for ``event`` of a landing, watching the process that asks (``REQUESTER``): a
        signal that would interrupt it ends its wait, not the landing."""
        requester = REQUESTER.get()
        with trio.CancelScope() as scope:
            self._waiters.add(scope)
            try:
                while not event.is_set():
                    with trio.move_on_after(REQUESTER_POLL if requester else math.inf):
                        await event.wait()
                    if not event.is_set() and procfs.interrupted(requester):
                        raise CallerInterrupted(f"{mask_credentials(obj.source)}: the waiting process was interrupted")
            finally:
                self._waiters.discard(scope)
        if scope.cancelled_caught:
            raise Interrupted(f"{obj.source}: wtfs is shutting down")

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
            landing.started.set()

    async def _land_once(self, obj: ObjectRef) -> str:
        gc_tried = restarted = False
        while True:
            started = trio.current_time()
            provider = self.providers.for_object(obj)
            try:
                with _disk_full_is_nospace(obj, self.cache.root):
                    claim, partial = await self._db(self._claim, obj, provider.resumes and not _small(obj))
            except DiskFull:
                if gc_tried or not await self._relieved(obj):
                    raise
                gc_tried = True
                continue
            if claim.kind == "cached":
                return str(self.cache.path_for(obj.id))
            assert claim.transfer_id is not None
            if claim.kind == "wait" and claim.owner == self.daemon_id:  # ours, yet nothing here runs it
                await self._db(self.records.abandon, claim.transfer_id, "interrupted: left over")
                continue
            if claim.kind == "wait":
                await self._await_foreign(claim.transfer_id)
                continue
            assert partial is not None
            try:
                path = await self._run_transfer(obj, claim.transfer_id, provider, partial)
            except DiskFull:
                if gc_tried or not await self._relieved(obj):
                    raise
                gc_tried = True
                continue
            except Stalled:
                if restarted or not self._paused_since(started):
                    raise
                restarted = True  # once: a daemon starved again and again still answers
                log.info("%s: restarting the transfer after the daemon was paused", obj.source)
                continue
            if path is not None:
                return path

    async def _relieved(self, obj: ObjectRef) -> bool:
        """The cache's filesystem is full: whether evicting unlocked copies made room (then the
        landing is tried once more)."""
        return bool((await self._db(gc.relieve, self.cache, self.records, obj.size)).evicted)

    def _claim(self, obj: ObjectRef, resumable: bool) -> tuple[Claim, Partial | None]:
        """In the records' thread, one hop: claim ``obj``; if it is this daemon's to fetch, make
        room for it (a failure is recorded) and open its partial."""
        claim = self.records.claim(obj, self.daemon_id, self.session, self.cache.is_cached)
        if claim.kind != "mine":
            return claim, None
        assert claim.transfer_id is not None
        try:
            if obj.size is not None:
                gc.make_room(self.cache, self.records, self.settings, obj.id, obj.size)
            return claim, open_partial(self.cache, obj, self.daemon_id, claim.transfer_id, resumable)
        except NoSpace as exc:
            self.records.fail(claim.transfer_id, obj, TransferStatus.FAILED, str(exc), exc.errno)
            raise
        except BaseException:
            self.records.abandon(claim.transfer_id, "interrupted: no partial")
            raise

    async def _run_transfer(self, obj: ObjectRef, transfer_id: int, provider: Provider, partial: Partial) -> str | None:
        """Run a transfer claimed here; None when another daemon took it over while this one was
        paused (``_recover`` cancels it: claim again and join theirs). Whatever happens, the
        record does not stay running."""
        with trio.CancelScope() as scope:
            self._fills[transfer_id] = scope
            try:
                return await self._transfer(obj, transfer_id, provider, partial)
            except BaseException:
                with trio.CancelScope(shield=True):
                    if self._records is not None:
                        await self._db(self._records.abandon, transfer_id, "interrupted")
                raise
            finally:
                del self._fills[transfer_id]
        return None

    async def _await_foreign(self, transfer_id: int) -> None:
        """Another daemon fetches it: wait until it lands, fails, or that daemon dies (its lease
        lapses). One that shows no progress and no heartbeat (its owner's word that the server
        asked it to wait) for longer than ``stall_timeout`` (its owner should have failed it by
        then) is ended here and claimed again: no wait is unbounded."""
        seen: tuple[int, float | None] = (-1, None)
        since = trio.current_time()
        for attempt in FOREIGN_POLL.tries():
            state = await self._db(self.records.transfer_state, transfer_id)
            if state.status == TransferStatus.DONE or not state.owner_alive:
                return
            if state.status in (TransferStatus.FAILED, TransferStatus.FAILED_TEMPORARILY):
                if state.errno is None:
                    return  # interrupted, not failed: claim it again
                raise from_errno(state.errno, state.error or "transfer failed")
            now = trio.current_time()
            if (state.transferred, state.heartbeat) != seen or self._paused_since(since):
                seen, since = (state.transferred, state.heartbeat), now
            elif now - since > self.stall_timeout + TAKEOVER_GRACE:
                reason = f"taken over: no progress for {self.stall_timeout:g}s"
                await self._db(self.records.abandon, transfer_id, reason)
                log.warning("transfer %d: %s", transfer_id, reason)
                return
            await attempt.pause()

    async def _open_in_place(self, lock_id: str, provider: LocalProvider, obj: ObjectRef) -> tuple[str, ObjectRef]:
        """Serve a local file from its source: no copy, no cache space. The lock holds a
        descriptor on it (opened without following symlinks); its path is that descriptor's, so
        the view opens this very file. Returns the path and the object as it is now (a changed
        file is a new object: the view shows its new size and mtime)."""
        fd, current = await trio.to_thread.run_sync(provider.open_source, obj)
        self._in_place_fds[lock_id] = fd
        if current != obj:
            log.info("%s changed since it was listed; serving it as it is now", obj.source)
        return f"/proc/self/fd/{fd}", current

    def _close_in_place(self, lock_id: str) -> None:
        fd = self._in_place_fds.pop(lock_id, None)
        if fd is not None:
            os.close(fd)

    async def _transfer(self, obj: ObjectRef, transfer_id: int, provider: Provider, partial: Partial) -> str:
        if partial.offset:
            log.info("resuming %s at byte %d", obj.source, partial.offset)
        self._running[obj.id] = (partial.offset, obj.size)
        streamed = self._streamed(obj, partial, provider)
        try:
            path, size, usage = await self._fill(obj, transfer_id, provider, partial, streamed)
        except BaseException as exc:  # before the partial is closed: no reader takes it after
            ended = exc if isinstance(exc, WtfsError) else Interrupted(f"{obj.source}: the transfer was interrupted")
            streamed.end(ended)
            raise
        else:
            streamed.end(None)
        finally:
            self._progress.pop(transfer_id, None)
            self._running.pop(obj.id, None)
            partial.close()
        # a line per small file would cost more than its landing (formatting, a write on the loop)
        log.log(logging.DEBUG if _small(obj) else logging.INFO, "landed %s (%d bytes)", obj.source, size)
        if usage > self.settings.gc_start_fraction * self.settings.capacity and not self._collecting:
            self._collecting = True
            assert self._nursery is not None
            self._nursery.start_soon(self._collect_after_landing)
        return str(path)

    async def _collect_after_landing(self) -> None:
        """One GC pass for however many landings crossed the start fraction meanwhile."""
        try:
            await self.collect()
        except DiskFull as exc:  # the records cannot be written now: housekeeping tries again
            log.warning("gc after a landing: %s", exc)
        finally:
            self._collecting = False

    def _streamed(self, obj: ObjectRef, partial: Partial, provider: Provider) -> Streamed:
        """This transfer as streaming readers see it, shown to those waiting on its landing; a
        far read is fetched first where the provider fetches ranges."""
        streamed = Streamed(obj.source, obj.size, partial, self.stall_timeout, self._waiters)
        fetch_range = getattr(provider, "fetch_range", None)
        if fetch_range is not None and self._nursery is not None:
            streamed.fetch_range = functools.partial(fetch_range, obj)
            streamed.spawn = self._nursery.start_soon
        landing = self._landings.get(obj.id)
        if landing is not None:
            landing.streamed = streamed
            landing.started.set()
        return streamed

    async def _fill(
        self, obj: ObjectRef, transfer_id: int, provider: Provider, partial: Partial, streamed: Streamed
    ) -> tuple[Path, int, int]:
        """Fetch into the partial and commit it (returns its path, size and the cache's usage
        after it); on failure the partial is closed and removed (so a
        full disk is freed before the failure is recorded) and the failure recorded. A transfer
        interrupted or stalled keeps a resumable partial for the next one (``dm/partials.py``)."""
        watchdog = trio.CancelScope(deadline=trio.current_time() + self.stall_timeout)
        sink = Sink(
            partial.fd,
            lambda n: self._on_progress(watchdog, transfer_id, obj.id, n, sink, streamed),
            str(partial.path),
            offset=partial.offset,
            validator=partial.validator,
            parts=[Part(start, pos, end, pos) for start, pos, end in partial.parts] if partial.parts else None,
            on_state=lambda state: partial.remember(obj.source, state.validator, _ranges(state.parts)),
        )
        streamed.sink = sink
        try:
            with _disk_full_is_nospace(obj, self.cache.root):
                with watchdog:
                    await provider.fetch(obj, sink)
                if watchdog.cancelled_caught:
                    raise Stalled(f"{obj.source}: no progress for {self.stall_timeout:g}s")
                streamed.stop_ahead()  # the copy is checked and renamed as the stream wrote it
                partial.landed()  # before the rename: the kept name must never reach a landed copy
                if _small(obj):  # one hop: checking and renaming it is quick
                    return await self._db(self._commit, transfer_id, obj, partial, sink.expected_size)
                commit = self.cache.commit  # a sha256 over a large copy must not hold up the records
                path, size, disk_bytes = await trio.to_thread.run_sync(
                    commit, partial.fd, partial.path, obj, sink.expected_size
                )
                return path, size, await self._db(self.records.finish, transfer_id, obj, size, disk_bytes)
        except WtfsError as exc:  # a full disk is not the object's fault: back to remote, tried again
            status = TransferStatus.FAILED_TEMPORARILY if isinstance(exc, DiskFull) else TransferStatus.FAILED
            keep = isinstance(exc, (Stalled, Interrupted))
            streamed.stop_ahead()
            await self._record_failure(partial, transfer_id, obj, status, str(exc), exc.errno, keep)
            log.warning("transfer of %s failed: %s", obj.source, exc)
            raise
        except BaseException as exc:
            cancelled = isinstance(exc, trio.Cancelled)
            status = TransferStatus.FAILED_TEMPORARILY if cancelled else TransferStatus.FAILED
            streamed.stop_ahead()
            error = f"interrupted: {type(exc).__name__}"
            await self._record_failure(partial, transfer_id, obj, status, error, None, keep=cancelled)
            raise

    def _commit(
        self, transfer_id: int, obj: ObjectRef, partial: Partial, reported_size: int | None
    ) -> tuple[Path, int, int]:
        """In the records' thread, one hop: check and rename a small copy into place, record it."""
        durable = obj.sha256 is not None  # a verified copy is kept verified: its size alone is no proof
        path, size, disk_bytes = self.cache.commit(partial.fd, partial.path, obj, reported_size, durable)
        return path, size, self.records.finish(transfer_id, obj, size, disk_bytes)

    def _on_progress(
        self, watchdog: trio.CancelScope, transfer_id: int, obj_id: str, done: int, sink: Sink, streamed: Streamed
    ) -> None:
        watchdog.deadline = trio.current_time() + self.stall_timeout
        self._progress[transfer_id] = (done, sink.expected_size)
        self._running[obj_id] = (done, sink.expected_size)
        streamed.progressed(done)

    async def _record_failure(
        self,
        partial: Partial,
        transfer_id: int,
        obj: ObjectRef,
        status: TransferStatus,
        error: str,
        errno: int | None,
        keep: bool,
    ) -> None:
        """Closes the partial before removing it (an unlinked file still open keeps its blocks: a
        full disk would stay full); ``keep`` leaves it for a resume (nothing wrong with its bytes)."""
        with trio.CancelScope(shield=True):
            partial.discard(keep)
            if self._records is not None:
                await self._db(self._records.fail, transfer_id, obj, status, error, errno)


def _ranges(parts: list[Part] | None) -> list[tuple[int, int, int]] | None:
    return None if parts is None else [(part.start, part.pos, part.end) for part in parts]


@contextlib.contextmanager
def _disk_full_is_nospace(obj: ObjectRef, root: Path) -> Iterator[None]:
    """ENOSPC or EDQUOT from writing the partial (an OSError, hence EIO) becomes DiskFull."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFull(f"{obj.source}: the cache's filesystem ({root}) is full") from None
