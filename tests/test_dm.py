"""The embedded data manager without FUSE: locks, one transfer per object, failures, verification.

Runs against the real loopback HTTP server of tests.httpserver.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.httpserver import Server
from wtfs.dm import EmbeddedDataManager
from wtfs.dm.trips import OneThread
from wtfs.errors import AccessDenied, NotFound, Stalled, TransferFailed
from wtfs.objects import ObjectRef

BODY = os.urandom(300_000)

from tests.conftest import DmFactory as Factory  # noqa: E402


def obj(url: str, size: int | None = len(BODY), sha256: str | None = None) -> ObjectRef:
    return ObjectRef.for_source(url, size, sha256)


def cached_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "cache" / "objects").rglob("*") if p.is_file()]


def transfer_rows(tmp_path: Path) -> list[tuple[int, int, int | None]]:
    with sqlite3.connect(tmp_path / "cache" / "cache.db") as db:
        return list(db.execute("SELECT status, transferred, errno FROM transfers ORDER BY id"))


async def test_lock_lands_the_bytes_and_unlock_releases(http: Server, dm_factory: Factory, tmp_path: Path) -> None:
    dm = await dm_factory()
    url = http.add("/a", BODY)
    lock = await dm.lock(obj(url), "me")
    assert Path(lock.path).read_bytes() == BODY
    assert transfer_rows(tmp_path) == [(3, len(BODY), None)]
    assert len(dm.records.locks()) == 1
    await dm.unlock(lock)
    assert dm.records.locks() == []
    fds = len(os.listdir("/proc/self/fd"))
    again = await dm.lock(obj(url), "me")  # cached now: opened in the lock's own trip, for the view
    assert os.pread(again.fd, len(BODY), 0) == BODY
    await dm.unlock(again)
    assert len(os.listdir("/proc/self/fd")) == fds  # and closed with the lock


async def test_concurrent_locks_share_one_transfer(http: Server, dm_factory: Factory) -> None:
    dm = await dm_factory()
    gate = threading.Event()
    url = http.add("/a", BODY, gate=gate)
    paths: list[str] = []

    async def open_one() -> None:
        paths.append((await dm.lock(obj(url), "me")).path)

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(open_one)
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert paths == []  # nobody returns before the copy lands
        gate.set()
    assert len(set(paths)) == 1 and len(paths) == 20
    assert http.requests["/a"] == 1


async def test_two_data_managers_on_one_cache_fetch_once(http: Server, dm_factory: Factory) -> None:
    """Two daemons' worth of data managers (distinct ids, one SQLite cache) fetch an object once."""
    first, second = await dm_factory(), await dm_factory()
    gate = threading.Event()
    url = http.add("/a", BODY, gate=gate)
    results: list[bytes] = []

    async def via(dm: EmbeddedDataManager) -> None:
        results.append(Path((await dm.lock(obj(url), "me")).path).read_bytes())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(via, first)
        await trio.testing.wait_all_tasks_blocked(0.05)
        nursery.start_soon(via, second)
        await trio.testing.wait_all_tasks_blocked(0.05)
        gate.set()
    assert results == [BODY, BODY]
    assert http.requests["/a"] == 1


async def test_500_then_success_is_retried(http: Server, dm_factory: Factory) -> None:
    dm = await dm_factory()
    url = http.add("/a", BODY, fault="500-then-ok", fail_times=2)
    lock = await dm.lock(obj(url), "me")
    assert Path(lock.path).read_bytes() == BODY
    assert http.requests["/a"] == 3


async def test_dropped_connection_resumes_with_range(http: Server, dm_factory: Factory) -> None:
    dm = await dm_factory()
    url = http.add("/a", BODY, fault="drop", fail_times=1)
    lock = await dm.lock(obj(url), "me")
    assert Path(lock.path).read_bytes() == BODY
    assert http.range_requests["/a"] == 1
    assert http.resources["/a"].served == len(BODY)  # nothing was sent twice


@pytest.mark.parametrize(
    ("fault", "error", "code"),
    [("404", NotFound, errno.ENOENT), ("403", AccessDenied, errno.EACCES), ("401", AccessDenied, errno.EACCES)],
)
async def test_client_errors_are_not_retried(
    http: Server, dm_factory: Factory, tmp_path: Path, fault: str, error: type[Exception], code: int
) -> None:
    dm = await dm_factory()
    url = http.add("/a", BODY, fault=fault)
    with pytest.raises(error):
        await dm.lock(obj(url), "me")
    assert http.requests["/a"] == 1
    assert cached_files(tmp_path) == []
    assert transfer_rows(tmp_path) == [(4, 0, code)]
    assert dm.records.locks() == []


async def test_persistent_500_fails_with_eio(http: Server, dm_factory: Factory, tmp_path: Path) -> None:
    dm = await dm_factory()
    url = http.add("/a", BODY, fault="500")
    with pytest.raises(TransferFailed, match="HTTP 500"):
        await dm.lock(obj(url), "me")
    assert http.requests["/a"] == 5
    assert cached_files(tmp_path) == []


async def test_wrong_length_is_eio_and_nothing_cached(http: Server, dm_factory: Factory, tmp_path: Path) -> None:
    dm = await dm_factory()
    url = http.add("/a", BODY, fault="wrong-length")
    with pytest.raises(TransferFailed, match="expected 300000"):
        await dm.lock(obj(url), "me")
    assert cached_files(tmp_path) == []
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


async def test_wrong_sha256_is_eio_and_nothing_cached(http: Server, dm_factory: Factory, tmp_path: Path) -> None:
    dm = await dm_factory()
    url = http.add("/a", BODY)
    with pytest.raises(TransferFailed, match="sha256 mismatch"):
        await dm.lock(obj(url, sha256="0" * 64), "me")
    assert cached_files(tmp_path) == []
    good = await dm.lock(obj(url, sha256=hashlib.sha256(BODY).hexdigest()), "me")
    assert Path(good.path).read_bytes() == BODY


async def test_stalled_server_times_out(http: Server, dm_factory: Factory, tmp_path: Path) -> None:
    dm = await dm_factory(stall_timeout=0.5)
    url = http.add("/a", BODY, fault="stall")
    with trio.fail_after(10):
        with pytest.raises(Stalled, match=r"no progress for 0\.5s"):
            await dm.lock(obj(url), "me")
    assert cached_files(tmp_path) == []
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


async def test_failed_transfer_is_tried_again_by_the_next_lock(http: Server, dm_factory: Factory) -> None:
    dm = await dm_factory()
    url = http.add("/a", BODY, fault="404")
    with pytest.raises(NotFound):
        await dm.lock(obj(url), "me")
    http.resources["/a"].fault = None
    lock = await dm.lock(obj(url), "me")
    assert Path(lock.path).read_bytes() == BODY


async def test_interrupt_fails_waiting_locks(http: Server, dm_factory: Factory) -> None:
    dm = await dm_factory()
    url = http.add("/a", BODY, gate=threading.Event())
    outcome: list[BaseException] = []

    async def waiter() -> None:
        try:
            await dm.lock(obj(url), "me")
        except Exception as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked(0.05)
        dm.interrupt()
    assert [type(e).__name__ for e in outcome] == ["Interrupted"]
    assert dm.records.locks() == []


def test_a_report_keeps_running_transfers_and_the_recent_finished_ones() -> None:
    from wtfs.dm.records import TransferStatus
    from wtfs.dm.report import RECENT_TRANSFERS, recent

    done = [{"id": i, "status": TransferStatus.DONE} for i in range(RECENT_TRANSFERS + 50)]
    running = {"id": 3, "status": TransferStatus.TRANSFERRING}
    rows = sorted([*done, running], key=lambda r: (r["id"], r["status"] != TransferStatus.TRANSFERRING))
    kept = recent(rows)
    assert running in kept  # a running transfer is never dropped, however old
    assert [r for r in kept if r is not running] == done[-RECENT_TRANSFERS:]  # and the last N finished


async def test_records_calls_queued_during_a_trip_share_the_next_in_order() -> None:
    """The records' calls go to a worker thread one trip at a time (dm/trips.py): those asked
    while a trip runs go together in the next one, in the order asked; an error is its caller's."""
    thread = OneThread()
    started, release = threading.Event(), threading.Event()
    ran: list[int] = []
    results: dict[int, object] = {}

    def blocker() -> None:
        started.set()
        release.wait(10)
        ran.append(0)

    def step(n: int) -> int:
        ran.append(n)
        if n == 2:
            raise ValueError("two")
        return n

    async def ask(n: int) -> None:
        try:
            results[n] = await thread.run(step, n)
        except ValueError as exc:
            results[n] = str(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(thread.run, blocker)
        await trio.to_thread.run_sync(started.wait, 10)
        for n in (1, 2, 3):  # one after another: trio runs tasks started together in any order
            nursery.start_soon(ask, n)
            await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert ran == [0, 1, 2, 3]
    assert results == {1: 1, 2: "two", 3: 3}
    assert thread.trips == 2


async def test_records_calls_do_not_wait_for_other_worker_threads() -> None:
    """trio's default thread limiter (40) full of slow calls elsewhere (fsync, listdir) must not
    hold up locks and unlocks: the records' thread has its own token."""
    limiter = trio.to_thread.current_default_thread_limiter()
    release, done = threading.Event(), trio.Event()
    thread = OneThread()

    async def records_call() -> None:
        await thread.run(lambda: None)
        done.set()

    async with trio.open_nursery() as nursery:
        for _ in range(int(limiter.total_tokens)):
            nursery.start_soon(trio.to_thread.run_sync, release.wait, 30)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(records_call)
        with trio.move_on_after(3):  # a deadline, not a sleep: the call takes microseconds
            await done.wait()
        finished = done.is_set()
        release.set()
    assert finished
