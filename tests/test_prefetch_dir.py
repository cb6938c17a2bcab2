"""``-o prefetch_dir=N``: a data/ directory's first listing lands its files, N at a time, none opened."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Session
from tests.httpserver import Server
from tests.mounting import wait_for
from wtfs.catalog import CatalogFile, CatalogNode
from wtfs.catalog.nodes import StaticDir
from wtfs.objects import ObjectRef
from wtfs.views.readahead import FileReadAhead

pytestmark = pytest.mark.fuse

COUNT = 12
LIMIT = 4


def tree(http: Server, delay: float) -> list[dict[str, object]]:
    """COUNT small files under /dir, each answered in at least ``delay`` seconds (so the
    transfers overlap where they may), and one file elsewhere that is never listed."""
    entries: list[dict[str, object]] = [
        {"mountPath": f"/dir/f{i:02d}", "url": http.add(f"/f{i:02d}", b"%02d" % i * 1000, delay=delay), "size": 2000}
        for i in range(COUNT)
    ]
    entries.append({"mountPath": "/other/g", "url": http.add("/g", b"g"), "size": 1})
    return entries


def state(path: Path) -> str:
    return os.getxattr(path, "user.wtfs.state").decode()


def gets(http: Server) -> int:
    return sum(n for key, n in http.requests.items() if not key.startswith("HEAD "))


def test_listing_lands_files_bounded(session: Session, http: Server) -> None:
    m = session.mount(session.spec(tree(http, delay=0.2)), f"prefetch_dir={LIMIT}")
    names = os.listdir(m.data / "dir")
    assert len(names) == COUNT
    wait_for(lambda: all(state(m.data / "dir" / n) == "cached" for n in names), timeout=60, what="files cached")
    assert http.peak_in_flight <= LIMIT, f"{http.peak_in_flight} transfers at once, limit {LIMIT}"
    assert http.peak_in_flight > 1, "the prefetch ran one file at a time"
    assert gets(http) == COUNT  # one GET each; the unlisted directory's file was not fetched
    assert state(m.data / "other" / "g") == "remote"
    os.listdir(m.data / "dir")  # a second listing starts nothing
    assert (m.data / "dir" / "f07").read_bytes() == b"07" * 1000  # served from the cache
    assert gets(http) == COUNT


def test_off_by_default(session: Session, http: Server) -> None:
    m = session.mount(session.spec(tree(http, delay=0)))
    names = os.listdir(m.data / "dir")
    assert [state(m.data / "dir" / n) for n in names] == ["remote"] * COUNT
    assert gets(http) == 0


def test_sequential_opens_read_ahead(session: Session, http: Server) -> None:
    """``readahead_files`` (8 by default): opening f00 then f01 lands the files after them
    without their being opened; a file opened out of order starts nothing more."""
    m = session.mount(session.spec(tree(http, delay=0), name="ahead"), "readahead_files=4")
    folder = m.data / "dir"
    assert (folder / "f00").read_bytes() == b"00" * 1000
    assert (folder / "f01").read_bytes() == b"01" * 1000
    ahead = ["f02", "f03", "f04", "f05"]
    wait_for(lambda: all(state(folder / n) == "cached" for n in ahead), timeout=30, what="read-ahead")
    assert gets(http) == 6  # two opened, four landed ahead
    assert [state(folder / n) for n in ("f06", "f07")] == ["remote", "remote"]
    assert (folder / "f09").read_bytes() == b"09" * 1000  # a jump: no read-ahead
    assert (folder / "f03").read_bytes() == b"03" * 1000  # from the cache
    assert gets(http) == 7
    assert [state(folder / n) for n in ("f06", "f07", "f10", "f11")] == ["remote"] * 4


def test_read_ahead_off(session: Session, http: Server) -> None:
    m = session.mount(session.spec(tree(http, delay=0), name="noahead"), "readahead_files=0")
    for name in ("f00", "f01", "f02"):
        (m.data / "dir" / name).read_bytes()
    assert gets(http) == 3
    assert state(m.data / "dir" / "f03") == "remote"


def _listing(names: list[str]) -> dict[str, CatalogNode]:
    """A directory's listing: files, and a subdirectory wherever a name ends with '/'."""
    children: dict[str, CatalogNode] = {}
    for name in names:
        if name.endswith("/"):
            children[name[:-1]] = StaticDir(name[:-1])
        else:
            children[name] = CatalogFile(name, ObjectRef.for_source(f"http://o/{name}", 1, None), 0)
    return children


def _handed(window: int, listing: list[str], opens: list[str]) -> list[list[str]]:
    """What read-ahead hands to be landed after each open (in order), run without a mount."""
    handed: list[list[str]] = []
    ahead = FileReadAhead(window, lambda files: handed.append([f.name for f in files]))
    ahead.listed(_listing(listing))
    for name in opens:
        ahead.opened(name)
    return handed


def test_read_ahead_window_moves_on_halfway_and_starts_over_on_a_jump() -> None:
    names = [f"f{i:02d}" for i in range(20)]
    # the first hand is the window; then it is topped up whenever less than half of it is ahead
    topped_up = [["f06", "f07"], ["f08", "f09"], ["f10", "f11"]]
    assert _handed(4, names, names[:8]) == [["f02", "f03", "f04", "f05"], *topped_up]
    assert _handed(1, names, names[:5]) == [["f02"], ["f03"], ["f04"], ["f05"]]  # every file, none skipped
    jump = ["f00", "f01", "f09", "f10"]
    assert _handed(4, names, jump) == [["f02", "f03", "f04", "f05"], ["f11", "f12", "f13", "f14"]]
    second_pass = names[:4] + names[:3]
    assert _handed(2, names, second_pass) == [["f02", "f03"], ["f04"], ["f05"], ["f02", "f03"], ["f04"]]
    assert _handed(4, names, names[16:]) == [["f18", "f19"]]  # the window stops at the last file


def test_read_ahead_counts_files_only() -> None:
    """Subdirectories between files (as `grep -r` meets them) do not break a run of opens."""
    listing = ["a", "a.d/", "b", "b.d/", "c", "d", "e"]
    assert _handed(2, listing, ["a", "b", "c"]) == [["c", "d"], ["e"]]
