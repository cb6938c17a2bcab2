"""Bench rows: transfers (run by tests/bench/run.py after its own sections).

- A local 1 GiB file served in place: its first read through a mount vs `cat` of the source,
  the source's pages dropped before each side (posix_fadvise DONTNEED), so both read the disk.
- Cold open+read of 1 GiB over HTTP vs `curl -o FILE` + fsync, on a fast origin (`rclone serve
  http`, Debian's rclone, installed here if missing; else the tests' server) and on an origin
  that limits each connection's rate (tests/httpserver.py), with `rclone mount
  --vfs-cache-mode full` beside them on the fast origin when rclone is there.
- The same 1 GiB with 4 parallel ranged streams (`-o streams=4`) vs single-stream curl on the
  rate-limited origin.
- Time to first byte: `head -c 1K` of the cold 1 GiB through a fresh mount with `-o stream` vs
  `curl -r 0-1023`, both on the tests' server, and whether head returned before the copy landed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.bench.run import (
    BIG,
    WORK,
    cat,
    interleaved_medians,
    is_mounted,
    make_big_file,
    ratio_line,
    timed,
    wait_for,
    wtfs_mount,
)
from tests.httpserver import start_server

#: The rate-limited origin's bytes per second per connection: low enough that four connections
#: (128 MiB/s) stay within what the tests' Python server and this disk do on 2 cores, so the row
#: measures streams against a per-connection limit (at 64 MiB/s it measured the origin's CPU).
RATE = 32 * 1024 * 1024
RCLONE_PORT = 8791


def drop_pages(path: Path) -> None:
    """Evict ``path``'s pages from the page cache (only that file's: other benches keep theirs)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def bench_local_in_place() -> list[str]:
    big = make_big_file()
    cache = WORK / "cache-inplace"

    def ours() -> float:
        shutil.rmtree(cache, ignore_errors=True)
        with wtfs_mount("inplace", [{"mountPath": "/big.bin", "url": str(big)}], cache) as data:
            drop_pages(big)
            return timed(lambda: cat(data / "big.bin"))

    def theirs() -> float:
        drop_pages(big)
        return timed(lambda: cat(big))

    wtfs_time, direct = interleaved_medians(ours, theirs)
    copies = [p for p in (cache / "objects").rglob("*") if p.is_file()]
    note = f"(MiB/s: wtfs {1024 / wtfs_time:.0f}, source {1024 / direct:.0f}; copies in the cache: {len(copies)})"
    return [
        ratio_line(
            "local 1 GiB first read (in place) vs the source directly",
            wtfs_time,
            direct,
            "≥ 0.8×",
            direct / wtfs_time >= 0.8,
            note,
        )
    ]


def rclone() -> str | None:
    """Debian's rclone, installed for the bench if it is missing; None if it cannot be."""
    if shutil.which("rclone") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "rclone"], capture_output=True, check=False)
    return shutil.which("rclone")


@contextlib.contextmanager
def rclone_origin(directory: Path) -> Iterator[str]:
    """`rclone serve http` of ``directory`` on loopback; yields its base URL."""
    proc = subprocess.Popen(
        ["rclone", "serve", "http", str(directory), "--addr", f"127.0.0.1:{RCLONE_PORT}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{RCLONE_PORT}"
    try:
        wait_for(
            lambda: subprocess.run(["curl", "-sfI", base + "/"], capture_output=True).returncode == 0, what="rclone"
        )
        yield base
    finally:
        proc.terminate()
        proc.wait()


def curl_fsync(url: str) -> float:
    """Seconds for curl to write ``url`` to a file, and fsync it."""
    out = WORK / "curl-transfer.out"

    def fetch() -> None:
        subprocess.run(["curl", "-sf", "-o", str(out), url], check=True)
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    seconds = timed(fetch)
    out.unlink()
    return seconds


def wtfs_cold(url: str, *options: str) -> float:
    """Seconds for a cold open+read of ``url`` through a fresh mount with an empty cache."""
    cache = WORK / "cache-transfer"
    shutil.rmtree(cache, ignore_errors=True)
    with wtfs_mount("transfer", [{"mountPath": "/big.bin", "url": url, "size": BIG}], cache, *options) as data:
        seconds = timed(lambda: cat(data / "big.bin"))
    shutil.rmtree(cache, ignore_errors=True)
    return seconds


def rclone_mount_cold(url: str) -> float:
    """Seconds for a cold read of ``url`` through `rclone mount --vfs-cache-mode full`."""
    base, name = url.rsplit("/", 1)
    mountpoint, cache = WORK / "mnt-rclone", WORK / "cache-rclone"
    shutil.rmtree(cache, ignore_errors=True)
    mountpoint.mkdir(exist_ok=True)
    argv = ["rclone", "mount", f":http,url='{base}':", str(mountpoint), "--vfs-cache-mode", "full"]
    proc = subprocess.Popen([*argv, "--cache-dir", str(cache)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: is_mounted(mountpoint), what="rclone mount")
        return timed(lambda: cat(mountpoint / name))
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
        proc.wait(timeout=60)
        shutil.rmtree(cache, ignore_errors=True)


def cold_rows(label: str, url: str, with_rclone: bool) -> list[str]:
    measures: list[Callable[[], float]] = [lambda: wtfs_cold(url), lambda: curl_fsync(url)]
    if with_rclone:
        measures.append(lambda: rclone_mount_cold(url))
    times = interleaved_medians(*measures)
    ours, theirs = times[0], times[1]
    note = f"(rclone mount {times[2]:.3f}s: wtfs {'ahead' if ours < times[2] else 'behind'})" if with_rclone else ""
    return [
        ratio_line(
            f"cold open+read 1 GiB, {label}, vs curl -o + fsync", ours, theirs, "≤ 1.05×", ours / theirs <= 1.05, note
        )
    ]


def disk_floor() -> float:
    """Seconds to write 1 GiB to the cache's disk and fsync it: no cold landing can beat it."""
    target = WORK / "dd-floor.out"
    argv = ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={BIG // 1024**2}", "conv=fsync", "status=none"]
    seconds = timed(lambda: subprocess.run(argv, check=True))
    target.unlink()
    return seconds


def bench_cold_transfers() -> list[str]:
    big = make_big_file()
    lines = []
    have_rclone = rclone() is not None
    if have_rclone:
        with rclone_origin(big.parent) as base:
            lines += cold_rows("fast origin (rclone serve http)", f"{base}/{big.name}", True)
    else:
        lines.append("rclone: not installable here; fast origin is the tests' server, no rclone mount column")
        http = start_server()
        try:
            lines += cold_rows("fast origin (tests' server)", http.add("/big.bin", big.read_bytes()), False)
        finally:
            http.close()
    http = start_server()
    try:
        url = http.add("/big.bin", big.read_bytes(), rate=RATE)
        label = f"origin at {RATE // 1024**2} MiB/s per connection"
        lines += cold_rows(label, url, False)  # rclone's http backend needs a directory listing
        ours, theirs = interleaved_medians(lambda: wtfs_cold(url, "streams=4"), lambda: curl_fsync(url))
    finally:
        http.close()
    floor = disk_floor()
    note = f"(the disk's floor here: dd 1 GiB + fsync {floor:.3f}s, {theirs / floor:.2f}× curl's time)"
    lines.append(ratio_line(f"4 ranged streams, {label}, vs curl", ours, theirs, "≥ 2.5×", theirs / ours >= 2.5, note))
    return lines


def head_streamed(url: str, early: list[bool]) -> float:
    """Seconds for `head -c 1024` of a cold ``url`` through a fresh mount with ``-o stream``;
    ``early`` gets whether the transfer was still running when head returned."""
    cache = WORK / "cache-stream"
    shutil.rmtree(cache, ignore_errors=True)
    with wtfs_mount("stream", [{"mountPath": "/big.bin", "url": url, "size": BIG}], cache, "stream") as data:
        head = ["head", "-c", "1024", str(data / "big.bin")]
        seconds = timed(lambda: subprocess.run(head, stdout=subprocess.DEVNULL, check=True))
        early.append(os.getxattr(data / "big.bin", "user.wtfs.state").startswith(b"transferring"))
    shutil.rmtree(cache, ignore_errors=True)
    return seconds


def bench_stream_first_byte() -> list[str]:
    big = make_big_file()
    http = start_server()
    early: list[bool] = []
    try:
        url = http.add("/big.bin", big.read_bytes())
        curl = ["curl", "-sf", "-r", "0-1023", "-o", os.devnull, url]
        ours, theirs = interleaved_medians(
            lambda: head_streamed(url, early), lambda: timed(lambda: subprocess.run(curl, check=True))
        )
    finally:
        http.close()
    note = f"(head returned before the copy landed in {sum(early)} of {len(early)} runs)"
    return [
        ratio_line(
            "head -c 1K of a cold 1 GiB, -o stream, vs curl -r 0-1023", ours, theirs, "≤ 2×", ours / theirs <= 2, note
        )
    ]


SECTIONS: list[Callable[[], list[str]]] = [bench_local_in_place, bench_cold_transfers, bench_stream_first_byte]
