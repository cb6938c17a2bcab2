"""workspace/ as a security boundary, and versions that never change under random writes.

Real mounts as root with allow_other; the other users are plain uids switched to with setpriv.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import Session
from tests.mounting import Mount, wait_for

pytestmark = pytest.mark.fuse

USER = 12345
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by every user, unlike a venv under /root


def as_user(uid: int, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet as ``uid`` (no supplementary groups), as a container's user would."""
    command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", SYSTEM_PYTHON, "-c", script, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def let_users_through(path: Path) -> None:
    """pytest's temporary directories are 0700: let other users traverse down to ``path``."""
    for parent in [path, *path.parents]:
        if parent == Path("/tmp"):
            break
        parent.chmod(parent.stat().st_mode | 0o111)


def workspace_mount(session: Session, tmp_path: Path, *options: str) -> tuple[Mount, Path]:
    let_users_through(tmp_path)
    ws = tmp_path / "workspace"
    ws.mkdir(mode=0o777)
    ws.chmod(0o1777)
    return session.mount(session.spec([], workspace=str(ws)), *options), ws


def test_uid_option_never_decides_who_owns_what_a_user_creates(session: Session, tmp_path: Path) -> None:
    m, ws = workspace_mount(session, tmp_path, "allow_other,uid=12345,gid=12345")
    script = "import os,sys; fd=os.open(sys.argv[1], os.O_CREAT|os.O_WRONLY, 0o4755); os.close(fd)"
    made = as_user(USER, script, str(m.path / "workspace" / "tool"))
    assert made.returncode == 0, made.stderr
    on_disk = (ws / "tool").stat()
    assert (on_disk.st_uid, on_disk.st_gid) == (USER, USER)  # the user's, not root's
    assert os.stat(m.path / "workspace" / "tool").st_uid == USER  # and stat through the mount agrees
    assert os.statvfs(m.path).f_flag & os.ST_NOSUID  # and the bit means nothing on this mount
    as_root = os.open(m.path / "workspace" / "rootfile", os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(as_root)
    assert (ws / "rootfile").stat().st_uid == 0  # root's own file is root's: uid= dresses only data/


def test_the_callers_umask_applies_never_the_daemons(session: Session, tmp_path: Path) -> None:
    m, ws = workspace_mount(session, tmp_path, "allow_other")
    script = (
        "import os,sys; os.umask(0); os.close(os.open(sys.argv[1]+'/f', os.O_CREAT, 0o777));"
        " os.mkdir(sys.argv[1]+'/d', 0o777)"
    )
    made = as_user(USER, script, str(m.path / "workspace"))
    assert made.returncode == 0, made.stderr
    assert oct((ws / "f").stat().st_mode & 0o7777) == oct(0o777)
    assert oct((ws / "d").stat().st_mode & 0o7777) == oct(0o777)


def _swap_forever(link_dir: Path, outside: Path, stop: threading.Event) -> int:
    """Swap ``link_dir`` between a real directory and a symlink to ``outside`` until stopped."""
    swaps = 0
    real, aside = link_dir, link_dir.with_name("real-aside")
    while not stop.is_set():
        os.rename(real, aside)
        os.symlink(outside, real)
        os.unlink(real)
        os.rename(aside, real)
        swaps += 1
    return swaps


ATTACK = """
import os, sys, time
base, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
n = 0
while time.monotonic() < deadline:
    for op in range(5):
        try:
            if op == 0:
                fd = os.open(base + '/d/victim', os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
                os.write(fd, b'pwned')
                os.close(fd)
            elif op == 1:
                os.unlink(base + '/d/canary')
            elif op == 2:
                os.rename(base + '/d/canary', base + '/d/moved')
            elif op == 3:
                os.mkdir(base + '/d/newdir')
            else:
                os.truncate(base + '/d/canary', 0)
        except OSError:
            pass
        n += 1
print(n)
"""


def test_symlink_swap_race_never_reaches_outside_the_workspace(session: Session, tmp_path: Path) -> None:
    """A user swaps a directory for a symlink while the daemon works in it: nothing outside changes.

    The user cannot write ``outside`` themselves, so any change there would be the root daemon's.
    """
    m, ws = workspace_mount(session, tmp_path, "allow_other")
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    (outside / "canary").write_text("keep me\n")
    before = sorted(os.listdir(outside)), (outside / "canary").read_text()
    (ws / "d").mkdir(mode=0o777)
    (ws / "d" / "canary").write_text("workspace copy\n")
    stop = threading.Event()
    swapper = threading.Thread(target=_swap_forever, args=(ws / "d", outside, stop))
    swapper.start()
    try:
        attack = as_user(USER, ATTACK, str(m.path / "workspace"), "4")
    finally:
        stop.set()
        swapper.join()
    assert attack.returncode == 0, attack.stderr
    assert int(attack.stdout) > 100  # the race really ran
    assert (sorted(os.listdir(outside)), (outside / "canary").read_text()) == before


def test_unlinked_open_file_keeps_working(session: Session, tmp_path: Path) -> None:
    m, _ = workspace_mount(session, tmp_path)
    path = m.path / "workspace" / "scratch"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.write(fd, b"abc")
        os.unlink(path)
        assert os.fstat(fd).st_nlink == 0
        os.pwrite(fd, b"Z", 1)
        assert os.pread(fd, 10, 0) == b"aZc"
        assert os.fstat(fd).st_size == 3
    finally:
        os.close(fd)


# -- versions under random operations (fsx style) -----------------------------------------------


class Model:
    """The bytes every workspace file should hold, next to the real open descriptors."""

    def __init__(self, root: Path, rng: random.Random, names: list[str]) -> None:
        self.root, self.rng = root, rng
        self.data = {name: bytearray() for name in names}
        self.fds = {name: os.open(root / name, os.O_CREAT | os.O_RDWR, 0o644) for name in names}

    def write(self, name: str) -> None:
        offset, size = self.rng.randrange(0, 200_000), self.rng.randrange(1, 50_000)
        chunk = self.rng.randbytes(size)
        os.pwrite(self.fds[name], chunk, offset)
        buf = self.data[name]
        if len(buf) < offset:
            buf.extend(bytes(offset - len(buf)))
        buf[offset : offset + size] = chunk

    def truncate(self, name: str) -> None:
        size = self.rng.randrange(0, 250_000)
        os.ftruncate(self.fds[name], size)
        buf = self.data[name]
        del buf[size:]
        buf.extend(bytes(size - len(buf)))

    def mapped_write(self, name: str) -> None:
        buf = self.data[name]
        if not buf:
            return self.write(name)
        offset = self.rng.randrange(0, len(buf))
        chunk = self.rng.randbytes(min(4096, len(buf) - offset))
        with mmap.mmap(self.fds[name], len(buf)) as mapped:
            mapped[offset : offset + len(chunk)] = chunk
            mapped.flush()  # msync: the bytes reach the daemon before the next step
        buf[offset : offset + len(chunk)] = chunk

    def reopen(self, name: str) -> None:
        os.close(self.fds[name])
        self.fds[name] = os.open(self.root / name, os.O_RDWR)

    def check(self, name: str) -> None:
        size = len(self.data[name])
        assert os.fstat(self.fds[name]).st_size == size
        assert os.pread(self.fds[name], size + 1, 0) == bytes(self.data[name]), f"{name} differs from the model"

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)


def _version_files(mount: Path, version: str) -> dict[str, int]:
    manifest = json.loads((mount / "versions" / version / "manifest.json").read_text())
    return {f["path"]: f["size"] for f in manifest["files"] if f["type"] == "file"}


def test_versions_never_change_under_random_operations(session: Session, tmp_path: Path) -> None:
    m, _ = workspace_mount(session, tmp_path)
    seed = int(os.environ.get("WTFS_FSX_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    names = ["a.bin", "b.bin", "c.bin"]
    model = Model(m.path / "workspace", rng, names)
    os.link(m.path / "workspace" / "a.bin", m.path / "workspace" / "a-link.bin")  # a user's hard link
    expected: dict[str, dict[str, bytes]] = {}
    try:
        for step in range(400):
            name = rng.choice(names)
            action = rng.choice([model.write, model.write, model.truncate, model.mapped_write, model.reopen])
            action(name)
            if step % 50 == 25:
                model.check(name)
                version = f"v{step}"
                os.mkdir(m.path / "versions" / version)  # descriptors stay open across it
                expected[version] = {n: bytes(model.data[n]) for n in names}
                expected[version]["a-link.bin"] = bytes(model.data["a.bin"])
        for name in names:
            model.check(name)
        assert (m.path / "workspace" / "a-link.bin").read_bytes() == bytes(model.data["a.bin"])  # one inode
    finally:
        model.close()
    for version, files in expected.items():
        recorded = _version_files(m.path, version)
        for name, data in files.items():
            kept = (m.path / "versions" / version / "workspace" / name).read_bytes()
            assert kept == data, f"seed {seed}: {version}/{name} changed after it was taken"
            assert recorded[name] == len(data), f"seed {seed}: {version}/{name} disagrees with its manifest"


def test_workspace_outlives_a_tree_deeper_than_path_max(session: Session, tmp_path: Path) -> None:
    """The daemon builds no path from the root, so depth is limited by the disk, not by PATH_MAX."""
    m, ws = workspace_mount(session, tmp_path)
    fd = os.open(m.path / "workspace", os.O_RDONLY | os.O_DIRECTORY)
    name = "d" * 200
    try:
        for _ in range(25):  # 25 x 201 bytes > PATH_MAX (4096)
            os.mkdir(name, dir_fd=fd)
            next_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        made = os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
        os.write(made, b"deep")
        os.close(made)
        assert os.stat("leaf", dir_fd=fd).st_size == 4
    finally:
        os.close(fd)
    shutil.rmtree(ws / name)


def test_other_requests_are_served_while_a_version_gets_its_copy(session: Session, tmp_path: Path) -> None:
    """Giving a version its own copy of a large file runs in a worker thread, off the loop:
    a listing elsewhere answers while the open that caused the copy is still waiting for it."""
    m, ws = workspace_mount(session, tmp_path)
    (ws / "other").mkdir()
    (ws / "other" / "x").write_text("x")
    with open(ws / "big.bin", "wb") as f:
        f.truncate(2 << 30)  # 2 GiB of zeros, copied byte for byte: seconds of disk work
    os.mkdir(m.path / "versions" / "v1")
    versions = tmp_path / "state" / "versions"
    opened: list[int] = []
    opener = threading.Thread(target=lambda: opened.append(os.open(m.path / "workspace" / "big.bin", os.O_WRONLY)))
    opener.start()
    try:
        wait_for(lambda: list(versions.glob("*/workspace/.copy-*")), timeout=60, what="the version's copy to start")
        assert os.listdir(m.path / "workspace" / "other") == ["x"]
        assert opener.is_alive(), "the listing waited for the copy"
    finally:
        opener.join()
        for fd in opened:
            os.close(fd)
    assert (m.path / "versions" / "v1" / "workspace" / "big.bin").stat().st_size == 2 << 30
