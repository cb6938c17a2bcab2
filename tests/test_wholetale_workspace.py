"""workspace/ in WholeTale mode: the tale's workspace folder on the real girder-wholetale server,
read-write through the mount, written back on close; restart-safe; through an outage."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import girder_client
import pytest
import trio

from tests.conftest import Session
from tests.girder.fixtures import KEY_ENV, DroppingProxy, Girder
from tests.mounting import Mount, wait_for, wtfs
from tests.test_wholetale import REMOTE, data_folder, lock_count, tale  # noqa: F401 - fixtures
from wtfs import posix
from wtfs.catalog.girder_api import GirderApi
from wtfs.dm.base import DataManager
from wtfs.errors import DiskFull, NotEmpty
from wtfs.providers.http import make_client
from wtfs.store.writeback import WriteBack
from wtfs.store.wt_workspace import WsEntry, open_workspace
from wtfs.views.base import Caller
from wtfs.views.wt_workspace import WsDir, WsTree

pytestmark = pytest.mark.fuse


def spec(session: Session, url: str, tale_id: str, **extra: Any) -> Path:
    return session.spec([], wholetale={"api_url": url, "api_key_env": KEY_ENV, "tale_id": tale_id}, **extra)


def workspace_id(g: Girder, tale_id: str) -> str:
    return str(g.alice.get(f"tale/{tale_id}")["workspaceId"])


def on_server(g: Girder, folder_id: str) -> dict[str, Any]:
    """Name -> sha256 of the downloaded bytes (files) or a dict (folders), through girder-client."""
    listing = g.alice.get(f"dm/fs/{folder_id.replace('/', '%252F')}/listing")
    found: dict[str, Any] = {f["name"]: on_server(g, f["_id"]) for f in listing["folders"]}
    for item in listing["files"]:
        data = io.BytesIO()
        try:  # a workspace item's file has the item's id; a '/' in it must reach Girder as %2F
            g.alice.downloadFile(item["_id"].replace("/", "%252F"), data)
        except girder_client.IncompleteResponseError:
            found[item["name"]] = "being written"  # an upload landing just now
            continue
        found[item["name"]] = hashlib.sha256(data.getvalue()).hexdigest()
    return found


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pending(m: Mount) -> int:
    return int(json.loads((m.path / ".wtfs" / "status.json").read_text())["workspace"]["pending_uploads"])


@pytest.fixture
def proxy(girder: Girder) -> Iterator[DroppingProxy]:
    """Girder behind a proxy that can refuse every connection, as a server that went away."""
    p = DroppingProxy(girder.port)
    yield p
    p.close()


def test_write_rename_delete_reach_the_server(session: Session, girder: Girder, tale: str) -> None:  # noqa: F811
    ws = workspace_id(girder, tale)
    girder.alice.uploadStreamToFolder(ws, io.BytesIO(b"theirs\n"), "existing.txt", 7)
    m = session.mount(spec(session, girder.url, tale))
    work = m.path / "workspace"
    assert os.listdir(work) == ["existing.txt"]
    assert (work / "existing.txt").read_bytes() == b"theirs\n"
    big = os.urandom(3_000_000)
    (work / "big.bin").write_bytes(big)
    os.mkdir(work / "sub")
    (work / "sub" / "øre 日本.txt").write_bytes(b"unicode\n")
    for name in ("x?", "xx?", "xxx?"):  # one of them has a '/' in its server id (base64)
        (work / "sub" / name).write_bytes(name.encode())
    with open(work / "existing.txt", "ab") as appended:
        appended.write(b"and mine\n")
    (work / "gone.txt").write_bytes(b"to delete")
    wait_for(lambda: pending(m) == 0, what="uploads")
    os.rename(work / "big.bin", work / "sub" / "moved.bin")
    os.unlink(work / "gone.txt")
    os.mkdir(work / "empty")
    os.rmdir(work / "empty")
    with pytest.raises(OSError) as full:
        os.rmdir(work / "sub")
    assert full.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as taken:
        os.mkdir(work / "sub")
    assert taken.value.errno == errno.EEXIST
    assert on_server(girder, ws) == {
        "existing.txt": sha(b"theirs\nand mine\n"),
        "sub": {"moved.bin": sha(big), "øre 日本.txt": sha(b"unicode\n")}
        | {name: sha(name.encode()) for name in ("x?", "xx?", "xxx?")},
    }
    assert sorted(os.listdir(work)) == ["existing.txt", "sub"]
    here = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as kept:
            posix.renameat2(here, "existing.txt", here, "sub", 1)  # RENAME_NOREPLACE
        assert kept.value.errno == errno.EEXIST
    finally:
        os.close(here)
    assert (work / "sub" / "øre 日本.txt").read_bytes() == b"unicode\n"
    os.rename(work / "sub" / "xx?", work / "sub" / "yy?")
    os.unlink(work / "sub" / "xxx?")
    assert sorted(os.listdir(work / "sub")) == ["moved.bin", "x?", "yy?", "øre 日本.txt"]
    assert (work / "sub" / "yy?").read_bytes() == b"xx?"
    (work / "late.txt").write_bytes(b"written just before a version\n")
    os.mkdir(m.path / "versions" / "v1")  # waits for the pending upload
    assert (m.path / "versions" / "v1" / "workspace" / "late.txt").read_bytes() == b"written just before a version\n"
    m.unmount()
    again = session.mount(spec(session, girder.url, tale), where="again")
    assert (again.path / "workspace" / "sub" / "moved.bin").read_bytes() == big


def test_renamed_while_open_is_uploaded_under_its_new_name(session: Session, girder: Girder, tale: str) -> None:  # noqa: F811
    """Editors save by write, rename, close: the kernel's release comes after the rename."""
    ws = workspace_id(girder, tale)
    m = session.mount(spec(session, girder.url, tale))
    work = m.path / "workspace"
    fd = os.open(work / "draft.tmp", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"saved ")
        os.rename(work / "draft.tmp", work / "notes.txt")
        os.fsync(fd)  # uploads under the new name, now
        assert on_server(girder, ws) == {"notes.txt": sha(b"saved ")}
        os.write(fd, b"and closed\n")
    finally:
        os.close(fd)
    wait_for(lambda: on_server(girder, ws) == {"notes.txt": sha(b"saved and closed\n")}, what="the upload at close")
    assert os.listdir(work) == ["notes.txt"]
    with open(work / "scratch.tmp", "wb") as scratch:  # unlinked while open: its close uploads nothing
        scratch.write(b"scratch")
        scratch.flush()
        os.unlink(work / "scratch.tmp")
        scratch.write(b" more")
    wait_for(lambda: pending(m) == 0, what="nothing left to upload")
    assert os.listdir(work) == ["notes.txt"]
    assert on_server(girder, ws) == {"notes.txt": sha(b"saved and closed\n")}


@pytest.fixture
def small_state(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs as the state directory: the journal's disk fills up."""
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(state)], check=True)
    yield state
    subprocess.run(["umount", "-l", str(state)], check=False)


def test_a_full_state_directory_is_enospc(small_state: Path, tmp_path: Path) -> None:
    """Journal and copies fail as ENOSPC (the view's errno, the uploader's retry), not as an
    unexpected error; a copy filled from another filesystem (the host cache) works."""
    journal = WriteBack(small_state / "ws")
    (tmp_path / "landed").write_bytes(b"the server's bytes\n")
    with open(tmp_path / "landed", "rb") as landed:
        row = journal.start("landed.txt", "v1", landed.fileno())
    assert journal.copy_path(row).read_bytes() == b"the server's bytes\n"
    filler = os.open(small_state / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    with pytest.raises(OSError) as filled:
        while True:
            os.write(filler, bytes(65536))
    os.close(filler)
    assert filled.value.errno == errno.ENOSPC
    with pytest.raises(DiskFull) as full:
        journal.start("new.txt", "", None)
    assert full.value.errno == errno.ENOSPC
    assert os.listdir(journal.copies) == [row.copy]  # no orphan copy left
    journal.close()


def test_a_copy_the_host_cache_shares_is_copied_before_it_is_written(tmp_path: Path) -> None:
    """An upload's check links the copy it sent into the host cache; a writer reopening the row
    (one a crash kept) gets a copy of its own: the cached bytes never change."""
    journal = WriteBack(tmp_path / "ws")
    row = journal.start("a.txt", "", None)
    journal.copy_path(row).write_bytes(b"sent\n")
    journal.closed("a.txt")
    os.link(journal.copy_path(row), tmp_path / "cached")  # as the check's landing does
    again = journal.start("a.txt", "v1", None)
    assert again.copy != row.copy and os.listdir(journal.copies) == [again.copy]
    with open(journal.copy_path(again), "ab") as writer:
        writer.write(b"more\n")
    assert (tmp_path / "cached").read_bytes() == b"sent\n"
    assert journal.copy_path(again).read_bytes() == b"sent\nmore\n"
    journal.close()


def test_changed_on_the_server_is_not_overwritten(session: Session, girder: Girder, tale: str) -> None:  # noqa: F811
    ws = workspace_id(girder, tale)
    girder.alice.uploadStreamToFolder(ws, io.BytesIO(b"v1\n"), "notes.txt", 3)
    m = session.mount(spec(session, girder.url, tale))
    notes = m.path / "workspace" / "notes.txt"
    with open(notes, "r+b") as handle:
        assert handle.read() == b"v1\n"
        (item,) = girder.alice.get(f"dm/fs/{ws}/listing")["files"]
        girder.alice.delete(f"item/{item['_id']}")
        girder.alice.uploadStreamToFolder(ws, io.BytesIO(b"theirs\n"), "notes.txt", 7)
        handle.write(b"mine\n")
        handle.flush()
        os.fsync(handle.fileno())  # the conflict copy goes up while the file is still open...
        handle.write(b"more\n")  # ...and what is written after it follows it
    conflict = f"notes.txt (conflict from {os.uname().nodename})"
    expected = {"notes.txt": sha(b"theirs\n"), conflict: sha(b"v1\nmine\nmore\n")}
    wait_for(lambda: on_server(girder, ws) == expected, what="the conflict copy beside theirs")
    assert "changed on the server since it was read" in m.log.read_text()


def test_kill_after_close_then_remount_uploads(
    session: Session,
    girder: Girder,
    tale: str,  # noqa: F811
    proxy: DroppingProxy,
) -> None:
    ws = workspace_id(girder, tale)
    url = f"http://127.0.0.1:{proxy.port}/api/v1"
    m = session.mount(spec(session, url, tale))
    assert os.listdir(m.path / "workspace") == []
    proxy.set_online(False)  # the upload cannot finish before the kill
    data = os.urandom(200_000)
    (m.path / "workspace" / "saved.bin").write_bytes(data)
    m.kill()
    assert on_server(girder, ws) == {}
    proxy.set_online(True)
    session.mount(spec(session, url, tale), where="again")
    wait_for(lambda: on_server(girder, ws) == {"saved.bin": sha(data)}, what="the upload a crash left")


def test_server_outage_mid_mount(session: Session, girder: Girder, tale: str, proxy: DroppingProxy) -> None:  # noqa: F811
    ws = workspace_id(girder, tale)
    girder.alice.uploadStreamToFolder(ws, io.BytesIO(b"cached\n"), "cached.txt", 7)
    girder.alice.uploadStreamToFolder(ws, io.BytesIO(b"never read\n"), "uncached.txt", 11)
    m = session.mount(spec(session, f"http://127.0.0.1:{proxy.port}/api/v1", tale, metadata_ttl=0))
    work = m.path / "workspace"
    assert (work / "cached.txt").read_bytes() == b"cached\n"
    proxy.set_online(False)
    assert sorted(os.listdir(work)) == ["cached.txt", "uncached.txt"]  # the last known listing
    assert (work / "cached.txt").read_bytes() == b"cached\n"  # from the host cache
    with pytest.raises(OSError) as failed:
        (work / "uncached.txt").read_bytes()
    assert failed.value.errno == errno.EIO
    (work / "queued.txt").write_bytes(b"written offline\n")
    with open(work / "cached.txt", "ab") as changed:  # filled from the host cache
        changed.write(b"changed offline\n")
    with pytest.raises(OSError) as refused:
        os.unlink(work / "cached.txt")  # the server must say first: the local changes stay
    assert refused.value.errno == errno.EIO
    assert (work / "cached.txt").read_bytes() == b"cached\nchanged offline\n"
    status = wtfs("status", str(m.path))
    assert "server unreachable since" in status.stdout
    assert m.log.read_text().count("server unreachable") == 1
    proxy.set_online(True)
    queued = {"queued.txt": sha(b"written offline\n"), "cached.txt": sha(b"cached\nchanged offline\n")}
    wait_for(lambda: on_server(girder, ws).items() >= queued.items(), what="the queued uploads")
    assert (work / "uncached.txt").read_bytes() == b"never read\n"

    proxy.set_silent(True)  # stopped, not gone: connections are accepted, nothing is answered
    try:  # each command has a deadline: a silent server is down after one read timeout (10 s)
        listed = subprocess.run(["ls", str(work)], capture_output=True, text=True, timeout=25, check=True)
        assert listed.stdout.split() == ["cached.txt", "queued.txt", "uncached.txt"]  # the last listing
        cat = subprocess.run(["cat", str(work / "cached.txt")], capture_output=True, timeout=25, check=True)
        assert cat.stdout == b"cached\nchanged offline\n"  # from the host cache
        assert "server unreachable since" in wtfs("status", str(m.path), timeout=25).stdout
    finally:
        proxy.set_silent(False)


def test_data_through_an_outage(
    session: Session,
    girder: Girder,
    data_folder: dict[str, Any],  # noqa: F811
    proxy: DroppingProxy,
) -> None:
    """data/: a copy already on this host opens while the server is away; what is not fails with
    EIO at once; once the server is back, the file held open gets its server lock again."""
    url = f"http://127.0.0.1:{proxy.port}/api/v1"
    dataset = [{"mountPath": "/data", "itemId": data_folder["folder"]}]
    m = session.mount(
        session.spec(
            dataset,
            metadata_ttl=0,
            wholetale={"api_url": url, "api_key_env": KEY_ENV, "private_storage": False},
        )
    )
    plain = m.data / "data" / "plain.txt"
    assert plain.read_bytes() == b"uploaded bytes\n"
    wait_for(lambda: lock_count(girder, data_folder["plain"]) == 0, what="the first lock released")
    proxy.set_online(False)
    assert sorted(os.listdir(m.data / "data")) == ["missing.bin", "plain.txt", "remote.bin", "sub"]
    held = open(plain, "rb")  # noqa: SIM115 - held across the outage
    assert held.read() == b"uploaded bytes\n"
    with pytest.raises(OSError) as failed:
        (m.data / "data" / "remote.bin").read_bytes()
    assert failed.value.errno == errno.EIO
    assert lock_count(girder, data_folder["plain"]) == 0
    proxy.set_online(True)
    wait_for(lambda: lock_count(girder, data_folder["plain"]) == 1, what="the lock taken again")
    held.close()
    wait_for(lambda: lock_count(girder, data_folder["plain"]) == 0, what="the lock released")
    assert (m.data / "data" / "remote.bin").read_bytes() == REMOTE


def test_names_girder_cannot_download_by_item(session: Session, girder: Girder) -> None:
    """Girder 5.0.21 answers HTTP 500 to item and file downloads of a name like "ø" (its
    Content-Disposition header); data/ downloads through the lock, which sends none."""
    collection = girder.admin.createCollection(f"wt-{os.urandom(4).hex()}", public=True)
    folder = girder.admin.createFolder(collection["_id"], "data", parentType="collection", public=True)
    item = girder.admin.createItem(folder["_id"], "ø.txt")
    girder.admin.uploadFile(item["_id"], io.BytesIO(b"latin-1 name\n"), "ø.txt", 13)
    with pytest.raises(girder_client.HttpError) as refused:
        girder.alice.downloadItem(item["_id"], str(session.root))
    assert refused.value.status == 500  # the server's bug this works around
    entries = [{"mountPath": "/data", "itemId": folder["_id"]}]
    settings = {"api_url": girder.url, "api_key_env": KEY_ENV, "private_storage": False}  # downloaded
    m = session.mount(session.spec(entries, wholetale=settings))
    assert os.listdir(m.data / "data") == ["ø.txt"]
    assert (m.data / "data" / "ø.txt").read_bytes() == b"latin-1 name\n"


def test_a_local_workspace_key_is_refused(session: Session, girder: Girder, tale: str) -> None:  # noqa: F811
    path = spec(session, girder.url, tale, workspace=str(session.root / "ws"))
    (session.root / "mnt").mkdir()
    result = wtfs("mount", str(path), str(session.root / "mnt"))
    if result.returncode == 0:
        wtfs("umount", str(session.root / "mnt"))
    assert result.returncode != 0
    assert "workspace: in WholeTale mode workspace/ is the tale's folder on the server" in result.stderr


def test_a_read_only_share(session: Session, girder: Girder) -> None:
    """A tale another user shares read-only: its workspace lists and reads, and refuses changes."""
    config = {"buildpack": "PythonBuildPack", "targetMount": "/work", "user": "jovyan", "port": 8888}
    image = girder.bob.post("image", parameters={"name": f"i-{os.urandom(3).hex()}", "config": json.dumps(config)})
    theirs = girder.bob.post("tale", json={"imageId": image["_id"], "dataSet": [], "title": "bob's"})
    girder.bob.uploadStreamToFolder(theirs["workspaceId"], io.BytesIO(b"bob's\n"), "notes.txt", 6)
    access = girder.bob.get(f"tale/{theirs['_id']}/access")
    access["users"].append({"id": girder.alice.get("user/me")["_id"], "level": 0})  # READ
    girder.bob.put(f"tale/{theirs['_id']}/access", parameters={"access": json.dumps(access)})
    m = session.mount(spec(session, girder.url, theirs["_id"]))
    work = m.path / "workspace"
    assert (work / "notes.txt").read_bytes() == b"bob's\n"
    for change in (
        lambda: (work / "new.txt").write_bytes(b"x"),
        lambda: open(work / "notes.txt", "ab"),  # noqa: SIM115 - it must not open
        lambda: os.mkdir(work / "dir"),
        lambda: os.unlink(work / "notes.txt"),
        lambda: os.rename(work / "notes.txt", work / "moved.txt"),
    ):
        with pytest.raises(OSError) as refused:
            change()
        assert refused.value.errno == errno.EACCES
    assert sorted(os.listdir(work)) == ["notes.txt"]


async def _unchecked(entry: WsEntry, digest: str, local: str | None) -> None:
    """The host cache's check of an upload is not what these in-process tests are about."""


async def _write(directory: WsDir, name: str, data: bytes) -> None:
    _, handle = await directory.create(name, 0o644, os.O_WRONLY | os.O_CREAT, Caller(0, 0))
    await handle.write(0, data)
    await handle.release()


async def test_changes_of_the_same_paths_never_wait_on_each_other(girder: Girder, tale: str, tmp_path: Path) -> None:  # noqa: F811
    """In-process, on the view's nodes: one mount's kernel serialises its renames, but renames
    also meet closes and uploads, and a lock taken in argument order deadlocks a→b against b→a.
    Both opposite renames finish; a directory renamed while a file below it is closed takes the
    file's upload along."""
    ws = workspace_id(girder, tale)
    async with make_client(5.0) as client, trio.open_nursery() as nursery:
        api = GirderApi(client, girder.url, os.environ[KEY_ENV], None)
        await api.authenticate()
        sync = await open_workspace(api, tale, 60.0, tmp_path, _unchecked, "host", nursery)
        tree = WsTree(sync, cast(DataManager, None), "owner")  # no read here goes to the host cache
        root = tree.root
        await _write(root, "a", b"a")
        await _write(root, "b", b"b")
        await root.mkdir("d", 0o755, Caller(0, 0))
        d = await root.lookup("d")
        assert isinstance(d, WsDir)
        _, below = await d.create("f", 0o644, os.O_WRONLY | os.O_CREAT, Caller(0, 0))
        await below.write(0, b"below")
        with trio.fail_after(30):
            async with trio.open_nursery() as both:
                both.start_soon(root.rename, "a", root, "b", 0)
                both.start_soon(root.rename, "b", root, "a", 0)
                both.start_soon(root.rename, "d", root, "e", 0)
                both.start_soon(below.release)
            assert await sync.drain(20)
        await root.mkdir("x", 0o755, Caller(0, 0))
        x = await root.lookup("x")
        assert isinstance(x, WsDir)
        _, unsent = await x.create("unsent", 0o644, os.O_WRONLY | os.O_CREAT, Caller(0, 0))
        await unsent.write(0, b"not sent yet")  # open: not uploaded, the server's x/ is empty
        with pytest.raises(NotEmpty):
            await root.rename("e", root, "x", 0)
        await unsent.release()
        with trio.fail_after(30):
            assert await sync.drain(20)
        (kept,) = {"a", "b"} & set(await root._children())
        assert on_server(girder, ws) == {
            kept: sha(kept.encode()),
            "e": {"f": sha(b"below")},
            "x": {"unsent": sha(b"not sent yet")},
        }
        assert sync.rows == {}
        nursery.cancel_scope.cancel()
    sync.journal.close()


def test_a_full_write_back_disk_is_enospc_and_keeps_the_servers_copy(
    session: Session,
    girder: Girder,
    tale: str,  # noqa: F811
) -> None:
    """The write-back copies on a 1 MiB tmpfs: a write that does not fit is ENOSPC, and once
    closed the incomplete copy is dropped, never uploaded: the server keeps what it had."""
    ws = workspace_id(girder, tale)
    copies = session.root / "state" / "wt-workspace"
    copies.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(copies)], check=True)
    try:
        m = session.mount(spec(session, girder.url, tale))
        work = m.path / "workspace"
        kept = os.urandom(200_000)
        (work / "kept.bin").write_bytes(kept)
        wait_for(lambda: pending(m) == 0, what="the first upload")
        for name in ("kept.bin", "new.bin"):
            with pytest.raises(OSError) as full:
                (work / name).write_bytes(os.urandom(2_000_000))
            assert full.value.errno == errno.ENOSPC
        wait_for(lambda: pending(m) == 0, what="the incomplete copies dropped")
        assert os.listdir(work) == ["kept.bin"]
        assert (work / "kept.bin").read_bytes() == kept
        assert on_server(girder, ws) == {"kept.bin": sha(kept)}
        (journal,) = copies.iterdir()
        assert os.listdir(journal / "copies") == []
        assert "a write to the local copy failed; the copy is dropped" in m.log.read_text()
        m.unmount()
    finally:
        subprocess.run(["umount", "-l", str(copies)], check=False)
