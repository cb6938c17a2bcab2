"""`make bench`: DESIGN.md's performance ratios, each measured side by side in one run.

Absolute times on shared machines are noisy; every figure here is a ratio of two things measured
back to back on the same files, medians of a few repetitions.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import render_spec
from tests.httpserver import start_server
from tests.mounting import is_mounted, mount, wait_for, wtfs

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".bench"
BIG = 1024**3
REPEAT = 3
EXAMPLES = Path("/usr/share/doc/libfuse3-dev/examples")
#: Modules of tests/bench/ whose SECTIONS (functions returning printed lines) run after these.
EXTRA_SECTIONS = ("cache", "transfer", "metadata", "publish", "wholetale_workspace", "smallfiles")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_time(fn: Callable[[], object], setup: Callable[[], object] | None = None) -> float:
    times = []
    for _ in range(REPEAT):
        if setup is not None:
            setup()
        times.append(timed(fn))
    return statistics.median(times)


def cat(path: Path) -> None:
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)


def find_stat(path: Path) -> None:
    subprocess.run(["find", str(path), "-printf", "%s %m\n"], stdout=subprocess.DEVNULL, check=True)


def passthrough_binary() -> Path:
    binary = WORK / "passthrough_ll"
    if binary.exists():
        return binary
    build = WORK / "passthrough-src"
    shutil.copytree(EXAMPLES, build, dirs_exist_ok=True)
    flags = subprocess.run(["pkg-config", "fuse3", "--cflags", "--libs"], capture_output=True, text=True, check=True)
    subprocess.run(
        ["gcc", "-O2", "-o", str(binary), str(build / "passthrough_ll.c"), *flags.stdout.split()], check=True
    )
    return binary


@contextlib.contextmanager
def passthrough(source: Path, mountpoint: Path) -> Iterator[Path]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([str(passthrough_binary()), "-f", "-o", f"source={source}", str(mountpoint)])
    try:
        wait_for(lambda: is_mounted(mountpoint), what="passthrough_ll to mount")
        yield mountpoint
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True)
        proc.wait(timeout=30)


@contextlib.contextmanager
def wtfs_mount(name: str, entries: list[dict[str, object]], cache: Path, *options: str) -> Iterator[Path]:
    spec = WORK / f"{name}.toml"
    spec.write_text(render_spec(entries, name=name, cache_dir=str(cache), state_dir=str(WORK / "state")))
    mountpoint = WORK / f"mnt-{name}"
    m = mount(spec, mountpoint, *options)
    try:
        yield m.data
    finally:
        result = wtfs("umount", str(mountpoint))
        assert result.returncode == 0, result.stderr


def ratio_line(label: str, ours: float, theirs: float, target: str, met: bool, note: str = "") -> str:
    """One figure: both times and the ratio the target is stated in (throughput or time)."""
    ratio = theirs / ours if "≥" in target else ours / theirs
    verdict = "met" if met else "MISSED"
    return f"{label:<58} wtfs {ours:8.3f}s  ref {theirs:8.3f}s  ratio {ratio:5.2f}  target {target:<8} {verdict} {note}"


def make_big_file() -> Path:
    path = WORK / "src" / "big.bin"
    if not path.exists() or path.stat().st_size != BIG:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            for _ in range(BIG // (64 * 1024**2)):
                f.write(os.urandom(64 * 1024**2))
    return path


def bench_cached_reads(big: Path) -> list[str]:
    """First and repeat read of a cached 1 GiB copy (landed over HTTP: a local file is served in
    place, never copied)."""
    http = start_server()
    try:
        return cached_read_rows(http.add("/big.bin", big.read_bytes()))
    finally:
        http.close()


def cached_read_rows(url: str) -> list[str]:
    cache = WORK / "cache-local"
    shutil.rmtree(cache, ignore_errors=True)
    lines = []
    entries = [{"mountPath": "/big.bin", "url": url, "size": BIG}]
    with wtfs_mount("cached", entries, cache) as data:
        cat(data / "big.bin")  # land it in the cache
    cached_copy = next(p for p in (cache / "objects").rglob("*") if p.is_file())
    cat(cached_copy)  # the cache file itself is in the page cache for both sides

    def wtfs_first() -> float:
        with wtfs_mount("cached", entries, cache) as data:
            return timed(lambda: cat(data / "big.bin"))

    def pass_first() -> float:
        with passthrough(cached_copy.parent, WORK / "mnt-pass") as mnt:
            return timed(lambda: cat(mnt / cached_copy.name))

    ours = statistics.median(wtfs_first() for _ in range(REPEAT))
    theirs = statistics.median(pass_first() for _ in range(REPEAT))
    lines.append(
        ratio_line(
            "first read, cached 1 GiB (throughput vs passthrough_ll)", ours, theirs, "≥ 0.8×", theirs / ours >= 0.8
        )
    )
    with wtfs_mount("cached", entries, cache) as data:
        cat(data / "big.bin")
        ours = median_time(lambda: cat(data / "big.bin"))
    theirs = median_time(lambda: cat(cached_copy))
    lines.append(
        ratio_line("repeat read (keep_cache) vs the cache file directly", ours, theirs, "≥ 0.5×", theirs / ours >= 0.5)
    )
    return lines


def bench_cold_http(big: Path) -> list[str]:
    port = 8790
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(big.parent)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/{big.name}"
    try:
        wait_for(lambda: subprocess.run(["curl", "-sfI", url], capture_output=True).returncode == 0, what="http.server")
        out = WORK / "curl.out"

        def curl() -> None:
            subprocess.run(["curl", "-sf", "-o", str(out), url], check=True)

        theirs = median_time(curl)
        out.unlink(missing_ok=True)
        times = []
        for run in range(REPEAT):
            cache = WORK / f"cache-http-{run}"
            shutil.rmtree(cache, ignore_errors=True)
            with wtfs_mount("http", [{"mountPath": "/big.bin", "url": url}], cache) as data:
                times.append(timed(lambda data=data: cat(data / "big.bin")))
            shutil.rmtree(cache, ignore_errors=True)
        ours = statistics.median(times)
    finally:
        server.terminate()
        server.wait()
    return [
        ratio_line("cold open+read 1 GiB over loopback HTTP vs curl -o", ours, theirs, "≤ 1.3×", ours / theirs <= 1.3)
    ]


def bench_find_stat() -> list[str]:
    tree = WORK / "tree10k"
    if not (tree / "d99" / "f99").exists():
        for d in range(100):
            (tree / f"d{d}").mkdir(parents=True, exist_ok=True)
            for f in range(100):
                (tree / f"d{d}" / f"f{f}").write_bytes(b"x" * f)
    cache = WORK / "cache-tree"

    def ours_once() -> float:
        with wtfs_mount("tree", [{"mountPath": "/tree", "url": str(tree)}], cache) as data:
            return timed(lambda: find_stat(data / "tree"))

    def theirs_once() -> float:
        with passthrough(tree, WORK / "mnt-pass") as mnt:
            return timed(lambda: find_stat(mnt))

    ours = statistics.median(ours_once() for _ in range(REPEAT))
    theirs = statistics.median(theirs_once() for _ in range(REPEAT))
    return [
        ratio_line("find+stat, 10,000 entries, cold mount, vs passthrough_ll", ours, theirs, "≤ 3×", ours / theirs <= 3)
    ]


def bench_ls_while_blocked() -> list[str]:
    http = start_server()
    gate = threading.Event()
    count = 200
    entries: list[dict[str, object]] = [
        {"mountPath": f"/slow/{i}", "url": http.add(f"/{i}", b"x", gate=gate)} for i in range(count)
    ]
    entries.append({"mountPath": "/other/here", "url": http.add("/here", b"here")})
    latencies = []
    try:
        with wtfs_mount("blocked", entries, WORK / "cache-blocked") as data, ThreadPoolExecutor(count) as pool:
            futures = [pool.submit((data / "slow" / str(i)).read_bytes) for i in range(count)]
            wait_for(lambda: sum(http.requests[f"/{i}"] for i in range(count)) == count, what="200 blocked opens")
            for _ in range(20):
                latencies.append(timed(lambda: (os.listdir(data / "other"), os.listdir(data / "slow"))))
            still_blocked = not any(f.done() for f in futures)
            gate.set()
            for f in futures:
                f.result(timeout=60)
    finally:
        gate.set()
        http.close()
    worst = max(latencies) * 1000
    ok = worst < 100 and still_blocked
    return [
        f"{'ls while 200 opens wait on transfers (20 tries)':<58} median {statistics.median(latencies) * 1000:6.1f} ms"
        f"  worst {worst:6.1f} ms  target < 100 ms  {'met' if ok else 'MISSED'}"
    ]


@contextlib.contextmanager
def workspace_mount(name: str, ws: Path) -> Iterator[Path]:
    """A wtfs session whose spec names `ws` as its workspace, with a fresh state dir; yields the mount root."""
    state = WORK / f"{name}-state"
    shutil.rmtree(state, ignore_errors=True)
    spec = WORK / f"{name}.toml"
    spec.write_text(
        render_spec([], name=name, workspace=str(ws), cache_dir=str(WORK / "cache-ws"), state_dir=str(state))
    )
    mountpoint = WORK / f"mnt-{name}"
    m = mount(spec, mountpoint)
    try:
        yield m.path
    finally:
        result = wtfs("umount", str(mountpoint))
        assert result.returncode == 0, result.stderr


def bench_versions() -> list[str]:
    """Snapshot of 10,000 small files by mkdir versions/NAME vs cp -al."""
    ws = WORK / "ws10k"
    if not (ws / "d99" / "f99").exists():
        for d in range(100):
            (ws / f"d{d}").mkdir(parents=True, exist_ok=True)
            for f in range(100):
                (ws / f"d{d}" / f"f{f}").write_bytes(b"y" * f)
    with workspace_mount("ws", ws) as root:
        names = iter(range(REPEAT))
        ours = median_time(lambda: os.mkdir(root / "versions" / f"v{next(names)}"))
    copies = WORK / "cp-al"

    def cp_al() -> None:
        shutil.rmtree(copies, ignore_errors=True)
        subprocess.run(["cp", "-al", str(ws), str(copies)], check=True)

    theirs = median_time(cp_al)
    shutil.rmtree(copies, ignore_errors=True)
    return [
        ratio_line("snapshot 10,000 small files (mkdir versions/V) vs cp -al", ours, theirs, "≤ 2×", ours / theirs <= 2)
    ]


#: Run in a fresh interpreter on each side, so the bench process's own state is never measured;
#: it times only its loop and prints the seconds. Arguments: directory, name prefix, count.
METADATA_LOOP = """
import os, sys, time
names = [os.path.join(sys.argv[1], f"{sys.argv[2]}{i:05d}") for i in range(int(sys.argv[3]))]
start = time.perf_counter()
for name in names:
    os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644))
for name in names:
    os.stat(name)
for name in names:
    os.unlink(name)
print(time.perf_counter() - start)
"""


def create_stat_unlink(directory: Path, prefix: str, count: int = 10_000) -> float:
    """Seconds to create `count` empty files in `directory`, stat each, unlink each."""
    argv = [sys.executable, "-c", METADATA_LOOP, str(directory), prefix, str(count)]
    return float(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def write_fsync(target: Path) -> float:
    """Seconds for dd to write 1 GiB of zeros to `target` and fsync it; `target` is deleted afterwards."""
    argv = ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={BIG // 1024**2}", "conv=fsync", "status=none"]
    seconds = timed(lambda: subprocess.run(argv, check=True))
    target.unlink()
    return seconds


def interleaved_medians(*measures: Callable[[], float]) -> list[float]:
    """Median of REPEAT rounds of each measurement, taken in turn each round so drift hits all
    alike, and in a rotated order each round: memory the previous side just freed is faster to
    reuse than memory the VM handed back to its host, so no side may always go first."""
    times: list[list[float]] = [[] for _ in measures]
    for round_number in range(REPEAT):
        for step in range(len(measures)):
            index = (step + round_number) % len(measures)
            times[index].append(measures[index]())
    return [statistics.median(column) for column in times]


def bench_workspace() -> list[str]:
    """workspace/ vs passthrough_ll mounted over the same directory at the same time: 10,000
    create+stat+unlink, then a 1 GiB sequential write with fsync (the direct-disk rate as context)."""
    ws = WORK / "ws-io"
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True)
    with workspace_mount("wsio", ws) as root, passthrough(ws, WORK / "mnt-pass") as mnt:
        ours_dir = root / "workspace"
        ours, theirs = interleaved_medians(
            lambda: create_stat_unlink(ours_dir, "w"), lambda: create_stat_unlink(mnt, "p")
        )
        lines = [
            ratio_line(
                "create+stat+unlink 10k files, workspace/ vs passthrough_ll", ours, theirs, "≤ 2×", ours / theirs <= 2
            )
        ]
        ours, theirs, direct = interleaved_medians(
            lambda: write_fsync(ours_dir / "w.out"),
            lambda: write_fsync(mnt / "p.out"),
            lambda: write_fsync(ws / "d.out"),
        )
    rates = f"(MiB/s: wtfs {1024 / ours:.0f}, passthrough_ll {1024 / theirs:.0f}, direct {1024 / direct:.0f})"
    lines.append(
        ratio_line(
            "1 GiB sequential write+fsync, workspace/ vs passthrough_ll",
            ours,
            theirs,
            "≥ 0.7×",
            theirs / ours >= 0.7,
            rates,
        )
    )
    return lines


def bench_wholetale() -> list[str]:
    """WholeTale mode against the real plugin: a cached 256 MiB item vs curl of the lock
    download, and find+stat over a 1,000-item session folder with a cold vs warm metadata cache."""
    import io
    import json

    from tests.girder.fixtures import KEY_ENV, running_girder

    root = WORK / "wt"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    lines = []
    with running_girder(root) as g:
        collection = g.admin.createCollection("bench", public=True)
        folder = g.admin.createFolder(collection["_id"], "big", parentType="collection", public=True)
        item = g.admin.createItem(folder["_id"], "big.bin")
        size = 256 * 1024**2
        g.admin.uploadFile(item["_id"], io.BytesIO(os.urandom(size)), "big.bin", size)
        many = g.admin.createFolder(collection["_id"], "many", parentType="collection", public=True)
        for i in range(1000):
            g.admin.createItem(many["_id"], f"f{i:04d}.txt")
        secrets = {"api_url": g.url, "api_key_env": KEY_ENV}
        entries = [{"mountPath": "/big.bin", "itemId": item["_id"]}, {"mountPath": "/many", "itemId": many["_id"]}]
        spec = WORK / "wt.toml"
        state = str(WORK / "state")
        spec.write_text(
            render_spec(entries, name="wt", cache_dir=str(WORK / "cache-wt"), state_dir=state, wholetale=secrets)
        )
        mountpoint = WORK / "mnt-wt"
        m = mount(spec, mountpoint)
        try:
            cat(m.data / "big.bin")  # the server caches it
            ours = median_time(lambda: cat(m.data / "big.bin"))
            session = json.loads((m.path / ".wtfs" / "status.json").read_text())["sessions"][0]["sessionId"]
            lock = g.alice.post("dm/lock", parameters={"sessionId": session, "itemId": item["_id"]})
            header = WORK / "token.header"
            header.write_text(f"Girder-Token: {g.alice.token}\n")  # a file, never the command line
            header.chmod(0o600)
            url = f"{g.url}/dm/lock/{lock['_id']}/download"
            theirs = median_time(
                lambda: subprocess.run(["curl", "-sf", "-H", f"@{header}", "-o", "/dev/null", url], check=True)
            )
            header.unlink()
            g.alice.delete(f"dm/lock/{lock['_id']}")
            lines.append(
                ratio_line(
                    "WholeTale: open+read cached 256 MiB item vs curl download",
                    ours,
                    theirs,
                    "≤ 1.2×",
                    ours / theirs <= 1.2,
                )
            )
            cold = timed(lambda: find_stat(m.data / "many"))
            warm = median_time(lambda: find_stat(m.data / "many"))
            lines.append(
                f"{'WholeTale: find+stat 1,000-item folder, cold vs warm cache':<58} cold {cold:8.3f}s"
                f"  warm {warm:8.3f}s  ratio {cold / warm:5.1f}  (reported, no target)"
            )
        finally:
            result = wtfs("umount", str(mountpoint))
            assert result.returncode == 0, result.stderr
    return lines


def main() -> int:
    WORK.mkdir(exist_ok=True)
    shutil.rmtree(WORK / "state", ignore_errors=True)
    print(
        f"wtfs bench on {os.cpu_count()} cores; medians of {REPEAT} runs; ratios are wtfs vs the reference", flush=True
    )
    sections = [
        lambda: bench_cached_reads(make_big_file()),
        lambda: bench_cold_http(make_big_file()),
        bench_find_stat,
        bench_ls_while_blocked,
        bench_versions,
        bench_wholetale,
        bench_workspace,
    ]
    for module in EXTRA_SECTIONS:
        sections += importlib.import_module(f"tests.bench.{module}").SECTIONS
    only = set(sys.argv[1:])
    sections = [s for i, s in enumerate(sections) if not only or str(i) in only]
    for section in sections:
        for line in section():
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
