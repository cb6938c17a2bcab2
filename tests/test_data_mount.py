"""data/ through a real FUSE mount: tree, bytes, blocking opens, errors, locks, crash safety."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import sqlite3
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import Session
from tests.httpserver import Server
from tests.mounting import is_mounted, wait_for, wtfs

pytestmark = pytest.mark.fuse

BODY = os.urandom(1_000_000)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def locks(cache: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(cache / "cache.db") as db:
        return list(db.execute("SELECT object_id, owner FROM locks"))


def errno_of(fn: object, *args: object) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.errno or 0


def test_tree_sizes_and_bytes(session: Session, http: Server, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "one.bin").write_bytes(BODY[:1000])
    (src / "dir" / "a.txt").write_text("alpha\n")
    (src / "dir" / "sub" / "b.bin").write_bytes(BODY[:5000])
    remote = http.add("/remote.bin", BODY)
    sized = http.add("/sized.bin", BODY[:77], ranges=False)
    spec = session.spec(
        [
            {"mountPath": "/one.bin", "url": str(src / "one.bin")},
            {"mountPath": "/tree", "url": f"file://{src / 'dir'}"},
            {"mountPath": "/web/deep/remote.bin", "url": remote},
            {"mountPath": "/web/sized.bin", "url": sized, "size": 77},
        ]
    )
    m = session.mount(spec)
    assert sorted(os.listdir(m.path)) == ["data"]
    assert sorted(os.listdir(m.data)) == ["one.bin", "tree", "web"]
    assert sorted(os.listdir(m.data / "web")) == ["deep", "sized.bin"]
    assert sorted(os.listdir(m.data / "tree")) == ["a.txt", "sub"]
    assert (m.data / "web" / "deep" / "remote.bin").stat().st_size == len(BODY)  # from HEAD
    assert (m.data / "web" / "sized.bin").stat().st_size == 77
    assert (m.data / "tree" / "sub" / "b.bin").stat().st_size == 5000
    assert http.requests["/remote.bin"] == 0  # stat and readdir never fetch
    assert sha(read(m.data / "one.bin")) == sha(BODY[:1000])
    assert read(m.data / "tree" / "a.txt") == b"alpha\n"
    assert sha(read(m.data / "tree" / "sub" / "b.bin")) == sha(BODY[:5000])
    assert sha(read(m.data / "web" / "deep" / "remote.bin")) == sha(BODY)
    assert read(m.data / "web" / "sized.bin") == BODY[:77]
    assert http.requests["/remote.bin"] == 1
    read(m.data / "web" / "deep" / "remote.bin")
    assert http.requests["/remote.bin"] == 1  # cached


def test_open_blocks_until_landed_and_joins_one_transfer(session: Session, http: Server) -> None:
    gate = threading.Event()
    url = http.add("/big.bin", BODY, gate=gate)
    other = http.add("/other.bin", b"other")
    m = session.mount(
        session.spec([{"mountPath": "/big.bin", "url": url}, {"mountPath": "/o/other.bin", "url": other}])
    )
    with ThreadPoolExecutor(4) as pool:
        first: Future[bytes] = pool.submit(read, m.data / "big.bin")
        wait_for(lambda: http.requests["/big.bin"] == 1, what="the transfer to start")
        second: Future[bytes] = pool.submit(read, m.data / "big.bin")
        # while both opens wait, the rest of the mount answers
        assert os.listdir(m.data / "o") == ["other.bin"]
        assert read(m.data / "o" / "other.bin") == b"other"
        assert not first.done() and not second.done()
        assert len(locks(session.cache_dir)) >= 1
        gate.set()
        assert sha(first.result(timeout=30)) == sha(BODY)
        assert sha(second.result(timeout=30)) == sha(BODY)
    assert http.requests["/big.bin"] == 1
    wait_for(lambda: locks(session.cache_dir) == [], what="locks to be released on close")


def test_ls_answers_while_many_opens_wait(session: Session, http: Server) -> None:
    gate = threading.Event()
    count = 200
    entries = [
        {"mountPath": f"/slow/{i}.bin", "url": http.add(f"/{i}.bin", b"x" * 10, gate=gate)} for i in range(count)
    ]
    entries.append({"mountPath": "/fast/here.txt", "url": http.add("/here", b"here")})
    m = session.mount(session.spec(entries))

    def started() -> int:
        return sum(http.requests[f"/{i}.bin"] for i in range(count))

    with ThreadPoolExecutor(count) as pool:
        try:
            futures = [pool.submit(read, m.data / "slow" / f"{i}.bin") for i in range(count)]
            # every open is parked in a transfer the server holds back
            wait_for(lambda: started() == count, what="transfers to start")
            assert len(os.listdir(m.data / "slow")) == count
            assert os.stat(m.data / "fast" / "here.txt").st_size == 4
            assert read(m.data / "fast" / "here.txt") == b"here"
            assert [f.exception() for f in futures if f.done()] == []
        finally:
            gate.set()
        assert all(f.result(timeout=60) == b"x" * 10 for f in futures)


def test_two_daemons_sharing_a_cache_fetch_once(session: Session, http: Server) -> None:
    gate = threading.Event()
    url = http.add("/shared.bin", BODY, gate=gate)
    a = session.mount(session.spec([{"mountPath": "/s.bin", "url": url}], name="a"), where="a")
    b = session.mount(session.spec([{"mountPath": "/x/s.bin", "url": url}], name="b"), where="b")
    with ThreadPoolExecutor(2) as pool:
        from_a = pool.submit(read, a.data / "s.bin")
        wait_for(lambda: http.requests["/shared.bin"] == 1, what="a's transfer")
        from_b = pool.submit(read, b.data / "x" / "s.bin")
        wait_for(lambda: len(locks(session.cache_dir)) == 2, what="b's lock")
        gate.set()
        assert sha(from_a.result(timeout=30)) == sha(from_b.result(timeout=30)) == sha(BODY)
    assert http.requests["/shared.bin"] == 1


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("404", errno.ENOENT),
        ("403", errno.EACCES),
        ("401", errno.EACCES),
        ("wrong-length", errno.EIO),
        ("500", errno.EIO),
    ],
)
def test_transfer_errors_reach_open_as_errno(session: Session, http: Server, fault: str, code: int) -> None:
    url = http.add("/f", BODY, fault=fault)
    m = session.mount(session.spec([{"mountPath": "/f", "url": url, "size": len(BODY)}]))
    assert errno_of(read, m.data / "f") == code
    assert list((session.cache_dir / "tmp").iterdir()) == []
    assert locks(session.cache_dir) == []


def test_wrong_sha256_is_eio(session: Session, http: Server) -> None:
    url = http.add("/f", BODY)
    m = session.mount(session.spec([{"mountPath": "/f", "url": url, "sha256": "ab" * 32}]))
    assert errno_of(read, m.data / "f") == errno.EIO
    assert not any((session.cache_dir / "objects").rglob("*.*"))


def test_stall_gives_etimedout_within_the_stall_timeout(session: Session, http: Server) -> None:
    url = http.add("/f", BODY, fault="stall")
    m = session.mount(session.spec([{"mountPath": "/f", "url": url}]), "stall_timeout=1s")
    with ThreadPoolExecutor(1) as pool:
        attempt = pool.submit(errno_of, read, m.data / "f")
        assert attempt.result(timeout=15) == errno.ETIMEDOUT


def test_writes_are_erofs(session: Session, http: Server, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    m = session.mount(session.spec([{"mountPath": "/d/f", "url": str(tmp_path / "f")}]))
    target = m.data / "d" / "f"
    assert errno_of(open, target, "wb") == errno.EROFS
    assert errno_of(open, target, "ab") == errno.EROFS
    assert errno_of(open, m.data / "d" / "new", "wb") == errno.EROFS
    assert errno_of(os.mkdir, m.data / "d" / "sub") == errno.EROFS
    assert errno_of(os.unlink, target) == errno.EROFS
    assert errno_of(os.rename, target, m.data / "d" / "g") == errno.EROFS
    assert errno_of(os.chmod, target, 0o777) == errno.EROFS
    assert errno_of(os.truncate, target, 0) == errno.EROFS
    assert read(target) == b"data"


def test_unmount_with_open_files_releases_their_locks(session: Session, http: Server) -> None:
    url = http.add("/f", BODY)
    m = session.mount(session.spec([{"mountPath": "/f", "url": url}]))
    held = open(m.data / "f", "rb")  # noqa: SIM115 - must outlive the mount
    try:
        assert held.read(10) == BODY[:10]
        assert len(locks(session.cache_dir)) == 1
        result = wtfs("umount", str(m.path))
        assert result.returncode == 0, result.stderr
        assert not is_mounted(m.path)
        assert locks(session.cache_dir) == []
        with sqlite3.connect(session.cache_dir / "cache.db") as db:
            assert list(db.execute("SELECT * FROM daemons")) == []
    finally:
        # the daemon is gone: the kernel answers the late close with ENOTCONN, as for sshfs
        with contextlib.suppress(OSError):
            held.close()


def test_sigkill_mid_transfer_serves_no_partial_file(session: Session, http: Server) -> None:
    http.add("/f", BODY, delay=0.05)  # ~0.8 s for the whole body
    spec = session.spec([{"mountPath": "/f", "url": http.base + "/f"}])
    m = session.mount(spec)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(read, m.data / "f")
        wait_for(lambda: http.resources["/f"].served > 0, what="bytes to flow")
        wait_for(lambda: any((session.cache_dir / "tmp").iterdir()), what="a partial copy")
        m.kill()
    http.resources["/f"].delay = 0
    # the dead mount is stale; mounting again recovers it, reclaims the dead daemon's locks and temp files
    again = session.mount(spec)
    assert list((session.cache_dir / "tmp").iterdir()) == []
    assert locks(session.cache_dir) == []
    assert sha(read(again.data / "f")) == sha(BODY)
    assert http.requests["/f"] == 2


def test_mount_refuses_missing_and_busy_mountpoints(session: Session, http: Server, tmp_path: Path) -> None:
    spec = session.spec([{"mountPath": "/f", "url": http.add("/f", b"x")}])
    result = wtfs("mount", str(spec), str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"wtfs: {tmp_path / 'nowhere'}: no such directory"
    m = session.mount(spec)
    again = wtfs("mount", str(spec), str(m.path))
    assert again.returncode == 1
    assert again.stderr.strip() == f"wtfs: {m.path}: already mounted (fuse.wtfs)"
