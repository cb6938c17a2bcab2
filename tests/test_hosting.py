"""Running wtfs the way hosts run mounts: systemd, fstab helpers, users, signals, stale mounts."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import Session
from tests.httpserver import Server
from tests.mounting import is_mounted, wait_for, wtfs

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    instance = tmp_path / "wtfs@demo.service"
    shutil.copy(ROOT / "systemd" / "wtfs@.service", instance)
    units = [
        str(instance),
        str(ROOT / "systemd" / "mnt-wtfs-demo.mount"),
        str(ROOT / "systemd" / "mnt-wtfs-demo.automount"),
    ]
    result = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(60)
    yield sock
    sock.close()


def foreground(spec: Path, mountpoint: Path, notify: Path, *options: str) -> subprocess.Popen[bytes]:
    mountpoint.mkdir(exist_ok=True)
    args = [sys.executable, "-m", "wtfs", "mount", "-f", str(spec), str(mountpoint)]
    for option in options:
        args += ["-o", option]
    return subprocess.Popen(args, env={**os.environ, "NOTIFY_SOCKET": str(notify)}, stderr=subprocess.PIPE)


@pytest.mark.fuse
def test_ready_only_once_the_mount_answers_and_stopping_on_sigterm(
    session: Session, http: Server, notify_socket: socket.socket, tmp_path: Path
) -> None:
    spec = session.spec([{"mountPath": "/f", "url": http.add("/f", b"content")}])
    mountpoint = tmp_path / "mnt"
    daemon = foreground(spec, mountpoint, tmp_path / "notify")
    try:
        assert notify_socket.recv(4096) == b"READY=1"
        # at the moment READY=1 arrives the mount is there and answers
        assert is_mounted(mountpoint)
        assert (mountpoint / "data" / "f").read_bytes() == b"content"
        daemon.send_signal(signal.SIGTERM)
        assert notify_socket.recv(4096) == b"STOPPING=1"
        assert daemon.wait(timeout=30) == 0
        assert not is_mounted(mountpoint)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], check=False)


@pytest.mark.fuse
def test_sigterm_with_blocked_opens_exits_cleanly(
    session: Session, http: Server, notify_socket: socket.socket, tmp_path: Path
) -> None:
    gate = threading.Event()
    count = 50
    spec = session.spec([{"mountPath": f"/f{i}", "url": http.add(f"/f{i}", b"x", gate=gate)} for i in range(count)])
    mountpoint = tmp_path / "mnt"
    daemon = foreground(spec, mountpoint, tmp_path / "notify")
    try:
        assert notify_socket.recv(4096) == b"READY=1"

        def attempt(i: int) -> int:
            try:
                (mountpoint / "data" / f"f{i}").read_bytes()
            except OSError as exc:
                return exc.errno or -1
            return 0

        with ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(attempt, i) for i in range(count)]
            wait_for(lambda: sum(http.requests[f"/f{i}"] for i in range(count)) == count, what="blocked opens")
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=20) == 0  # bounded, although every open was still waiting
            outcomes = {f.result(timeout=20) for f in futures}
        assert outcomes == {errno.EIO}, outcomes
        assert not is_mounted(mountpoint)
        with sqlite3.connect(session.cache_dir / "cache.db") as db:
            assert list(db.execute("SELECT * FROM locks")) == []
            assert {row[0] for row in db.execute("SELECT status FROM transfers")} <= {5}
    finally:
        gate.set()
        if daemon.poll() is None:
            daemon.kill()
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], check=False)


@pytest.mark.fuse
def test_fstab_style_helpers(session: Session, http: Server, tmp_path: Path) -> None:
    spec = session.spec([{"mountPath": "/f", "url": http.add("/f", b"fstab")}])
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    # mount(8) for type wtfs runs mount.wtfs SPEC MOUNTPOINT -o OPTIONS
    a = tmp_path / "a"
    a.mkdir()
    helper = subprocess.run(
        [str(VENV_BIN / "mount.wtfs"), str(spec), str(a), "-o", "rw,nosuid,nodev,_netdev,nofail,x-systemd.automount"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert helper.returncode == 0, helper.stderr
    assert (a / "data" / "f").read_bytes() == b"fstab"
    assert wtfs("umount", str(a)).returncode == 0
    # mount.fuse3 for type fuse.wtfs runs "wtfs SPEC MOUNTPOINT -o OPTIONS"
    b = tmp_path / "b"
    b.mkdir()
    fuse3 = subprocess.run(
        ["mount.fuse3", f"wtfs#{spec}", str(b), "-o", "_netdev,allow_other"], capture_output=True, text=True, env=env
    )
    assert fuse3.returncode == 0, fuse3.stderr
    assert (b / "data" / "f").read_bytes() == b"fstab"
    assert wtfs("umount", str(b)).returncode == 0
    bad = subprocess.run(
        [str(VENV_BIN / "mount.wtfs"), str(spec), str(a), "-o", "rw,turbo"], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "wtfs: -o: turbo: unknown option"
    assert not is_mounted(a)


@pytest.mark.fuse
def test_uid_gid_umask_are_shown(session: Session, http: Server) -> None:
    spec = session.spec([{"mountPath": "/d/f", "url": http.add("/f", b"x")}])
    m = session.mount(spec, "uid=1234,gid=5678,umask=027")
    st = os.stat(m.data / "d" / "f")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o440)
    assert stat.S_IMODE(os.stat(m.data / "d").st_mode) == 0o550


@pytest.mark.fuse
def test_allow_other_lets_another_user_read(public_dir: Path, session: Session, http: Server) -> None:
    spec = session.spec([{"mountPath": "/f", "url": http.add("/f", b"shared")}])
    other = ["runuser", "-u", "nobody", "--", "cat"]
    private = session.mount(spec, where=str(public_dir / "private"))
    denied = subprocess.run([*other, str(private.data / "f")], capture_output=True, text=True)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    private.unmount()
    shared = session.mount(spec, "allow_other", where=str(public_dir / "shared"))
    allowed = subprocess.run([*other, str(shared.data / "f")], capture_output=True)
    assert allowed.returncode == 0 and allowed.stdout == b"shared"


@pytest.mark.fuse
def test_auto_unmount_leaves_no_stale_mount(session: Session, http: Server) -> None:
    m = session.mount(session.spec([{"mountPath": "/f", "url": http.add("/f", b"x")}]), "auto_unmount")
    assert (m.data / "f").read_bytes() == b"x"
    m.kill()
    wait_for(lambda: not is_mounted(m.path), what="auto_unmount to clean up")
    os.listdir(m.path)  # no "Transport endpoint is not connected"


@pytest.mark.fuse
def test_check_on_healthy_dead_and_stale_mounts(session: Session, http: Server) -> None:
    spec = session.spec([{"mountPath": "/f", "url": http.add("/f", b"x")}])
    m = session.mount(spec)
    healthy = wtfs("check", str(m.path))
    assert healthy.returncode == 0 and healthy.stdout.startswith(f"{m.path}: ok: session test")
    m.kill()
    stale = wtfs("check", str(m.path))
    assert stale.returncode == 1
    assert stale.stderr.strip() == f"{m.path}: stale: its daemon died (Transport endpoint is not connected)"
    again = session.mount(spec)  # recovers the stale mountpoint by itself
    assert (again.data / "f").read_bytes() == b"x"
    again.unmount()
    gone = wtfs("check", str(m.path))
    assert gone.returncode == 1 and gone.stderr.strip() == f"{m.path}: not mounted"


@pytest.mark.fuse
def test_mountpoint_from_the_spec(session: Session, http: Server, tmp_path: Path) -> None:
    target = tmp_path / "from-spec"
    target.mkdir()
    spec = session.spec([{"mountPath": "/f", "url": http.add("/f", b"x")}], mountpoint=str(target))
    result = wtfs("mount", str(spec))
    assert result.returncode == 0, result.stderr
    try:
        assert (target / "data" / "f").read_bytes() == b"x"
    finally:
        assert wtfs("umount", str(target)).returncode == 0


@pytest.mark.fuse
def test_sighup_reopens_the_log_and_keeps_the_mount(session: Session, http: Server) -> None:
    """What logrotate does: move the log away, send SIGHUP; the daemon writes a new log and stays."""
    m = session.mount(session.spec([{"mountPath": "/f", "url": http.add("/f", b"x")}]))
    rotated = m.log.with_name("wtfs.log.1")
    os.rename(m.log, rotated)
    os.kill(m.pid, signal.SIGHUP)
    wait_for(lambda: m.log.exists() and "log reopened" in m.log.read_text(), what="a new log file")
    assert stat.S_IMODE(m.log.stat().st_mode) == 0o600
    assert (m.data / "f").read_bytes() == b"x"  # still mounted and serving
    assert wtfs("check", str(m.path)).returncode == 0
    assert "unmounting" not in m.log.read_text() + rotated.read_text()
