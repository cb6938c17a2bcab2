"""Bench rows: many small files (run by tests/bench/run.py after its own sections).

A tree of 4 KiB files served on loopback by tests/httpserver.py. Cold `cat` of every file
through a fresh mount with an empty cache (one `xargs cat`) vs one `curl` process fetching the
same URLs in turn from a `--config` file, which reuses one keep-alive connection. Rows: 5,000
files (issue 17, target ≤ 1.5×), the same with `-o prefetch_dir=8` (a listing first, then the
`cat`, timed together), and 20,000 files (issue 14, target ≤ 3×). Each wtfs side runs once (a
cold run needs a fresh mount and cache, and one is minutes on 20,000 files); curl's is a median.
A last row serves 1,000 files at 5 ms a request, as a distant origin would: there the read-ahead
across files (``readahead_files``, on by default) is what counts, against the same curl loop.
``SMALLFILES_COUNT=N`` runs only the first kind of row, with N files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.bench.run import WORK, median_time, ratio_line, timed, wtfs_mount
from tests.httpserver import Server, start_server

SIZE = 4096
PREFETCH = 8


def serve_tree(http: Server, count: int, delay: float = 0.0) -> list[str]:
    """Register ``count`` 4 KiB files (distinct bodies), each answered after ``delay`` seconds,
    and return their URLs."""
    prefix = f"/s{count}" + (f"d{delay:g}" if delay else "")
    body = [i.to_bytes(4, "big") * (SIZE // 4) for i in range(count)]
    return [http.add(f"{prefix}/f{i:05d}", body[i], delay=delay) for i in range(count)]


def curl_loop(urls: list[str]) -> float:
    """Seconds for one curl process to fetch every URL in turn (one connection, reused)."""
    config = WORK / "smallfiles-curl.cfg"
    config.write_text("".join(f'url = "{u}"\noutput = "/dev/null"\n' for u in urls))
    return timed(lambda: subprocess.run(["curl", "-sf", "--config", str(config)], check=True))


def cat_all(directory: Path, names: list[str]) -> None:
    """`cat` every file of ``directory`` (xargs batches the names), output discarded."""
    listing = b"\0".join(os.fsencode(directory / n) for n in names)
    subprocess.run(["xargs", "-0", "cat"], input=listing, stdout=subprocess.DEVNULL, check=True)


def wtfs_cold(urls: list[str], *options: str, list_first: bool = False) -> float:
    """Seconds for a cold `cat` of every file through a fresh mount with an empty cache."""
    cache = WORK / "cache-smallfiles"
    shutil.rmtree(cache, ignore_errors=True)
    names = [u.rsplit("/", 1)[1] for u in urls]
    entries: list[dict[str, object]] = [
        {"mountPath": f"/tree/{n}", "url": u, "size": SIZE} for n, u in zip(names, urls, strict=True)
    ]
    with wtfs_mount("smallfiles", entries, cache, *options) as data:
        tree = data / "tree"

        def run() -> None:
            if list_first:
                os.listdir(tree)
            cat_all(tree, names)

        seconds = timed(run)
    shutil.rmtree(cache, ignore_errors=True)
    return seconds


def row(label: str, urls: list[str], target: float, *options: str, list_first: bool = False) -> str:
    ours = wtfs_cold(urls, *options, list_first=list_first)
    theirs = median_time(lambda: curl_loop(urls))
    note = f"({1000 * ours / len(urls):.2f} ms/file vs curl {1000 * theirs / len(urls):.2f}; curl --config)"
    return ratio_line(label, ours, theirs, f"≤ {target}×", ours / theirs <= target, note)


#: ``SMALLFILES_COUNT=N``: only the issue-14 row, with N files (a quicker A/B while working on it).
COUNT = int(os.environ.get("SMALLFILES_COUNT", "0"))


def bench_small_files() -> list[str]:
    http = start_server()
    try:
        if COUNT:
            return [row(f"cold cat {COUNT:,} × 4 KiB over HTTP vs one-connection curl", serve_tree(http, COUNT), 3)]
        urls = serve_tree(http, 5000)
        lines = [row("cold cat 5,000 × 4 KiB over HTTP vs one-connection curl", urls, 1.5)]
        lines.append(
            row(
                f"same, ls first, -o prefetch_dir={PREFETCH}",
                urls,
                1.5,
                f"prefetch_dir={PREFETCH}",
                list_first=True,
            )
        )
        lines.append(row("cold cat 20,000 × 4 KiB over HTTP vs one-connection curl", serve_tree(http, 20000), 3))
        distant = serve_tree(http, 1000, delay=0.005)
        lines.append(row("cold cat 1,000 × 4 KiB, 5 ms a request (no issue target)", distant, 1.0))
    finally:
        http.close()
    return lines


SECTIONS: list[Callable[[], list[str]]] = [bench_small_files]
