"""WholeTale mode against the real girder-wholetale 2.0.14 plugin on Girder 5 (in-memory DB)."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Session
from tests.girder.fixtures import KEY_ENV, Girder
from tests.httpserver import Server
from tests.mounting import is_mounted, wait_for, wtfs

pytestmark = pytest.mark.fuse

REMOTE = os.urandom(150_000)


def item_with_file(g: Girder, folder: str, name: str, data: bytes) -> str:
    item = g.admin.createItem(folder, name)
    g.admin.uploadFile(item["_id"], io.BytesIO(data), name, len(data))
    return str(item["_id"])


@pytest.fixture
def data_folder(girder: Girder, http: Server) -> dict[str, Any]:
    collection = girder.admin.createCollection(f"wt-{os.urandom(4).hex()}", public=True)
    folder = girder.admin.createFolder(collection["_id"], "data", parentType="collection", public=True)
    sub = girder.admin.createFolder(folder["_id"], "sub")
    ids = {
        "folder": folder["_id"],
        "plain": item_with_file(girder, folder["_id"], "plain.txt", b"uploaded bytes\n"),
        "deep": item_with_file(girder, sub["_id"], "deep.txt", b"deeper\n"),
    }
    http.add("/remote.bin", REMOTE)
    http.add("/missing.bin", b"", fault="404")
    for key, path, size in (("remote", "/remote.bin", len(REMOTE)), ("broken", "/missing.bin", 10)):
        # what WholeTale's HTTP import makes: an item with one linkUrl file, provider metadata
        item = girder.admin.createItem(folder["_id"], path.strip("/"))
        link = {"parentType": "item", "parentId": item["_id"], "name": path.strip("/"), "linkUrl": http.base + path}
        girder.admin.post("file", parameters={**link, "size": size})
        girder.admin.addMetadataToItem(item["_id"], {"provider": "HTTP", "identifier": http.base + path})
        ids[key] = item["_id"]
    return ids


def wt_spec(session: Session, g: Girder, entries: list[dict[str, str]], **wholetale: str) -> Path:
    return session.spec(entries, wholetale={"api_url": g.url, "api_key_env": KEY_ENV, **wholetale})


def lock_count(g: Girder, item: str) -> int:
    return int(g.admin.get(f"dm/fs/{item}/raw").get("dm", {}).get("lockCount", 0))


def server_locks(g: Girder, session_id: str) -> list[dict[str, Any]]:
    return list(g.alice.get("dm/lock", parameters={"sessionId": session_id}))  # locks are listed per user


def mounted_session(m: Any) -> str:
    return str(json.loads((m.path / ".wtfs" / "status.json").read_text())["sessions"][0]["sessionId"])


def test_session_tree_bytes_and_lock_counts(session: Session, girder: Girder, data_folder: dict[str, Any]) -> None:
    spec = wt_spec(
        session,
        girder,
        [
            {"mountPath": "/data", "itemId": data_folder["folder"]},
            {"mountPath": "/single/plain.txt", "itemId": data_folder["plain"]},
        ],
    )
    m = session.mount(spec)
    session_id = mounted_session(m)
    assert sorted(os.listdir(m.data)) == ["data", "single"]
    assert sorted(os.listdir(m.data / "data")) == ["missing.bin", "plain.txt", "remote.bin", "sub"]
    assert (m.data / "data" / "remote.bin").stat().st_size == len(REMOTE)
    assert (m.data / "single" / "plain.txt").read_bytes() == b"uploaded bytes\n"
    assert (m.data / "data" / "sub" / "deep.txt").read_bytes() == b"deeper\n"
    assert (m.data / "data" / "remote.bin").read_bytes() == REMOTE  # fetched by the server over HTTP
    assert lock_count(girder, data_folder["plain"]) == 0
    with open(m.data / "data" / "plain.txt", "rb") as first:
        assert lock_count(girder, data_folder["plain"]) == 1
        with open(m.data / "data" / "plain.txt", "rb") as second:
            assert lock_count(girder, data_folder["plain"]) == 2
            assert first.read() == second.read() == b"uploaded bytes\n"
    wait_for(lambda: lock_count(girder, data_folder["plain"]) == 0, what="both locks released")
    status = wtfs("status", str(m.path))
    assert status.returncode == 0 and json.loads(status.stdout)["mode"] == "wholetale"
    assert server_locks(girder, session_id) == []


def test_failed_server_transfer_is_eio(session: Session, girder: Girder, data_folder: dict[str, Any]) -> None:
    m = session.mount(wt_spec(session, girder, [{"mountPath": "/broken.bin", "itemId": data_folder["broken"]}]))
    with pytest.raises(OSError) as info:
        (m.data / "broken.bin").read_bytes()
    assert info.value.errno == errno.EIO
    assert server_locks(girder, mounted_session(m)) == []


def test_created_session_is_deleted_and_locks_released_on_unmount(
    session: Session, girder: Girder, data_folder: dict[str, Any]
) -> None:
    m = session.mount(wt_spec(session, girder, [{"mountPath": "/plain.txt", "itemId": data_folder["plain"]}]))
    session_id = mounted_session(m)
    held = open(m.data / "plain.txt", "rb")  # noqa: SIM115 - open across the unmount
    assert len(server_locks(girder, session_id)) == 1
    assert wtfs("umount", str(m.path)).returncode == 0
    assert server_locks(girder, session_id) == []
    sessions = [s["_id"] for s in girder.alice.get("dm/session")]
    assert session_id not in sessions
    with contextlib.suppress(OSError):
        held.close()  # the daemon is gone


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_locks_released_after_sigterm_or_crash(
    session: Session, girder: Girder, data_folder: dict[str, Any], how: str
) -> None:
    dataset = json.dumps([{"itemId": data_folder["plain"], "mountPath": "/plain.txt"}])
    session_id = girder.alice.post("dm/session", parameters={"dataSet": dataset})["_id"]
    spec = wt_spec(session, girder, [], session_id=session_id)
    m = session.mount(spec)
    opened = threading.Event()

    def hold() -> None:
        try:
            with open(m.data / "plain.txt", "rb"):
                opened.set()
                threading.Event().wait(30)
        except OSError:
            pass

    threading.Thread(target=hold, daemon=True).start()
    opened.wait(30)
    assert len(server_locks(girder, session_id)) == 1
    if how == "sigterm":
        os.kill(m.pid, signal.SIGTERM)
        wait_for(lambda: not is_mounted(m.path), what="the daemon to unmount")
        assert server_locks(girder, session_id) == []
    else:
        m.kill()
        assert len(server_locks(girder, session_id)) == 1  # the crash left it behind
        again = session.mount(spec, where="elsewhere")  # any mount of this host deletes a dead mount's locks
        assert server_locks(girder, session_id) == []
        assert (again.data / "plain.txt").read_bytes() == b"uploaded bytes\n"
    assert session_id in [s["_id"] for s in girder.alice.get("dm/session")]  # not ours to delete


def test_a_mount_with_another_cache_keeps_the_locks_of_live_mounts(
    session: Session, girder: Girder, data_folder: dict[str, Any]
) -> None:
    """A mount cannot see the daemons of another host cache: it leaves their locks alone."""
    dataset = json.dumps([{"itemId": data_folder["plain"], "mountPath": "/plain.txt"}])
    session_id = girder.alice.post("dm/session", parameters={"dataSet": dataset})["_id"]
    first = session.mount(wt_spec(session, girder, [], session_id=session_id))
    with open(first.data / "plain.txt", "rb") as held:
        assert len(server_locks(girder, session_id)) == 1
        settings = {"api_url": girder.url, "api_key_env": KEY_ENV, "session_id": session_id}
        other = session.spec([], name="other", cache_dir=str(session.root / "other-cache"), wholetale=settings)
        session.mount(other, where="other")
        assert len(server_locks(girder, session_id)) == 1  # still the first mount's
        assert held.read() == b"uploaded bytes\n"
    wait_for(lambda: server_locks(girder, session_id) == [], what="the lock released at close")


def test_concurrent_opens_of_an_uncached_item(session: Session, girder: Girder, data_folder: dict[str, Any]) -> None:
    m = session.mount(wt_spec(session, girder, [{"mountPath": "/remote.bin", "itemId": data_folder["remote"]}]))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: (m.data / "remote.bin").read_bytes(), range(4)))
    assert results == [REMOTE] * 4
    wait_for(lambda: lock_count(girder, data_folder["remote"]) == 0, what="locks released")


@pytest.fixture
def tale(girder: Girder) -> str:
    config = {"buildpack": "PythonBuildPack", "targetMount": "/home/jovyan/work", "user": "jovyan", "port": 8888}
    image = girder.alice.post("image", parameters={"name": f"img-{os.urandom(3).hex()}", "config": json.dumps(config)})
    return str(girder.alice.post("tale", json={"imageId": image["_id"], "dataSet": [], "title": "wtfs test"})["_id"])


def test_versions_and_runs_of_a_tale(session: Session, girder: Girder, tale: str) -> None:
    for i in range(52):  # more than Girder's page of 50
        girder.alice.post("version", parameters={"taleId": tale, "name": f"api-{i:02d}", "force": "true"})
    workspace = girder.alice.get(f"tale/{tale}")["workspaceId"]
    girder.alice.uploadStreamToFolder(workspace, io.BytesIO(b"from the tale's workspace\n"), "notes.txt", 26)
    m = session.mount(wt_spec(session, girder, [], tale_id=tale))
    versions, runs = m.path / "versions", m.path / "runs"
    assert os.listdir(versions) == [f"api-{i:02d}" for i in range(52)]
    os.mkdir(versions / "mine")
    assert os.listdir(versions)[-1] == "mine"
    with pytest.raises(OSError) as taken:
        os.mkdir(versions / "mine")
    assert taken.value.errno == errno.EEXIST
    assert "manifest.json" in os.listdir(versions / "mine")
    assert json.loads((versions / "mine" / "manifest.json").read_text())  # contents through the server
    os.rename(versions / "mine", versions / "renamed")
    assert "renamed" in os.listdir(versions) and "mine" not in os.listdir(versions)
    os.mkdir(runs / "r1")  # a run of the latest version
    assert os.listdir(runs) == ["r1"]
    run_folder = girder.alice.get("run", parameters={"taleId": tale})[0]["_id"]
    on_server = {f["name"]: f["_id"] for f in girder.alice.listFolder(run_folder, parentFolderType="folder")}
    inside = sorted(i["name"] for i in girder.alice.listItem(on_server["workspace"]))
    assert inside == ["notes.txt"]  # the server keeps the run's files in <run>/workspace/
    assert os.listdir(runs / "r1" / "workspace") == inside  # and so does the mount, one level up
    assert (runs / "r1" / "workspace" / "notes.txt").read_bytes() == b"from the tale's workspace\n"
    assert os.readlink(runs / "r1" / "version") == "../../versions/renamed"
    assert (runs / "r1" / ".status").read_text() == "0 UNKNOWN\n"
    run_id = girder.alice.get("run", parameters={"taleId": tale})[0]["_id"]
    girder.alice.patch(f"run/{run_id}/status", parameters={"status": 2})
    wait_for(lambda: (runs / "r1" / ".status").read_text() == "2 RUNNING\n", timeout=1.0, what=".status to follow")
    with pytest.raises(OSError) as busy:
        os.rmdir(versions / "renamed")
    assert busy.value.errno == errno.EBUSY
    os.rename(runs / "r1", runs / "r2")
    os.rmdir(runs / "r2")
    assert os.listdir(runs) == []
    os.rmdir(versions / "renamed")
    assert "renamed" not in os.listdir(versions)


def test_mount_follows_session_changes(session: Session, girder: Girder, data_folder: dict[str, Any]) -> None:
    first = [{"itemId": data_folder["plain"], "mountPath": "/plain.txt"}]
    session_id = girder.alice.post("dm/session", parameters={"dataSet": json.dumps(first)})["_id"]
    m = session.mount(wt_spec(session, girder, [], session_id=session_id))
    assert os.listdir(m.data) == ["plain.txt"]
    changed = [*first, {"itemId": data_folder["deep"], "mountPath": "/more/deep.txt"}]
    girder.alice.put(f"dm/session/{session_id}", parameters={"dataSet": json.dumps(changed)})  # seq + 1
    wait_for(lambda: sorted(os.listdir(m.data)) == ["more", "plain.txt"], timeout=10, what="data/ to follow")
    assert (m.data / "more" / "deep.txt").read_bytes() == b"deeper\n"


def test_downloaded_copies_live_in_the_shared_host_cache(
    session: Session, girder: Girder, data_folder: dict[str, Any]
) -> None:
    """Without the server's storage (private_storage = false) an item is downloaded once into the
    host cache, by the same machinery as every other source: recorded, locked while open, kept
    across mounts, listed and collectable like any other copy."""
    spec = wt_spec(session, girder, [{"mountPath": "/data", "itemId": data_folder["folder"]}], private_storage=False)
    m = session.mount(spec)
    with open(m.data / "data" / "plain.txt", "rb") as held:
        assert held.read() == b"uploaded bytes\n"
        listed = json.loads(wtfs("cache", "ls", "--json", "--cache-dir", str(session.cache_dir)).stdout)
        (copy,) = [o for o in listed if o["source"] == f"wt:{data_folder['plain']}"]
        assert copy["status"] == "ACTIVE" and copy["lock_count"] == 1  # landed; GC will not take it while open
        assert lock_count(girder, data_folder["plain"]) == 1  # and the server holds its lock too
    assert (m.data / "data" / "remote.bin").read_bytes() == REMOTE
    m.unmount()
    again = session.mount(spec, where="again")
    assert (again.data / "data" / "plain.txt").read_bytes() == b"uploaded bytes\n"
    listed = json.loads(wtfs("cache", "ls", "--json", "--cache-dir", str(session.cache_dir)).stdout)
    assert [o["lock_count"] for o in listed if o["source"].startswith("wt:")] == [0, 0]  # kept, unlocked
    assert len([o for o in listed if o["source"] == f"wt:{data_folder['plain']}"]) == 1  # landed once
