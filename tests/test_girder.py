"""Girder entries end to end, against a real Girder 5 server (in-memory database)."""

from __future__ import annotations

import errno
import hashlib
import os
import time
from pathlib import Path

import pytest

from tests.conftest import Session
from tests.girder.fixtures import KEY_ENV, DroppingProxy, Girder, Tree, seed
from tests.httpserver import Server
from tests.mounting import is_mounted, wtfs

pytestmark = pytest.mark.fuse

REMOTE = os.urandom(200_000)


@pytest.fixture
def tree(girder: Girder, http: Server, tmp_path: Path) -> Tree:
    http.add("/phys.bin", REMOTE)
    local = tmp_path / "phys-local.bin"
    local.write_bytes(os.urandom(50_000))
    return seed(girder, http.base, local, REMOTE)


def girder_spec(session: Session, api_url: str, entries: list[dict[str, str]], **top: object) -> Path:
    return session.spec(entries, girder={"api_url": api_url, "api_key_env": KEY_ENV}, **top)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def errno_of(fn: object, *args: object) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.errno or 0


def test_tree_matches_girder_and_every_provider_path(session: Session, girder: Girder, tree: Tree) -> None:
    spec = girder_spec(
        session,
        girder.url,
        [
            {"mountPath": "/top", "itemId": tree.ids["top"]},  # an itemId naming a folder, as in the reference
            {"mountPath": "/one/single.csv", "itemId": tree.ids["single"]},
        ],
        local_roots=[str(session.root)],  # where the seeded phys-local.bin lives
    )
    m = session.mount(spec)
    top = m.data / "top"
    expected = [
        "big.bin",
        "twins",
        "empty",
        "link.bin",
        "many",
        "multi",
        "nested",
        "phys-http.bin",
        "phys-local.bin",
    ]
    assert sorted(os.listdir(top)) == sorted(expected)
    assert sorted(os.listdir(top / "many")) == [f"f{i:02d}.txt" for i in range(60)]  # past Girder's page of 50
    assert os.listdir(top / "nested") == ["deeper", "single.csv"]
    assert (top / "big.bin").stat().st_size == 3_000_000
    assert (top / "multi").is_dir() and sorted(os.listdir(top / "multi")) == ["a.txt", "b.txt"]
    for rel, data in tree.content.items():
        if rel == "single":
            continue
        assert sha((m.data / rel).read_bytes()) == sha(data), rel
    assert (m.data / "one" / "single.csv").read_bytes() == tree.content["single"]
    assert (top / "many" / "f59.txt").read_text() == "file 59\n"
    second = max(tree.ids["twins"])  # the later id gets the suffix
    assert sorted(os.listdir(top / "twins")) == ["x.txt", f"x.txt ({second})"]
    assert {(top / "twins" / "x.txt").read_text(), (top / "twins" / f"x.txt ({second})").read_text()} == {
        "twin 0",
        "twin 1",
    }
    item_time = (top / "big.bin").stat().st_mtime
    assert abs(item_time - time.time()) < 3600  # from Girder's `updated`


def test_private_item_of_another_user_is_eacces(session: Session, girder: Girder, tree: Tree) -> None:
    m = session.mount(girder_spec(session, girder.url, [{"mountPath": "/secret.txt", "itemId": tree.ids["private"]}]))
    assert os.listdir(m.data) == ["secret.txt"]
    assert errno_of(open, m.data / "secret.txt", "rb") == errno.EACCES


def test_bad_key_or_id_at_mount_is_one_clear_line(session: Session, girder: Girder, tree: Tree) -> None:
    spec = girder_spec(session, girder.url, [{"mountPath": "/t", "itemId": tree.ids["top"]}])
    mountpoint = session.root / "mnt"
    mountpoint.mkdir()
    refused = wtfs("mount", str(spec), str(mountpoint), env={**os.environ, KEY_ENV: "not-a-key"})
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"wtfs: {girder.url}: the Girder API key was refused (HTTP 400)"
    assert "not-a-key" not in refused.stderr
    missing = girder_spec(session, girder.url, [{"mountPath": "/t", "itemId": "0" * 24}])
    result = wtfs("mount", str(missing), str(mountpoint))
    assert result.returncode == 2  # the spec names what is not there: a configuration error
    assert result.stderr.strip().endswith(f"dataset[0].itemId: Girder item {'0' * 24}: not found in Girder")
    unreachable = girder_spec(session, "http://127.0.0.1:9/api/v1", [{"mountPath": "/t", "itemId": tree.ids["top"]}])
    down = wtfs("mount", str(unreachable), str(mountpoint))
    assert down.returncode == 1 and "Girder unreachable" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
    assert not is_mounted(mountpoint)


def test_dropped_download_resumes(session: Session, girder: Girder, tree: Tree) -> None:
    proxy = DroppingProxy(girder.port)
    try:
        api = f"http://127.0.0.1:{proxy.port}/api/v1"
        m = session.mount(girder_spec(session, api, [{"mountPath": "/big.bin", "itemId": tree.ids["big"]}]))
        proxy.sent_to_client = 0
        proxy.drop_after = 1_000_000  # cut the download a third of the way in
        assert sha((m.data / "big.bin").read_bytes()) == sha(tree.content["top/big.bin"])
        # resumed with Range: about 3 MB crossed the wire, not 1 MB + 3 MB
        assert 3_000_000 <= proxy.sent_to_client < 3_200_000
    finally:
        proxy.close()


def test_girder_going_away_and_coming_back(session: Session, girder: Girder, tree: Tree) -> None:
    """Girder "stopped" by cutting it off behind a proxy (a restart would lose its in-memory DB)."""
    proxy = DroppingProxy(girder.port)
    try:
        api = f"http://127.0.0.1:{proxy.port}/api/v1"
        m = session.mount(girder_spec(session, api, [{"mountPath": "/top", "folderId": tree.ids["top"]}]))
        top = m.data / "top"
        assert (top / "nested" / "single.csv").read_bytes() == tree.content["single"]  # now cached
        proxy.set_online(False)
        started = time.monotonic()
        assert errno_of(os.listdir, top / "many") == errno.EIO  # never listed: needs Girder
        assert time.monotonic() - started < 10  # bounded retries, no hang
        assert errno_of(open, top / "big.bin", "rb") == errno.EIO  # not cached: needs Girder
        assert (top / "nested" / "single.csv").read_bytes() == tree.content["single"]  # cached: still served
        proxy.set_online(True)
        assert len(os.listdir(top / "many")) == 60
        assert sha((top / "big.bin").read_bytes()) == sha(tree.content["top/big.bin"])
    finally:
        proxy.close()


def test_metadata_ttl_zero_always_asks(session: Session, girder: Girder, tree: Tree) -> None:
    spec = girder_spec(session, girder.url, [{"mountPath": "/top", "folderId": tree.ids["top"]}], metadata_ttl=0)
    m = session.mount(spec)
    assert "late.txt" not in os.listdir(m.data / "top")
    late = girder.admin.createItem(tree.ids["top"], "late.txt")
    girder.admin.uploadFile(late["_id"], __import__("io").BytesIO(b"late"), "late.txt", 4)
    assert "late.txt" in os.listdir(m.data / "top")
    assert (m.data / "top" / "late.txt").read_bytes() == b"late"
