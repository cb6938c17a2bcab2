"""Bench rows: the host cache at scale (run by tests/bench/run.py after its own sections).

Cold-open latency of a small HTTP file through a real mount with 10, 1,000, 10,000 and
100,000 objects already cached. The cached objects are written straight into the cache (a
1-byte copy each, its record ACTIVE with its bytes on disk) rather than by 100,000 transfers;
every daemon's start-up reconciles them with the disk as it would any cache. The opens are real:
lookup, open (lock, claim, transfer, commit, GC check), read, close.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from tests.bench.run import WORK, ratio_line, wtfs_mount
from tests.httpserver import start_server
from wtfs.dm.cache import HostCache
from wtfs.dm.records import CacheRecords

LEVELS = (10, 1_000, 10_000, 100_000)
COLD_OPENS = 30
SMALL = 4096


def populate(cache: HostCache, upto: int, have: int) -> None:
    """Add cached objects ``have``..``upto`` to the cache: a file under objects/ and its record."""
    CacheRecords(cache.db_path, 30.0).close()  # the schema
    now = time.time()
    rows = []
    for i in range(have, upto):
        object_id = hashlib.sha256(f"bench-cached-{i}".encode()).hexdigest()
        path = cache.path_for(object_id)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, b"x")
        blocks = os.fstat(fd).st_blocks * 512
        os.close(fd)
        rows.append((object_id, f"http://bench.invalid/{i}", 1, None, "ACTIVE", now - upto + i, now, None, blocks))
    with sqlite3.connect(cache.db_path) as db:
        db.executemany("INSERT INTO objects VALUES (?,?,?,?,?,?,?,?,?)", rows)


def cold_opens(data: Path, names: list[str]) -> list[float]:
    """Each file opened and read once, the first open of it anywhere: seconds per open+read."""
    times = []
    for name in names:
        start = time.perf_counter()
        with open(data / name, "rb") as f:
            assert len(f.read()) == SMALL
        times.append(time.perf_counter() - start)
    return times


def bench_cold_open_at_scale() -> list[str]:
    cache_dir = WORK / "cache-scale"
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache = HostCache(cache_dir, group=None)
    cache.prepare()
    http = start_server()
    medians: dict[int, float] = {}
    lines = []
    have = 0
    try:
        for level in LEVELS:
            populate(cache, level, have)
            have = level
            names = [f"c{level}-{i}" for i in range(COLD_OPENS)]
            entries: list[dict[str, object]] = [
                {"mountPath": f"/{n}", "url": http.add(f"/{n}", os.urandom(SMALL))} for n in names
            ]
            with wtfs_mount("scale", entries, cache_dir) as data:
                os.listdir(data)  # the catalog is built: only the opens are timed
                medians[level] = statistics.median(cold_opens(data, names))
            have += COLD_OPENS  # the copies landed just now
            lines.append(
                f"{f'cold open+read 4 KiB over HTTP, {level:,} objects cached':<58}"
                f" median {medians[level] * 1000:7.2f} ms of {COLD_OPENS}"
            )
    finally:
        http.close()
        shutil.rmtree(cache_dir, ignore_errors=True)
    top, base = medians[LEVELS[-1]], medians[LEVELS[0]]
    lines.append(
        ratio_line(f"cold open, {LEVELS[-1]:,} vs {LEVELS[0]:,} objects cached", top, base, "≤ 1.5×", top / base <= 1.5)
    )
    return lines


SECTIONS: list[Callable[[], list[str]]] = [bench_cold_open_at_scale]
