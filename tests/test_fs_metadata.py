"""Metadata as `ls -l` sees it: long listings in batches, and the attribute namespaces wtfs keeps.

A listing larger than one kernel reply comes in batches; every node of it must still be alive
when its batch is handed over, and released once the directory is closed. `security.*` and
`system.*` answer ENOTSUP everywhere, so `ls -l` asks for them once per mount, not per file.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from contextlib import aclosing
from pathlib import Path

import pytest

from tests.conftest import Session
from wtfs.config import load_spec
from wtfs.daemon import open_session
from wtfs.fs.inodes import ROOT_INODE

MANY = 2_000  # more entries than one kernel reply holds (about 800 with their attributes)


def _tree(root: Path, count: int) -> Path:
    root.mkdir()
    for i in range(count):
        (root / f"f{i:04d}").write_bytes(b"x" * (i % 7))
    return root


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.fuse
def test_long_workspace_listing_comes_whole(session: Session, tmp_path: Path) -> None:
    ws = _tree(tmp_path / "ws", MANY)
    m = session.mount(session.spec([], workspace=str(ws)))
    names = [f"f{i:04d}" for i in range(MANY)]
    assert sorted(os.listdir(m.path / "workspace")) == names
    listing = subprocess.run(["ls", "-l", str(m.path / "workspace")], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    assert [line.split()[-1] for line in listing.stdout.splitlines()[1:]] == names


async def test_a_listing_closed_early_releases_what_it_never_handed_over(session: Session, tmp_path: Path) -> None:
    """The kernel takes one batch and closes the directory: the rest of the workspace handles close."""
    ws = _tree(tmp_path / "ws", MANY)
    spec = load_spec(session.spec([], workspace=str(ws)))
    async with open_session(spec, str(tmp_path / "in-process")) as live:
        core = live.core
        workspace = (await core.lookup(ROOT_INODE, "workspace")).st_ino
        before = _open_fds()
        fh = await core.opendir(workspace)
        taken = 0
        async with aclosing(core.readdir(fh, 0)) as batch:
            async for item in batch:
                if taken == 100:
                    break  # the reply is full; the kernel never asks for the rest
                core.accepted(fh, item)
                taken += 1
        assert _open_fds() >= before + MANY  # the listing holds a handle on every entry
        await core.releasedir(fh)
        assert _open_fds() <= before + taken  # only what the kernel holds is still open


async def test_a_second_batch_hands_over_live_nodes(session: Session, tmp_path: Path) -> None:
    """An entry that did not fit opens the next batch with the same node, still usable."""
    ws = _tree(tmp_path / "ws", 10)
    spec = load_spec(session.spec([], workspace=str(ws)))
    async with open_session(spec, str(tmp_path / "in-process")) as live:
        core = live.core
        workspace = (await core.lookup(ROOT_INODE, "workspace")).st_ino
        fh = await core.opendir(workspace)
        first = [item async for item in core.readdir(fh, 0)]
        for item in first[:5]:
            core.accepted(fh, item)  # the reply held ".", "..", f0000, f0001, f0002
        rest = [item async for item in core.readdir(fh, first[4].next_id)]
        for item in rest:
            core.accepted(fh, item)
        await core.releasedir(fh)
        assert [item.name for item in rest] == [f"f{i:04d}" for i in range(3, 10)]
        assert [(await core.getattr(item.entry.st_ino)).st_size for item in rest] == [i % 7 for i in range(3, 10)]


@pytest.mark.fuse
def test_security_and_acl_attributes_are_not_kept(session: Session, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "f").write_text("x")
    os.setxattr(ws / "f", "security.wtfs-test", b"on disk")  # a label the disk has: never shown
    src = _tree(tmp_path / "src", 3)
    m = session.mount(session.spec([{"mountPath": "/src", "url": str(src)}], workspace=str(ws)))
    paths = [m.path / "workspace" / "f", m.path / "workspace", m.data / "src" / "f0001", m.data, m.path]
    for path in paths:
        for name in ("security.selinux", "security.wtfs-test", "system.posix_acl_access"):
            with pytest.raises(OSError) as info:
                os.getxattr(path, name)
            assert info.value.errno == errno.ENOTSUP, (path, name)
    with pytest.raises(OSError) as info:
        os.setxattr(m.path / "workspace" / "f", "system.posix_acl_access", b"\x02\x00\x00\x00")
    assert info.value.errno == errno.ENOTSUP
    os.setxattr(m.path / "workspace" / "f", "user.kept", b"yes")
    assert os.listxattr(m.path / "workspace" / "f") == ["user.kept"]
    assert os.getxattr(m.path / "workspace" / "f", "user.kept") == b"yes"
    assert os.getxattr(m.data / "src" / "f0001", "user.wtfs.state") == b"local"  # served in place, no copy


@pytest.mark.fuse
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (make setup installs it)")
def test_ls_l_asks_for_labels_and_acls_once_per_mount(session: Session, tmp_path: Path) -> None:
    ws = _tree(tmp_path / "ws", 50)
    m = session.mount(session.spec([], workspace=str(ws)))
    traced = subprocess.run(
        ["strace", "-f", "-e", "trace=getxattr,lgetxattr", "ls", "-l", str(m.path / "workspace")],
        capture_output=True,
        text=True,
    )
    assert traced.returncode == 0, traced.stderr
    calls = [line for line in traced.stderr.splitlines() if "xattr(" in line]
    assert 1 <= len(calls) <= 3, calls  # a label, an ACL (coreutils 9.1), not 2 per file: then ls knows
    assert all("EOPNOTSUPP" in line or "ENOTSUP" in line for line in calls), calls
