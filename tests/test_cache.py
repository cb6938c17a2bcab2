"""The host cache's life: GC, ENOSPC, reconciliation, leases after a kill, status, prefetch, xattrs."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import Session
from tests.httpserver import Server
from tests.mounting import wait_for, wtfs
from wtfs.cache_commands import cache_gc
from wtfs.config import CacheSettings
from wtfs.dm.records import CacheRecords
from wtfs.errors import NoSpace
from wtfs.objects import ObjectRef

BLOCK = 102_400  # 25 pages: bytes on disk equal the size


def obj(url: str, size: int = BLOCK) -> ObjectRef:
    return ObjectRef.for_source(url, size, None)


from tests.conftest import DmFactory as Factory  # noqa: E402


def status_of(tmp_path: Path) -> dict[str, str]:
    with sqlite3.connect(tmp_path / "cache" / "cache.db") as db:
        return dict(db.execute("SELECT source, status FROM objects"))


async def test_gc_evicts_least_recently_unlocked_never_locked(
    http: Server, dm_factory: Factory, tmp_path: Path
) -> None:
    settings = CacheSettings(capacity=1_000_000, gc_interval=3600, gc_start_fraction=0.8, gc_end_fraction=0.5)
    dm = await dm_factory(settings=settings)
    urls = [http.add(f"/o{i}", bytes([i]) * BLOCK) for i in range(8)]
    held = None
    for i, url in enumerate(urls[:7]):
        lock = await dm.lock(obj(url), "me")
        if i == 1:
            held = lock
        else:
            await dm.unlock(lock)
    assert len([s for s in status_of(tmp_path).values() if s == "ACTIVE"]) == 7  # 716,800 < 800,000: no GC
    last = await dm.lock(obj(urls[7]), "me")  # 819,200 > 800,000
    await dm.unlock(last)
    report = await dm.collect()
    assert report.usage_after <= 500_000
    states = status_of(tmp_path)
    evicted = sorted(u.rsplit("/", 1)[1] for u, s in states.items() if s == "EVICTED")
    assert evicted == ["o0", "o2", "o3", "o4"]  # oldest unlocked first; o1 is locked
    assert held is not None and Path(held.path).read_bytes() == bytes([1]) * BLOCK
    present = {p.name for p in (tmp_path / "cache" / "objects").rglob("*") if p.is_file()}
    assert present == {obj(urls[i]).id for i in (1, 5, 6, 7)}


async def test_lock_racing_an_eviction_waits_and_fetches_again(
    http: Server, dm_factory: Factory, tmp_path: Path
) -> None:
    dm = await dm_factory(settings=CacheSettings(capacity=10_000_000))
    url = http.add("/o", b"z" * BLOCK)
    await dm.unlock(await dm.lock(obj(url), "me"))
    other = CacheRecords(tmp_path / "cache" / "cache.db", 30.0)  # e.g. `wtfs cache gc` in another process
    removing, proceed = threading.Event(), threading.Event()

    def slow_remove(object_id: str) -> int:
        removing.set()
        proceed.wait(10)  # the eviction is half done: the file is about to go
        return dm.cache.remove(object_id)

    outcome: list[bytes] = []

    async def lock_now() -> None:
        lock = await dm.lock(obj(url), "me")
        outcome.append(Path(lock.path).read_bytes())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, other.evict, obj(url).id, slow_remove)
        await trio.to_thread.run_sync(removing.wait)
        nursery.start_soon(lock_now)
        await trio.sleep(0.2)  # the lock is now queued behind the eviction's transaction
        assert outcome == []
        proceed.set()
    assert outcome == [b"z" * BLOCK]  # never a half-deleted file
    assert http.requests["/o"] == 2  # fetched again after the eviction


async def test_enospc_when_nothing_can_be_evicted(http: Server, dm_factory: Factory, tmp_path: Path) -> None:
    dm = await dm_factory(settings=CacheSettings(capacity=250_000))
    a = await dm.lock(obj(http.add("/a", b"a" * BLOCK)), "me")
    b = await dm.lock(obj(http.add("/b", b"b" * BLOCK)), "me")
    with pytest.raises(NoSpace, match="does not fit"):
        await dm.lock(obj(http.add("/c", b"c" * BLOCK)), "me")
    assert http.requests["/c"] == 0
    await dm.unlock(a)
    c = await dm.lock(obj(http.base + "/c"), "me")  # now /a can be evicted to make room
    assert Path(c.path).read_bytes() == b"c" * BLOCK
    assert not Path(a.path).exists() and Path(b.path).exists()


async def test_reconcile_at_start(http: Server, dm_factory: Factory, tmp_path: Path) -> None:
    settings = CacheSettings(capacity=10_000_000)
    first = await dm_factory(settings=settings)
    url = http.add("/o", b"o" * BLOCK)
    lock = await first.lock(obj(url), "me")
    await first.unlock(lock)
    await first.stop()
    Path(lock.path).unlink()  # deleted by hand
    stray = tmp_path / "cache" / "objects" / "ab" / ("ab" + "0" * 38)
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"who am I")
    second = await dm_factory(settings=settings)
    assert status_of(tmp_path)[url] == "EVICTED"
    assert not stray.exists()
    again = await second.lock(obj(url), "me")
    assert Path(again.path).read_bytes() == b"o" * BLOCK
    assert http.requests["/o"] == 2


async def test_kept_partials_nobody_will_resume_go_at_start(http: Server, dm_factory: Factory, tmp_path: Path) -> None:
    """resume/ keeps partials for later transfers; the next start removes those of objects
    that landed since and those a week old, never one a live transfer holds."""
    first = await dm_factory()
    url = http.add("/landed", b"l" * BLOCK)
    await first.unlock(await first.lock(obj(url), "me"))
    await first.stop()
    resume = tmp_path / "cache" / "resume"
    resume.mkdir(exist_ok=True)

    def kept(object_id: str, age_days: float = 0) -> Path:
        part = resume / f"{object_id}.part"
        part.write_bytes(b"x" * 100)
        part.with_suffix(".json").write_text(json.dumps({"source": "http://x/", "validator": '"v"'}))
        when = part.stat().st_mtime - age_days * 86400
        os.utime(part, (when, when))
        return part

    landed, old, fresh, held = kept(obj(url).id), kept("0" * 40, 8), kept("1" * 40, 1), kept("2" * 40, 8)
    holder = os.open(held, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # as a live transfer of another daemon holds its partial
        await dm_factory()
        assert [p.exists() for p in (landed, old, fresh, held)] == [False, False, True, True]
        assert not landed.with_suffix(".json").exists() and fresh.with_suffix(".json").exists()
    finally:
        os.close(holder)


# -- through mounts ------------------------------------------------------------------------------


def db_rows(cache: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(cache / "cache.db") as db:
        return list(db.execute(query))


def read_until_killed(path: Path) -> None:
    with contextlib.suppress(OSError):  # the daemon is killed under it: ENOTCONN
        path.read_bytes()


@pytest.mark.fuse
def test_killed_daemon_is_reclaimed_by_another(session: Session, http: Server) -> None:
    held_url = http.add("/held", b"h" * BLOCK)
    http.add("/slow", os.urandom(2_000_000), delay=0.05)
    a = session.mount(
        session.spec(
            [{"mountPath": "/held", "url": held_url}, {"mountPath": "/slow", "url": http.base + "/slow"}], name="a"
        ),
        where="a",
    )
    b = session.mount(session.spec([{"mountPath": "/slow", "url": http.base + "/slow"}], name="b"), where="b")
    held = open(a.data / "held", "rb")  # noqa: SIM115 - held across the kill
    threading.Thread(target=read_until_killed, args=(a.data / "slow",), daemon=True).start()
    wait_for(lambda: any((session.cache_dir / "tmp").iterdir()), what="a's partial copy")
    assert len(db_rows(session.cache_dir, "SELECT * FROM locks")) == 2
    a.kill()
    # b renews its lease every 5 s and reclaims what the dead daemon held (well within the 30 s lease)
    wait_for(lambda: db_rows(session.cache_dir, "SELECT * FROM locks") == [], timeout=30, what="a's locks reclaimed")
    wait_for(lambda: not any((session.cache_dir / "tmp").iterdir()), timeout=30, what="a's temp file removed")
    http.resources["/slow"].delay = 0
    assert (b.data / "slow").read_bytes() == http.resources["/slow"].body
    statuses = [row[0] for row in db_rows(session.cache_dir, "SELECT status FROM transfers ORDER BY id")]
    assert 5 in statuses and statuses[-1] == 3  # interrupted, then fetched anew
    with contextlib.suppress(OSError):
        held.close()  # the kernel answers for the dead daemon


@pytest.mark.fuse
def test_status_json_and_dot_wtfs_agree(session: Session, http: Server) -> None:
    m = session.mount(
        session.spec(
            [
                {"mountPath": "/a", "url": http.add("/a", b"a" * 1000)},
                {"mountPath": "/b", "url": http.add("/b", b"b" * 2000)},
            ]
        )
    )
    with open(m.data / "a", "rb") as held:
        assert held.read() == b"a" * 1000
        assert (m.data / "b").read_bytes() == b"b" * 2000
        cli = json.loads(wtfs("status", str(m.path), "--json").stdout)
        inside = json.loads((m.path / ".wtfs" / "status.json").read_text())
        transfers = json.loads((m.path / ".wtfs" / "transfers.json").read_text())
        text = wtfs("status", str(m.path))
    assert ".wtfs" not in os.listdir(m.path)
    for report in (cli, inside):
        assert [(lk["sessionId"], lk["ownerId"].split("@")[0]) for lk in report["locks"]] == [("test", "test")]
        assert sorted((t["statusName"], t["transferred"]) for t in report["transfers"]) == [
            ("DONE", 1000),
            ("DONE", 2000),
        ]
        assert [s["sessionId"] for s in report["sessions"]] == ["test"]
        assert report["cache"]["objects"] == 2 and report["cache"]["capacity"] == 10 * 1024**3
    assert [t["id"] for t in transfers] == [t["id"] for t in inside["transfers"]]
    assert text.returncode == 0 and "locks (1):" in text.stdout and "DONE" in text.stdout


@pytest.mark.fuse
def test_prefetch_lands_without_locks_and_xattrs_show_state(session: Session, http: Server) -> None:
    gate = threading.Event()
    m = session.mount(
        session.spec(
            [
                {"mountPath": "/d/one", "url": http.add("/one", b"1" * 5000, gate=gate)},
                {"mountPath": "/d/two", "url": http.add("/two", b"2" * 5000, gate=gate)},
            ]
        )
    )
    state = lambda p: os.getxattr(p, "user.wtfs.state").decode()  # noqa: E731
    assert state(m.data / "d" / "one") == "remote"
    started = wtfs("prefetch", str(m.data / "d"))
    assert started.returncode == 0 and "prefetching 2 file(s)" in started.stdout
    wait_for(lambda: http.requests["/one"] == 1 and http.requests["/two"] == 1, what="prefetch transfers")
    assert state(m.data / "d" / "one").startswith("transferring")
    gate.set()
    waited = wtfs("prefetch", str(m.data / "d"), "--wait")
    assert waited.returncode == 0 and "2/2 landed" in waited.stdout
    assert state(m.data / "d" / "one") == "cached"
    assert db_rows(session.cache_dir, "SELECT * FROM locks") == []
    assert (m.data / "d" / "two").read_bytes() == b"2" * 5000
    assert http.requests["/two"] == 1  # the open used the prefetched copy
    evicted = wtfs("cache", "evict", str(m.data / "d" / "one"))
    assert evicted.returncode == 0
    assert state(m.data / "d" / "one") == "remote"
    listing = wtfs("cache", "ls", "--cache-dir", str(session.cache_dir), "--json")
    assert sorted(o["status"] for o in json.loads(listing.stdout)) == ["ACTIVE", "EVICTED"]


@pytest.mark.fuse
def test_failed_prefetch_says_why(session: Session, http: Server) -> None:
    m = session.mount(session.spec([{"mountPath": "/gone", "url": http.add("/gone", b"x", fault="404")}]))
    result = wtfs("prefetch", str(m.data / "gone"), "--wait")
    assert result.returncode == 1
    assert "HTTP 404" in result.stderr
    assert os.getxattr(m.data / "gone", "user.wtfs.state").decode().startswith("failed: ")


# -- usage in the records -------------------------------------------------------------------------


def on_disk(tmp_path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in (tmp_path / "cache" / "objects").rglob("*") if p.is_file())


async def test_cold_open_does_not_scan_the_cache(
    http: Server, dm_factory: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Usage comes from the records: neither a cold nor a warm open lists a cache directory."""
    dm = await dm_factory(settings=CacheSettings(capacity=10_000_000))
    for i in range(5):
        await dm.unlock(await dm.lock(obj(http.add(f"/w{i}", bytes([i]) * BLOCK)), "me"))
    cache = str(tmp_path / "cache")
    scans: list[str] = []

    def counting(real: Any) -> Any:
        def listing(path: Any = ".", *args: Any, **kwargs: Any) -> Any:
            if os.fspath(path).startswith(cache):
                scans.append(os.fspath(path))
            return real(path, *args, **kwargs)

        return listing

    for name in ("scandir", "listdir", "walk"):
        monkeypatch.setattr(os, name, counting(getattr(os, name)))
    cold = await dm.lock(obj(http.add("/cold", b"c" * BLOCK)), "me")
    warm = await dm.lock(obj(http.base + "/w0"), "me")
    assert Path(cold.path).read_bytes() == b"c" * BLOCK and Path(warm.path).read_bytes() == b"\0" * BLOCK
    await dm.collect()
    assert scans == []


async def test_usage_is_recorded_at_landing_and_eviction(http: Server, dm_factory: Factory, tmp_path: Path) -> None:
    dm = await dm_factory(settings=CacheSettings(capacity=10_000_000, gc_interval=3600, gc_end_fraction=0.0))
    locks = [await dm.lock(obj(http.add(f"/u{i}", bytes([i]) * BLOCK)), "me") for i in range(4)]
    assert dm.records.usage() == on_disk(tmp_path) == 4 * BLOCK
    for lock in locks[:3]:
        await dm.unlock(lock)
    report = await dm.collect(force=True)  # down to 0: every unlocked copy goes, the locked one stays
    assert sorted(report.evicted) == sorted(lock.obj.id for lock in locks[:3])
    assert report.usage_after == dm.records.usage() == on_disk(tmp_path) == BLOCK
    assert (await dm.report())["cache"]["usage"] == BLOCK


async def test_cache_gc_reconciles_the_records_with_the_disk(
    http: Server, dm_factory: Factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dm = await dm_factory(settings=CacheSettings(capacity=10_000_000))
    gone = await dm.lock(obj(http.add("/gone", b"g" * BLOCK)), "me")
    kept = await dm.lock(obj(http.add("/kept", b"k" * BLOCK)), "me")
    Path(gone.path).unlink()  # deleted by hand while mounted
    stray = tmp_path / "cache" / "objects" / "ab" / ("ab" + "0" * 38)
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"who am I")
    assert dm.records.usage() == 2 * BLOCK  # the records do not look at the disk...
    await trio.to_thread.run_sync(cache_gc, str(tmp_path / "cache"), False)  # ...until reconciled
    assert "reconciled: 1 records without a file, 1 files without a record" in capsys.readouterr().out
    assert not stray.exists() and Path(kept.path).exists()
    assert status_of(tmp_path)[http.base + "/gone"] == "EVICTED"
    assert dm.records.usage() == on_disk(tmp_path) == BLOCK
