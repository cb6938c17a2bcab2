"""data/ serves nothing outside what it was given, though the daemon runs as root.

Local-directory entries show symlinks as symlinks and never follow them (nor a directory swapped
for one after listing); a Girder item's local ``meta.phys_path`` is served only from beneath the
spec's ``local_roots``, checked at every open, even when a copy is already cached.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import uuid
from pathlib import Path

import pytest

from tests.conftest import Session
from tests.girder.fixtures import KEY_ENV, Girder
from tests.mounting import Mount

pytestmark = pytest.mark.fuse

SECRET = b"root-only secret " + os.urandom(16)


def errno_of(fn: object, *args: object) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.errno or 0


def served_files(top: Path) -> dict[Path, bytes]:
    """Every regular file the daemon serves beneath ``top`` (os.walk follows no symlink)."""
    found = {}
    for dirpath, _, names in os.walk(top):
        for name in names:
            path = Path(dirpath) / name
            if stat.S_ISREG(os.lstat(path).st_mode):
                found[path] = path.read_bytes()
    return found


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the entries, holding what must never be served through data/."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_bytes(SECRET)
    (path / "data.txt").write_bytes(SECRET)
    return path


def test_symlinks_in_a_local_entry_are_shown_as_links(session: Session, tmp_path: Path, outside: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "plain.txt").write_bytes(b"plain")
    links = {
        "to-secret": str(outside / "secret.txt"),
        "rel-secret": "../outside/secret.txt",
        "to-dir": str(outside),
        "shadow": "/etc/shadow",
        "inside": "plain.txt",
        "dangling": "nowhere",
    }
    for name, target in links.items():
        os.symlink(target, src / name)
    tree = session.mount(session.spec([{"mountPath": "/tree", "url": str(src)}])).data / "tree"
    assert sorted(os.listdir(tree)) == sorted([*links, "plain.txt"])
    for name, target in links.items():
        st = os.lstat(tree / name)
        assert stat.S_ISLNK(st.st_mode), name
        assert os.readlink(tree / name) == target and st.st_size == len(target)
    # a relative link resolves inside the mount, where ../outside does not exist
    assert errno_of(open, tree / "rel-secret", "rb") == errno.ENOENT
    assert (tree / "inside").read_bytes() == b"plain"  # the kernel follows it through the mount
    served = served_files(tree.parent)
    assert served == {tree / "plain.txt": b"plain"}


def test_directory_swapped_for_a_symlink_after_listing(session: Session, tmp_path: Path, outside: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "data.txt").write_bytes(b"inside")
    (src / "later").mkdir()
    (src / "later" / "secret.txt").write_bytes(b"inside too")
    spec = session.spec([{"mountPath": "/tree", "url": str(src)}], metadata_ttl="1h")
    tree = session.mount(spec).data / "tree"
    assert sorted(os.listdir(tree)) == ["later", "sub"]
    assert os.listdir(tree / "sub") == ["data.txt"]  # listed, not read
    for name in ("sub", "later"):
        shutil.rmtree(src / name)
        os.symlink(outside, src / name)
    # the listings are kept for an hour, so data/ still shows directories; the daemon's walk
    # to them now meets a symlink and stops
    assert stat.S_ISDIR(os.lstat(tree / "sub").st_mode)
    assert errno_of(open, tree / "sub" / "data.txt", "rb") == errno.ELOOP
    assert errno_of(os.listdir, tree / "later") == errno.ELOOP
    assert errno_of(open, tree / "later" / "secret.txt", "rb") == errno.ELOOP


def test_file_swapped_for_a_symlink_after_listing(session: Session, tmp_path: Path, outside: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.txt").write_bytes(b"inside")
    tree = session.mount(session.spec([{"mountPath": "/tree", "url": str(src)}], metadata_ttl="1h")).data / "tree"
    assert os.listdir(tree) == ["data.txt"]
    (src / "data.txt").unlink()
    os.symlink(outside / "data.txt", src / "data.txt")
    assert errno_of(open, tree / "data.txt", "rb") == errno.ELOOP


def _phys_items(girder: Girder, allowed: Path, outside: Path) -> tuple[str, dict[str, str]]:
    """A public folder of phys_path items, by name → id: one beneath ``allowed``, the others
    naming (or resolving to) a file outside it."""
    gc = girder.admin
    collection = gc.createCollection(f"c-{uuid.uuid4().hex[:8]}", public=True)
    folder = gc.createFolder(collection["_id"], "phys", parentType="collection", public=True)
    os.symlink(outside / "secret.txt", allowed / "link.bin")
    paths = {
        "in.bin": str(allowed / "in.bin"),
        "out.bin": str(outside / "secret.txt"),
        "file-url.bin": f"file://{outside / 'secret.txt'}",
        "via-link.bin": str(allowed / "link.bin"),
        "dotdot.bin": f"{allowed}/../outside/secret.txt",
        "relative.bin": "outside/secret.txt",
    }
    ids = {}
    for name, path in paths.items():
        item = gc.createItem(folder["_id"], name)
        gc.addMetadataToItem(item["_id"], {"phys_path": path, "size": len(SECRET)})
        ids[name] = item["_id"]
    return folder["_id"], ids


def _girder_mount(session: Session, girder: Girder, folder: str, name: str, **top: object) -> Mount:
    state = session.root / f"state-{name}"
    spec = session.spec(
        [{"mountPath": "/phys", "folderId": folder}],
        name=name,
        state_dir=str(state),
        girder={"api_url": girder.url, "api_key_env": KEY_ENV},
        **top,
    )
    m = session.mount(spec, where=f"mnt-{name}")
    m.log = state / "wtfs.log"
    return m


def _allowed_dir(tmp_path: Path) -> Path:
    """The one directory under local_roots, holding the one servable phys_path."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "in.bin").write_bytes(SECRET[::-1])
    return allowed


def _refusals(m: Mount, item_id: str) -> list[str]:
    lines = m.log.read_text().splitlines()
    return [line for line in lines if item_id in line and "outside local_roots" in line]


def test_phys_path_is_served_only_beneath_local_roots(
    session: Session, girder: Girder, tmp_path: Path, outside: Path
) -> None:
    allowed = _allowed_dir(tmp_path)
    folder, ids = _phys_items(girder, allowed, outside)
    m = _girder_mount(session, girder, folder, "rooted", local_roots=["allowed"])  # relative to the spec
    phys = m.data / "phys"
    assert sorted(os.listdir(phys)) == sorted(ids)
    assert (phys / "in.bin").read_bytes() == SECRET[::-1]
    for name, item_id in ids.items():
        if name != "in.bin":
            assert (phys / name).stat().st_size == len(SECRET)  # listed as usual
            assert errno_of(open, phys / name, "rb") == errno.EACCES, name
            assert len(_refusals(m, item_id)) == 1, name
    assert SECRET not in m.log.read_bytes()


def test_cached_phys_path_copy_is_no_way_around_local_roots(
    session: Session, girder: Girder, tmp_path: Path, outside: Path
) -> None:
    allowed = _allowed_dir(tmp_path)
    folder, ids = _phys_items(girder, allowed, outside)
    rooted = _girder_mount(session, girder, folder, "rooted", local_roots=[str(allowed)])
    assert (rooted.data / "phys" / "in.bin").read_bytes() == SECRET[::-1]  # now in the host cache
    bare = _girder_mount(session, girder, folder, "bare")  # same host cache, no local_roots
    assert errno_of(open, bare.data / "phys" / "in.bin", "rb") == errno.EACCES
    assert len(_refusals(bare, ids["in.bin"])) == 1
