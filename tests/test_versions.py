"""Workspace and versions: hard-link snapshots that never change, through real mounts and the store."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import Session
from tests.mounting import Mount, wtfs
from wtfs.errors import Busy, Exists, InvalidName, MountError, NotFound
from wtfs.store.versions import Unchanged, VersionStore


def tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mode of every file under ``root``; symlinks by target."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = path.lstat()
        if path.is_symlink():
            out[rel] = ("->" + os.readlink(path), 0)
        elif path.is_file():
            out[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), stat.S_IMODE(st.st_mode))
        else:
            out[rel] = ("dir", stat.S_IMODE(st.st_mode))
    return out


def populate(ws: Path) -> None:
    (ws / "sub" / "deeper").mkdir(parents=True, exist_ok=True)
    (ws / "f").write_text("first line\n")
    (ws / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (ws / "run.sh").chmod(0o755)
    (ws / "sub" / "data.bin").write_bytes(os.urandom(100_000))
    (ws / "sub" / "deeper" / "x.txt").write_text("x\n")
    (ws / "link").symlink_to("sub/data.bin")
    (ws / "escape").symlink_to("/etc/passwd")


# -- the store, without FUSE --------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> VersionStore:
    ws = tmp_path / "ws"
    ws.mkdir()
    populate(ws)
    s = VersionStore(tmp_path / "state", ws, [{"mountPath": "/a", "url": "http://x/a"}])
    s.prepare()
    return s


def test_snapshot_keeps_content_modes_symlinks(store: VersionStore) -> None:
    version = store.create("v1")
    assert tree_digest(version.workspace) == tree_digest(store.workspace)
    assert os.readlink(version.workspace / "escape") == "/etc/passwd"  # copied, never followed
    assert (version.workspace / "f").stat().st_ino == (store.workspace / "f").stat().st_ino
    manifest = (version.path / "manifest.json").read_text()
    assert '"dataSet"' in manifest and "http://x/a" in manifest and '"sub/data.bin"' in manifest


def test_no_change_detection_by_content(store: VersionStore) -> None:
    first = store.create("v1")
    with pytest.raises(Unchanged) as info:
        store.create(force=False)
    assert info.value.version.id == first.id
    ws = store.workspace
    changes = [
        lambda: (ws / "f").write_text("first line\nmore\n"),  # in place (shared inode: version changes too)
        lambda: (ws / "sub" / "deeper" / "x.txt").unlink(),
        lambda: (ws / "new.txt").write_text("new"),
        lambda: (ws / "run.sh").chmod(0o700),
        lambda: ((ws / "link").unlink(), (ws / "link").symlink_to("f")),
    ]
    for n, change in enumerate(changes):
        # break the links first, as the mount does, so the edit is a change against the version
        fresh = ws.parent / "copy"
        shutil.copytree(ws, fresh, symlinks=True)
        shutil.rmtree(ws)
        fresh.rename(ws)
        with pytest.raises(Unchanged):
            store.create(force=False)  # copies with equal bytes are no change
        change()
        created = store.create(f"after-{n}", force=False)
        assert created.name == f"after-{n}"


def test_names_rename_delete_and_refs(store: VersionStore) -> None:
    store.create("a")
    store.create("b")
    with pytest.raises(Exists):
        store.create("a")
    with pytest.raises(Exists):
        store.rename("a", "b")
    with pytest.raises(NotFound):
        store.rename("zz", "c")
    with pytest.raises(InvalidName):
        store.create("bad/name")
    store.rename("a", "c")
    assert [v.name for v in store.all()] == ["c", "b"]  # by creation, not name
    b = store.get("b")
    store.add_ref(b.id, "run1")
    with pytest.raises(Busy):
        store.delete("b")
    store.drop_ref(b.id, "run1")
    store.delete("b")
    assert [v.name for v in store.all()] == ["c"]


def test_default_name_is_the_date(store: VersionStore) -> None:
    first, second = store.create(), store.create()
    for version in (first, second):
        datetime.strptime(version.name.removesuffix("-2"), "%Y-%m-%dT%H.%M.%S")  # e.g. 2026-11-30T12.00.00
        assert shlex.quote(version.name) == version.name  # nothing to quote in a shell
    assert first.name != second.name


def test_failed_snapshot_leaves_nothing(store: VersionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real_link = os.link
    calls = []

    def vanishing(src: str, dst: object, **kwargs: object) -> None:
        calls.append(src)
        if len(calls) == 3:
            raise FileNotFoundError(errno.ENOENT, "vanished", src)
        real_link(src, dst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "link", vanishing)
    with pytest.raises(FileNotFoundError):
        store.create("half")
    assert store.all() == []
    assert [p.name for p in store.root.iterdir() if not p.name.endswith((".lock", ".db"))] == []


def test_concurrent_create_is_busy(store: VersionStore) -> None:
    fd = os.open(store.root / ".create.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(Busy):
            store.create("v")
    finally:
        os.close(fd)
    assert store.create("v").name == "v"


def test_store_on_another_filesystem_is_refused(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        if os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
            pytest.skip("/dev/shm is on the same filesystem here")
        store = VersionStore(Path(shm), tmp_path / "ws")
        with pytest.raises(MountError, match="different filesystems"):
            store.prepare()


# -- through the mount --------------------------------------------------------------------------


@pytest.fixture
def ws_mount(session: Session, tmp_path: Path) -> Mount:
    ws = tmp_path / "workspace"
    ws.mkdir()
    populate(ws)
    return session.mount(session.spec([], workspace=str(ws)))


def errno_of(fn: object, *args: object) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.errno or 0


@pytest.mark.fuse
def test_version_equals_workspace_and_edits_never_change_it(ws_mount: Mount, tmp_path: Path) -> None:
    m = ws_mount
    ws, mw = tmp_path / "workspace", m.path / "workspace"
    os.mkdir(m.path / "versions" / "v1")
    v1 = m.path / "versions" / "v1" / "workspace"
    before = tree_digest(v1)
    assert before == tree_digest(ws) == tree_digest(mw)
    edits = [
        ["sh", "-c", f"echo appended >> {mw / 'f'}"],
        ["truncate", "-s", "3", str(mw / "sub" / "data.bin")],
        [
            "dd",
            "if=/dev/zero",
            f"of={mw / 'sub' / 'deeper' / 'x.txt'}",
            "bs=1",
            "count=1",
            "conv=notrunc",
            "status=none",
        ],
        ["sed", "-i", "s/hi/bye/", str(mw / "run.sh")],
        ["chmod", "600", str(mw / "run.sh")],
        ["touch", "-d", "2001-01-01", str(mw / "f")],
    ]
    for edit in edits:
        subprocess.run(edit, check=True)
    assert tree_digest(v1) == before  # the heart of it: the version kept every byte and mode
    assert (ws / "f").read_text() == "first line\nappended\n"  # and the workspace has the edits
    assert (ws / "sub" / "data.bin").stat().st_size == 3
    assert (ws / "run.sh").read_text() == "#!/bin/sh\necho bye\n"
    assert stat.S_IMODE((ws / "run.sh").stat().st_mode) == 0o600
    assert not [p for p in ws.rglob(".wtfs-copyup-*")]


@pytest.mark.fuse
def test_file_open_for_write_during_a_snapshot_does_not_leak_into_it(ws_mount: Mount) -> None:
    m = ws_mount
    with open(m.path / "workspace" / "f", "r+b", buffering=0) as f:
        os.mkdir(m.path / "versions" / "v1")
        f.seek(0)
        f.write(b"CHANGED")
    assert (m.path / "versions" / "v1" / "workspace" / "f").read_text() == "first line\n"
    assert (m.path / "workspace" / "f").read_bytes().startswith(b"CHANGED")


@pytest.mark.fuse
def test_versions_rename_rmdir_and_erofs(ws_mount: Mount) -> None:
    versions = ws_mount.path / "versions"
    os.mkdir(versions / "a")
    os.mkdir(versions / "b")
    assert errno_of(os.mkdir, versions / "a") == errno.EEXIST
    assert errno_of(os.rename, versions / "a", versions / "b") == errno.EEXIST
    assert errno_of(os.rename, versions / "nope", versions / "c") == errno.ENOENT
    os.rename(versions / "a", versions / "c")
    assert os.listdir(versions) == ["c", "b"]
    inside = versions / "c" / "workspace"
    assert errno_of(open, inside / "f", "a") == errno.EROFS
    assert errno_of(open, inside / "new", "w") == errno.EROFS
    assert errno_of(os.unlink, inside / "f") == errno.EROFS
    assert errno_of(os.mkdir, inside / "d") == errno.EROFS
    assert errno_of(os.chmod, inside / "f", 0o777) == errno.EROFS
    assert errno_of(os.rename, inside / "f", inside / "g") == errno.EROFS
    os.rmdir(versions / "c")  # not empty, deleted all the same
    assert os.listdir(versions) == ["b"]


@pytest.mark.fuse
def test_racing_mkdirs_make_one_version(ws_mount: Mount, tmp_path: Path) -> None:
    big = tmp_path / "workspace" / "many"
    big.mkdir()
    for i in range(3000):
        (big / str(i)).write_bytes(b"x")
    results: list[int] = []
    barrier = threading.Barrier(2)

    def make() -> None:
        barrier.wait()
        try:
            os.mkdir(ws_mount.path / "versions" / "same")
            results.append(0)
        except OSError as exc:
            results.append(exc.errno or -1)

    threads = [threading.Thread(target=make) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results)[0] == 0 and sorted(results)[1] in (errno.EBUSY, errno.EEXIST)
    assert os.listdir(ws_mount.path / "versions") == ["same"]


@pytest.mark.fuse
def test_two_hundred_versions_all_listed(ws_mount: Mount) -> None:
    for i in range(205):
        os.mkdir(ws_mount.path / "versions" / f"v{i:03d}")
    assert os.listdir(ws_mount.path / "versions") == [f"v{i:03d}" for i in range(205)]


@pytest.mark.fuse
def test_version_create_cli(ws_mount: Mount) -> None:
    m = ws_mount
    first = wtfs("version", "create", str(m.path), "--name", "one")
    assert first.returncode == 0 and "created version 'one'" in first.stdout
    again = wtfs("version", "create", str(m.path))
    assert again.returncode == 3
    assert again.stderr.strip().startswith("wtfs: no change since version 'one'")
    forced = wtfs("version", "create", str(m.path), "--force")
    assert forced.returncode == 0
    (m.path / "workspace" / "f").write_text("edited\n")
    changed = wtfs("version", "create", str(m.path), "--name", "two")
    assert changed.returncode == 0
    assert os.listdir(m.path / "versions")[0] == "one" and os.listdir(m.path / "versions")[-1] == "two"
    assert (m.path / "versions" / "one" / "workspace" / "f").read_text() == "first line\n"


@pytest.mark.fuse
def test_workspace_behaves_like_the_directory_it_mirrors(ws_mount: Mount, tmp_path: Path) -> None:
    """A small POSIX check: the same operations on the mount and on the directory agree."""
    mw, ws = ws_mount.path / "workspace", tmp_path / "workspace"
    (mw / "new.txt").write_text("hello")
    assert (ws / "new.txt").read_text() == "hello"  # visible in the directory at once
    (ws / "direct.txt").write_text("from outside")
    assert (mw / "direct.txt").read_text() == "from outside"  # and the other way round
    os.rename(mw / "new.txt", mw / "sub" / "moved.txt")
    assert not (ws / "new.txt").exists() and (ws / "sub" / "moved.txt").read_text() == "hello"
    os.rename(mw / "sub", mw / "sub2")  # a directory with known children keeps working
    assert (mw / "sub2" / "moved.txt").read_text() == "hello"
    os.link(mw / "sub2" / "moved.txt", mw / "hard.txt")
    assert (ws / "hard.txt").stat().st_ino == (ws / "sub2" / "moved.txt").stat().st_ino
    os.symlink("sub2/moved.txt", mw / "sym")
    assert os.readlink(mw / "sym") == "sub2/moved.txt" and (mw / "sym").read_text() == "hello"
    os.chmod(mw / "hard.txt", 0o640)
    assert stat.S_IMODE((ws / "hard.txt").stat().st_mode) == 0o640
    os.mkdir(mw / "d", 0o700)
    assert stat.S_IMODE((ws / "d").stat().st_mode) == 0o700
    assert errno_of(os.rmdir, mw / "sub2") == errno.ENOTEMPTY
    assert errno_of(os.mkdir, mw / "d") == errno.EEXIST
    assert errno_of(os.unlink, mw / "nothing") == errno.ENOENT
    os.unlink(mw / "sym")
    os.rmdir(mw / "d")
    assert not (ws / "sym").exists() and not (ws / "d").exists()
    with open(mw / "sparse", "wb") as f:
        f.seek(1 << 20)
        f.write(b"end")
        f.flush()
        os.fsync(f.fileno())
    assert (ws / "sparse").stat().st_size == (1 << 20) + 3
    assert os.statvfs(mw).f_bsize > 0
