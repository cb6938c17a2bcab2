"""The same filesystem cases on the core in-process and through a real mount (one fixture switch).

The in-process tier needs neither root nor /dev/fuse: it drives ``FsCore`` as the kernel would
(``tests/fsclient.py``). The mount tier runs the very same cases through a real FUSE mount.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import Session
from tests.fsclient import CoreClient, FsClient, MountClient
from tests.httpserver import Server
from wtfs.config import load_spec
from wtfs.daemon import open_session

BODY = os.urandom(300_000)


def session_spec(session: Session, http: Server, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "tree" / "sub").mkdir(parents=True)
    (src / "local.txt").write_text("local bytes\n")
    (src / "tree" / "a.txt").write_text("alpha\n")
    (src / "tree" / "sub" / "b.bin").write_bytes(BODY[:5000])
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "notes.txt").write_text("first\n")
    (workspace / "code").mkdir()
    (workspace / "code" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    return session.spec(
        [
            {"mountPath": "/local.txt", "url": str(src / "local.txt")},
            {"mountPath": "/tree", "url": f"file://{src / 'tree'}"},
            {"mountPath": "/web/remote.bin", "url": http.add("/remote.bin", BODY)},
        ],
        workspace=str(workspace),
    )


@pytest.fixture(params=["core", pytest.param("mount", marks=pytest.mark.fuse)])
async def fs(request: pytest.FixtureRequest, session: Session, http: Server, tmp_path: Path) -> AsyncIterator[FsClient]:
    spec_path = session_spec(session, http, tmp_path)
    if request.param == "mount":
        yield MountClient(session.mount(spec_path).path)
        return
    async with open_session(load_spec(spec_path), str(tmp_path / "in-process")) as live:
        yield CoreClient(live.core)
        assert not live.core.files, "a handle was left open"


async def errno_of(call: object) -> int:
    with pytest.raises(OSError) as info:
        await call  # type: ignore[misc]
    return info.value.errno or 0


# -- the root and data/ ---------------------------------------------------------------------------


async def test_root_lists_the_session_trees(fs: FsClient) -> None:
    assert await fs.listdir("") == ["data", "runs", "versions", "workspace"]
    assert (await fs.stat(".wtfs")).is_dir  # hidden, yet there
    assert await errno_of(fs.mkdir("elsewhere")) in (errno.EROFS, errno.EACCES)


async def test_data_serves_local_and_remote_bytes(fs: FsClient) -> None:
    assert await fs.listdir("data") == ["local.txt", "tree", "web"]
    assert await fs.read("data/local.txt") == b"local bytes\n"
    assert await fs.listdir("data/tree") == ["a.txt", "sub"]
    assert await fs.read("data/tree/sub/b.bin") == BODY[:5000]
    assert (await fs.stat("data/web/remote.bin")).size == len(BODY)
    remote = await fs.read("data/web/remote.bin")  # the open blocks until the copy lands
    assert hashlib.sha256(remote).digest() == hashlib.sha256(BODY).digest()


async def test_data_is_read_only_and_missing_names_are_enoent(fs: FsClient) -> None:
    assert await errno_of(fs.stat("data/nothing")) == errno.ENOENT
    assert await errno_of(fs.write("data/local.txt", b"x")) in (errno.EROFS, errno.EACCES)
    assert await errno_of(fs.unlink("data/local.txt")) in (errno.EROFS, errno.EACCES)


# -- workspace/ -----------------------------------------------------------------------------------


async def test_workspace_round_trip_and_errors(fs: FsClient) -> None:
    await fs.write("workspace/new.txt", b"hello")
    assert await fs.read("workspace/new.txt") == b"hello"
    await fs.mkdir("workspace/d")
    await fs.rename("workspace/new.txt", "workspace/d/moved.txt")
    assert await fs.listdir("workspace/d") == ["moved.txt"]
    assert await errno_of(fs.rmdir("workspace/d")) == errno.ENOTEMPTY
    assert await errno_of(fs.mkdir("workspace/d")) == errno.EEXIST
    assert await errno_of(fs.unlink("workspace/none")) == errno.ENOENT
    await fs.unlink("workspace/d/moved.txt")
    await fs.rmdir("workspace/d")
    assert "d" not in await fs.listdir("workspace")


async def test_workspace_hard_links_are_one_inode(fs: FsClient) -> None:
    await fs.link("workspace/notes.txt", "workspace/again.txt")
    first, second = await fs.stat("workspace/notes.txt"), await fs.stat("workspace/again.txt")
    assert first.ino == second.ino and first.nlink == second.nlink == 2
    await fs.chmod("workspace/again.txt", 0o600)
    assert stat.S_IMODE((await fs.stat("workspace/notes.txt")).mode) == 0o600  # one inode, one mode
    await fs.write("workspace/again.txt", b"through the link\n")
    assert await fs.read("workspace/notes.txt") == b"through the link\n"


async def test_workspace_creations_belong_to_the_caller(fs: FsClient) -> None:
    await fs.write("workspace/mine.txt", b"x", mode=0o640)
    made = await fs.stat("workspace/mine.txt")
    assert (made.uid, made.gid) == (os.getuid(), os.getgid())
    assert stat.S_IMODE(made.mode) & ~0o022 == stat.S_IMODE(made.mode)  # the caller's umask applied
    await fs.symlink("notes.txt", "workspace/sym")
    assert await fs.readlink("workspace/sym") == "notes.txt"


# -- versions/ and runs/ --------------------------------------------------------------------------


async def test_versions_snapshot_and_never_change(fs: FsClient) -> None:
    await fs.mkdir("versions/v1")
    assert await fs.listdir("versions") == ["v1"]
    assert await fs.listdir("versions/v1/workspace") == ["code", "notes.txt"]
    await fs.write("workspace/notes.txt", b"edited\n")
    assert await fs.read("versions/v1/workspace/notes.txt") == b"first\n"
    assert await errno_of(fs.write("versions/v1/workspace/notes.txt", b"no")) in (errno.EROFS, errno.EACCES)
    await fs.rename("versions/v1", "versions/kept")
    assert await fs.listdir("versions") == ["kept"]
    await fs.rmdir("versions/kept")
    assert await fs.listdir("versions") == []


async def test_runs_show_status_version_and_workspace(fs: FsClient) -> None:
    await fs.mkdir("runs/r1")
    assert await fs.listdir("runs/r1") == [".status", ".stderr", ".stdout", "version", "workspace"]
    assert (await fs.read("runs/r1/.status")).decode().split() == ["0", "UNKNOWN"]
    assert (await fs.readlink("runs/r1/version")).startswith("../../versions/")
    assert await fs.read("runs/r1/workspace/code/run.sh") == b"#!/bin/sh\necho hi\n"
    await fs.write("runs/r1/workspace/out.txt", b"result")
    version = (await fs.readlink("runs/r1/version")).rsplit("/", 1)[1]
    assert "out.txt" not in await fs.listdir(f"versions/{version}/workspace")  # the run writes its own copy
