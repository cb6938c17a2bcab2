"""``-o prefetch_dir=N``: a data/ directory's first listing lands its files, N at a time, none opened."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Session
from tests.httpserver import Server
from tests.mounting import wait_for

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
