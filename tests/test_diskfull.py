"""The cache's filesystem fills up during a transfer: ENOSPC to every waiter, never EIO or a hang;
the partial is gone (and its blocks with it), the object is remote again, the next open retries.

The cache is a small tmpfs, so the disk fills long before the capacity setting says so.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.conftest import DmFactory, Session
from tests.httpserver import Server
from wtfs.dm import EmbeddedDataManager
from wtfs.errors import NoSpace
from wtfs.objects import ObjectRef

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

TMPFS = 2 * 1024 * 1024
BIG = os.urandom(3 * 1024 * 1024)  # never fits
HALF = 1024 * 1024  # one fits, two do not


@pytest.fixture
def tmpfs_cache(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs as the host cache (request it before dm_factory: it must outlive the DMs)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS},mode=0700", "tmpfs", str(cache)], check=True)
    yield cache
    subprocess.run(["umount", "-l", str(cache)], check=False)


def obj(url: str, size: int | None) -> ObjectRef:
    return ObjectRef.for_source(url, size, None)


def free(cache: Path) -> int:
    st = os.statvfs(cache)
    return st.f_bavail * st.f_frsize


def rows(cache: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(cache / "cache.db") as db:
        return list(db.execute(query))


@pytest.mark.parametrize("known_size", [True, False])
async def test_disk_full_is_enospc_and_the_next_open_retries(
    tmpfs_cache: Path, dm_factory: DmFactory, http: Server, known_size: bool
) -> None:
    dm = await dm_factory()
    big = obj(http.add("/big", BIG), len(BIG) if known_size else None)
    with trio.fail_after(20), pytest.raises(NoSpace, match=r"filesystem .* is full") as raised:
        await dm.lock(big, "me")
    assert raised.value.errno == errno.ENOSPC
    assert list((tmpfs_cache / "tmp").iterdir()) == []
    assert free(tmpfs_cache) > TMPFS // 2  # the partial's blocks are back: closed before unlinked
    assert rows(tmpfs_cache, "SELECT status, errno FROM transfers") == [(5, errno.ENOSPC)]
    assert rows(tmpfs_cache, "SELECT status FROM objects") == [("REMOTE",)]
    assert await dm.state(big) == "remote" and dm.records.locks() == []
    small = await dm.lock(obj(http.add("/small", b"s" * 4096), 4096), "me")  # the records still work
    assert Path(small.path).read_bytes() == b"s" * 4096
    with trio.fail_after(20), pytest.raises(NoSpace):
        await dm.lock(big, "me")
    assert http.requests["/big"] == 2  # tried again, not refused from the record


async def test_every_waiter_gets_enospc(tmpfs_cache: Path, dm_factory: DmFactory, http: Server) -> None:
    first, second = await dm_factory(), await dm_factory()  # two daemons on one cache
    gate = threading.Event()
    big = obj(http.add("/big", BIG, gate=gate), len(BIG))
    outcomes: list[BaseException] = []

    async def open_via(dm: EmbeddedDataManager) -> None:
        try:
            await dm.lock(big, "me")
        except NoSpace as exc:
            outcomes.append(exc)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(open_via, first)
            await trio.testing.wait_all_tasks_blocked(0.05)
            nursery.start_soon(open_via, first)  # joins this daemon's landing
            nursery.start_soon(open_via, second)  # waits on the other daemon's transfer
            await trio.testing.wait_all_tasks_blocked(0.05)
            gate.set()
    assert [e.errno for e in outcomes] == [errno.ENOSPC] * 3
    assert http.requests["/big"] == 1


async def test_disk_full_evicts_unlocked_copies_first(tmpfs_cache: Path, dm_factory: DmFactory, http: Server) -> None:
    dm = await dm_factory()
    old = await dm.lock(obj(http.add("/old", b"o" * HALF), HALF), "me")
    await dm.unlock(old)
    new = await dm.lock(obj(http.add("/new", b"n" * HALF), HALF), "me")
    assert Path(new.path).read_bytes() == b"n" * HALF
    assert http.requests["/new"] == 2  # the first try filled the disk; GC freed the old copy
    assert not Path(old.path).exists()
    assert dict(rows(tmpfs_cache, "SELECT source, status FROM objects")) == {
        http.base + "/old": "EVICTED",
        http.base + "/new": "ACTIVE",
    }


@pytest.mark.fuse
def test_open_through_the_mount_fails_with_enospc(tmpfs_cache: Path, session: Session, http: Server) -> None:
    assert session.cache_dir == tmpfs_cache
    m = session.mount(session.spec([{"mountPath": "/big", "url": http.add("/big", BIG)}]))
    for attempt in (1, 2):
        with pytest.raises(OSError) as raised:
            (m.data / "big").read_bytes()
        assert raised.value.errno == errno.ENOSPC
        assert http.requests["/big"] == attempt
    assert os.getxattr(m.data / "big", "user.wtfs.state") == b"remote"
