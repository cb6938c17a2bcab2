"""The host cache under faults: no wait without a deadline, a paused daemon recovers, an open
blocked on a transfer can be interrupted, modes with a cache group, records of dead daemons go.

Two data managers on one cache directory play two daemons on one host (as in test_dm.py);
pauses and signals use real mounted daemons. All bytes come from the loopback HTTP server.
"""

from __future__ import annotations

import grp
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trio

from tests.conftest import DmFactory, Session
from tests.httpserver import Server
from tests.mounting import is_mounted, wait_for, wtfs
from wtfs import runtime
from wtfs.dm import EmbeddedDataManager, embedded
from wtfs.dm.cache import HostCache
from wtfs.dm.records import LAPSED, CacheRecords, TransferStatus
from wtfs.errors import WtfsError
from wtfs.objects import ObjectRef

BODY = os.urandom(256 * 1024)


def obj(url: str, size: int | None = len(BODY)) -> ObjectRef:
    return ObjectRef.for_source(url, size, None)


def records(tmp_path: Path) -> CacheRecords:
    """Another connection to the cache's records (the data managers' own is their worker's)."""
    return CacheRecords(tmp_path / "cache" / "cache.db", 30.0)


def db_rows(cache: Path, query: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(cache / "cache.db", timeout=30) as db:
        return list(db.execute(query, args))


async def requested(http: Server, path: str) -> None:
    """Wait (10 s at most) until the server got a GET of ``path``."""
    with trio.fail_after(10):
        while http.requests[path] == 0:
            await trio.sleep(0.01)


async def test_a_foreign_transfer_without_progress_is_taken_over(
    http: Server, dm_factory: DmFactory, tmp_path: Path
) -> None:
    """The owner neither progresses nor fails it (its own stall timeout is long): the waiter's
    wait ends after its stall_timeout (+ a grace), it takes the transfer over and lands it."""
    owner, waiter = await dm_factory(stall_timeout=60.0), await dm_factory(stall_timeout=1.0)
    url = http.add("/x", BODY, fault="stall")
    owner.prefetch(obj(url))
    await requested(http, "/x")
    with trio.fail_after(10):  # the stalled answer has begun (its fault read): only then clear it
        while http.resources["/x"].served == 0:
            await trio.sleep(0.01)
    http.resources["/x"].fault = None  # the next GET gets the whole body
    started = trio.current_time()
    with trio.fail_after(15):
        lock = await waiter.lock(obj(url), "me")
    assert Path(lock.path).read_bytes() == BODY
    assert trio.current_time() - started < 10
    first, second = db_rows(tmp_path / "cache", "SELECT status, error FROM transfers ORDER BY id")
    assert first == (TransferStatus.FAILED_TEMPORARILY, "taken over: no progress for 1s")
    assert second == (TransferStatus.DONE, None)
    await waiter.unlock(lock)


async def test_an_owner_told_to_wait_by_the_server_is_not_taken_over(
    http: Server, dm_factory: DmFactory, tmp_path: Path
) -> None:
    """The server answers 503 with Retry-After twice: the owner waits as told (within its stall
    timeout), and says so in its record; a waiter whose stall timeout is shorter than the whole
    wait leaves the transfer to it. One transfer, one GET that gets the body."""
    owner, waiter = await dm_factory(stall_timeout=3.0), await dm_factory(stall_timeout=1.0)
    url = http.add("/told", BODY, fault="503-then-ok", fail_times=2, retry_after="2")
    owner.prefetch(obj(url))
    await requested(http, "/told")
    with trio.fail_after(20):
        lock = await waiter.lock(obj(url), "me")
    assert Path(lock.path).read_bytes() == BODY
    assert http.requests["/told"] == 3  # two answered "wait", one with the body: nobody else asked
    assert db_rows(tmp_path / "cache", "SELECT status, error FROM transfers") == [(TransferStatus.DONE, None)]
    await waiter.unlock(lock)


async def test_no_record_stays_transferring_without_someone_on_it(
    http: Server, dm_factory: DmFactory, tmp_path: Path
) -> None:
    """A record left running by this very daemon (nothing in it runs it) is ended, not waited on."""
    dm = await dm_factory(stall_timeout=30.0)
    url = http.add("/y", BODY)
    claim = records(tmp_path).claim(obj(url), dm.daemon_id, dm.session, dm.cache.is_cached)
    assert claim.kind == "mine"
    with trio.fail_after(10):
        lock = await dm.lock(obj(url), "me")
    assert Path(lock.path).read_bytes() == BODY
    statuses = db_rows(tmp_path / "cache", "SELECT status FROM transfers ORDER BY id")
    assert statuses == [(TransferStatus.FAILED_TEMPORARILY,), (TransferStatus.DONE,)]
    await dm.unlock(lock)


async def test_every_waiter_of_a_stalled_owner_gets_an_answer(
    http: Server, dm_factory: DmFactory, tmp_path: Path
) -> None:
    """The owner's own stall timeout fails it: its waiter here and the one in another daemon
    both get ETIMEDOUT, and nothing is left running."""
    owner, other = await dm_factory(stall_timeout=1.0), await dm_factory(stall_timeout=60.0)
    url = http.add("/z", BODY, fault="stall")
    outcomes: list[str] = []

    async def open_via(dm: EmbeddedDataManager) -> None:
        try:
            await dm.lock(obj(url), "me")
        except WtfsError as exc:
            outcomes.append(f"{type(exc).__name__} errno={exc.errno}")

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(open_via, owner)
            await requested(http, "/z")
            nursery.start_soon(open_via, other)
    assert outcomes == ["Stalled errno=110", "Stalled errno=110"]
    assert db_rows(tmp_path / "cache", "SELECT COUNT(*) FROM transfers WHERE status IN (0,1,2)") == [(0,)]


class Reader(threading.Thread):
    """Reads a whole file in a thread (its open may block on a transfer); ``result`` when done."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.result: bytes | BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.path.read_bytes()
        except BaseException as exc:
            self.result = exc


@pytest.mark.fuse
def test_a_daemon_paused_past_its_lease_recovers(
    session: Session, http: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOP past the lease: the other daemon takes over one transfer and keeps the paused one's
    partials; after SIGCONT the paused daemon renews, keeps its open handle and lock, resumes the
    transfer nobody took and joins the one taken over."""
    monkeypatch.setenv("WTFS_LEASE", "3")
    body = os.urandom(1024 * 1024)
    urls = {name: http.add(f"/{name}", body, delay=0.1) for name in ("kept", "taken")}
    small = http.add("/small", b"s" * 4096)
    entries = [{"mountPath": f"/{name}", "url": url} for name, url in {**urls, "small": small}.items()]
    a = session.mount(session.spec(entries, name="a"), where="a")
    b = session.mount(session.spec(entries, name="b"), where="b")
    cache = session.cache_dir
    held = open(a.data / "small", "rb")  # noqa: SIM115 - held across the pause
    readers = {name: Reader(a.data / name) for name in urls}
    wait_for(lambda: all(http.resources[f"/{n}"].served for n in urls), what="both transfers to start")
    (a_id,) = db_rows(cache, "SELECT id FROM daemons WHERE pid=?", a.pid)[0]
    os.kill(a.pid, signal.SIGSTOP)
    try:
        lapsed = "SELECT COUNT(*) FROM transfers WHERE daemon_id=? AND error=?"
        wait_for(lambda: db_rows(cache, lapsed, a_id, LAPSED) == [(2,)], timeout=20, what="a's transfers ended")
        partials = [p.name for p in (cache / "tmp").iterdir() if p.name.startswith(f"{a_id}.")]
        assert len(partials) == 2  # b reclaimed a's transfers but kept its partials
        assert (b.data / "taken").read_bytes() == body  # taken over while a sleeps
    finally:
        os.kill(a.pid, signal.SIGCONT)
    for name, reader in readers.items():
        wait_for(lambda r=reader: r.result is not None, timeout=30, what=f"a's reader of {name}")  # type: ignore[misc]
        assert reader.result == body
    assert http.requests["/kept"] == 1  # resumed, not fetched again
    assert http.requests["/taken"] == 2  # a's and b's, a's given up
    assert held.read() == b"s" * 4096
    held.close()
    renewed = "SELECT COUNT(*) FROM daemons WHERE id=? AND lease_until > ?"
    wait_for(lambda: db_rows(cache, renewed, a_id, time.time()) == [(1,)], timeout=10, what="a's lease renewed")
    assert "the lease lapsed" in a.log.read_text()


async def test_a_daemon_taken_for_gone_registers_again_with_its_locks(
    http: Server, dm_factory: DmFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another host's daemon cannot see our process: past our lease it forgets us and our locks
    (played here by retiring the record). At the next renewal we are back, locks and all."""
    monkeypatch.setattr(embedded, "LEASE_SECONDS", 3.0)
    dm = await dm_factory()
    lock = await dm.lock(obj(http.add("/g", BODY)), "me")
    other = records(tmp_path)
    other.retire_daemon(dm.daemon_id)
    assert other.locks() == [] and dm.daemon_id not in other.known_daemon_ids()
    with trio.fail_after(10):
        while dm.daemon_id not in other.live_daemon_ids():
            await trio.sleep(0.05)
    assert [row["id"] for row in other.locks()] == [lock.id]
    await dm.unlock(lock)
    assert other.locks() == []


@pytest.mark.fuse
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_an_open_blocked_on_a_transfer_can_be_interrupted(session: Session, http: Server, sig: signal.Signals) -> None:
    """kill -9 or Ctrl-C a process waiting in open(): it ends at once, its lock is gone, and the
    transfer goes on and lands for the next reader."""
    gate = threading.Event()
    m = session.mount(session.spec([{"mountPath": "/held", "url": http.add("/held", BODY, gate=gate)}]))
    cache = session.cache_dir
    reader = subprocess.Popen([sys.executable, "-c", "import sys; open(sys.argv[1], 'rb').read()", m.data / "held"])
    try:
        wait_for(lambda: db_rows(cache, "SELECT COUNT(*) FROM locks") == [(1,)], what="the reader to wait in open")
        wait_for(lambda: http.requests["/held"] == 1, what="the transfer to start")
        reader.send_signal(sig)
        wait_for(lambda: reader.poll() is not None, timeout=5, what="the interrupted reader to end")
    finally:
        reader.kill()
        reader.wait()
    assert reader.returncode == -sig
    wait_for(lambda: db_rows(cache, "SELECT COUNT(*) FROM locks") == [(0,)], timeout=5, what="its lock to go")
    assert os.getxattr(m.data / "held", "user.wtfs.state").startswith(b"transferring")
    gate.set()
    assert (m.data / "held").read_bytes() == BODY
    assert http.requests["/held"] == 1  # the same transfer, not a new one


def modes_and_groups(cache: Path) -> dict[str, tuple[int, int]]:
    """(mode, gid) of the cache and everything in it but partials (which stay the owner's)."""
    found = {str(cache): (stat.S_IMODE(cache.stat().st_mode), cache.stat().st_gid)}
    for directory, dirs, files in os.walk(cache):
        dirs[:] = [d for d in dirs if d != "resume" or directory != str(cache)]
        for name in dirs + files if not directory.endswith("/tmp") else dirs:
            st = os.stat(os.path.join(directory, name))
            found[os.path.join(directory, name)] = (stat.S_IMODE(st.st_mode), st.st_gid)
    return found


@pytest.mark.fuse
def test_a_cache_group_may_read_the_cache(session: Session, http: Server) -> None:
    """cache_group: directories 0750 (setgid), copies 0640, all of that group, the database
    0600 (its records hold sources and errors); a cache left open to everyone is limited to the
    group at start-up with one log line."""
    users = grp.getgrnam("users").gr_gid
    session.cache_dir.mkdir(mode=0o755)
    os.chmod(session.cache_dir, 0o755)  # as an older wtfs left it
    (session.cache_dir / "cache.db").touch(mode=0o644)
    m = session.mount(session.spec([{"mountPath": "/f", "url": http.add("/f", BODY)}], cache_group="users"))
    assert (m.data / "f").read_bytes() == BODY
    found = modes_and_groups(session.cache_dir)
    assert len([p for p in found if "/objects/" in p]) == 2  # a shard directory and the copy
    db_files = {f"{session.cache_dir}/cache.db{suffix}" for suffix in ("", "-wal", "-shm")}
    assert db_files <= found.keys()
    assert {path: mode for path, (mode, _) in found.items() if path in db_files} == dict.fromkeys(db_files, 0o600)
    expected = {path: (0o2750 if os.path.isdir(path) else 0o640, users) for path in found if path not in db_files}
    assert {path: found[path] for path in expected} == expected
    lines = [line for line in m.log.read_text().splitlines() if "open to other users" in line]
    assert len(lines) == 1 and lines[0].endswith("limited to group users")


@pytest.mark.fuse
def test_an_unknown_cache_group_is_one_line(session: Session, tmp_path: Path, http: Server) -> None:
    spec = session.spec([{"mountPath": "/f", "url": http.add("/f", BODY)}])
    (tmp_path / "mnt").mkdir()
    result = wtfs("mount", str(spec), str(tmp_path / "mnt"), "-o", "cache_group=no-such-group")
    assert result.returncode != 0 and not is_mounted(tmp_path / "mnt")
    assert result.stderr.strip().splitlines()[-1].endswith("cache_group: no group named 'no-such-group' on this host")
    assert "Traceback" not in result.stderr


USER = 12345
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by every user, unlike the venv's under /root
ROOT = Path(__file__).resolve().parents[1]
SITE = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))


def as_user(groups: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python3 ARGS`` as uid USER in ``groups`` only, with this tree and the venv's packages."""
    env = {"PATH": os.environ["PATH"], "HOME": "/", "PYTHONPATH": f"{ROOT}:{SITE}"}
    ids = ("setpriv", f"--reuid={USER}", f"--regid={USER}", f"--groups={groups}" if groups else "--clear-groups")
    return subprocess.run([*ids, SYSTEM_PYTHON, *args], capture_output=True, text=True, timeout=60, env=env, cwd="/")


def test_a_group_member_reads_copies_not_records(public_dir: Path) -> None:
    """The records hold sources as given (user:pass@host): with cache_group the copies are the
    group's, the database stays the owner's, and `wtfs cache ls` says so in one line."""
    users = grp.getgrnam("users").gr_gid
    cache = HostCache(public_dir / "cache", users)
    cache.prepare()
    ref = ObjectRef.for_source("http://user:secret@127.0.0.1:9/f", 1, None)
    records = CacheRecords(cache.db_path, 30.0)
    claim = records.claim(ref, "d", "s", lambda _: False)
    assert claim.transfer_id is not None
    records.finish(claim.transfer_id, ref, 1, 4096)
    records.close()
    fd, temp = cache.open_temp(ref, "d", 1)
    os.write(fd, b"x")
    cache.commit(fd, temp, ref, 1)
    os.close(fd)
    read = "import sys; print(open(sys.argv[1], 'rb').read())"
    assert as_user(str(users), "-c", read, str(cache.path_for(ref.id))).stdout == "b'x'\n"
    denied = as_user(str(users), "-c", read, str(cache.db_path))
    assert "PermissionError" in denied.stderr and "secret" not in denied.stdout
    listed = as_user(str(users), "-m", "wtfs", "cache", "ls", "--cache-dir", str(cache.root))
    assert (listed.returncode, listed.stdout) == (1, "")
    assert (
        listed.stderr
        == f"wtfs: {cache.root}: this user (uid {USER}) may not read its records (its owner or root may)\n"
    )


def test_a_cache_group_this_user_is_not_in_is_one_error() -> None:
    """Only root may give files a group it is not in: refused before anything is made (a real
    unprivileged process; it cannot mount here, /dev/fuse being root's, so the check is called)."""
    check = "from wtfs.dm.cache import group_id\ntry: print(group_id('users'))\nexcept Exception as e: print(repr(e))"
    users = grp.getgrnam("users").gr_gid
    outside = as_user("", "-c", check)
    assert outside.stdout == f"SpecError(\"cache_group: 'users': this user (uid {USER}) is not in that group\")\n"
    assert as_user(str(users), "-c", check).stdout == f"{users}\n"


@pytest.mark.fuse
def test_records_of_killed_daemons_go_with_umount_and_the_next_mount(session: Session, http: Server) -> None:
    """kill -9 two daemons: `wtfs umount` of one removes its record (and the dead mount); the next
    mount removes the other's. Nothing is signalled on the way."""
    spec = session.spec([{"mountPath": "/f", "url": http.add("/f", BODY)}])
    one, two = session.mount(spec, where="one"), session.mount(spec, where="two")
    records = {m.path: runtime.record_path(str(m.path)) for m in (one, two)}
    one.kill()
    two.kill()  # their records stay until a umount or a mount (anyone's on this host) removes them
    result = wtfs("umount", str(one.path))
    assert result.returncode == 0, result.stderr
    assert not is_mounted(one.path) and not records[one.path].exists()
    three = session.mount(spec, where="three")
    assert not records[two.path].exists() and runtime.record_path(str(three.path)).exists()
    assert (three.data / "f").read_bytes() == BODY


def test_usage_is_a_running_total_whatever_wrote_the_records(tmp_path: Path) -> None:
    """Usage is one row kept by triggers in the database (no sum over every copy per open); a
    cache from before the total gets it from the sum when first opened."""
    db = tmp_path / "cache.db"
    records = CacheRecords(db, 30.0)
    refs = [ObjectRef.for_source(f"http://h/{i}", 10, None) for i in range(3)]
    for i, ref in enumerate(refs):
        claim = records.claim(ref, "d", "s", lambda _: False)
        assert claim.transfer_id is not None
        records.finish(claim.transfer_id, ref, 10, 4096 * (i + 1))
    assert records.evict(refs[0].id, lambda _: 4096) == 4096
    assert records.usage() == 4096 * 5
    records.conn.executescript("DROP TRIGGER usage_on_insert; DROP TRIGGER usage_on_update; DROP TABLE usage;")
    records.conn.execute("UPDATE objects SET disk_bytes=8192 WHERE id=?", (refs[2].id,))  # an older wtfs writes
    records.close()
    assert CacheRecords(db, 30.0).usage() == 4096 * 2 + 8192
