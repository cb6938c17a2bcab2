"""Bench rows: wholetale_workspace (run by tests/bench/run.py after its own sections).

A tale's workspace/ in WholeTale mode against girder-client on the same server (the fixture's
Girder 5 with the WholeTale plugin, one process), taken in turn: 256 MiB in one file, then 1,000
small files. wtfs: mount, copy the data into workspace/, wait until status.json says every upload
is done (each one checked against its sha256 by landing the server's copy in the host cache),
unmount, mount again and read everything back. girder-client: ``upload`` into a new folder, then
``download`` it into a new directory. Both sides are timed whole, start-up included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.bench.run import WORK, interleaved_medians, ratio_line, timed
from tests.conftest import render_spec
from tests.mounting import mount, wait_for, wtfs

BIG = 256 * 1024**2
SMALL_FILES = 1_000
GIRDER_CLIENT = Path(sys.executable).parent / "girder-client"


def _sources() -> tuple[Path, Path]:
    """A 256 MiB file and a directory of 1,000 files of 1 to 4 KiB, made once."""
    big = WORK / "wtws-src" / "big" / "big.bin"
    if not big.exists() or big.stat().st_size != BIG:
        big.parent.mkdir(parents=True, exist_ok=True)
        with open(big, "wb") as out:
            for _ in range(BIG // (64 * 1024**2)):
                out.write(os.urandom(64 * 1024**2))
    small = WORK / "wtws-src" / "small"
    if not (small / f"f{SMALL_FILES - 1:04d}.txt").exists():
        small.mkdir(parents=True, exist_ok=True)
        for i in range(SMALL_FILES):
            (small / f"f{i:04d}.txt").write_bytes(os.urandom(1024 + (i * 37) % 3072))
    return big.parent, small


def _read_all(directory: Path) -> int:
    total = 0
    for path in sorted(directory.iterdir()):
        total += len(path.read_bytes())
    return total


def _wtfs_round(g: Any, tale: str, source: Path) -> float:
    """Seconds to write ``source`` into workspace/<dir>, have it uploaded, remount, read it."""
    from tests.girder.fixtures import KEY_ENV

    spec = WORK / "wtws.toml"
    secrets = {"api_url": g.url, "api_key_env": KEY_ENV, "tale_id": tale}
    cache, state = WORK / "wtws-cache", WORK / "wtws-state"
    spec.write_text(render_spec([], name="wtws", cache_dir=str(cache), state_dir=str(state), wholetale=secrets))
    mountpoint = WORK / "mnt-wtws"

    def once() -> None:
        m = mount(spec, mountpoint)
        try:
            target = m.path / "workspace" / source.name
            if not target.exists():
                os.mkdir(target)
            for path in sorted(source.iterdir()):
                shutil.copyfile(path, target / path.name)
            status = m.path / ".wtfs" / "status.json"
            wait_for(lambda: json.loads(status.read_text())["workspace"]["pending_uploads"] == 0, 3600, 0.05)
        finally:
            assert wtfs("umount", str(mountpoint)).returncode == 0
        m = mount(spec, mountpoint)
        try:
            assert _read_all(m.path / "workspace" / source.name) == _size(source)
        finally:
            assert wtfs("umount", str(mountpoint)).returncode == 0

    return timed(once)


def _girder_client_round(g: Any, source: Path) -> float:
    """Seconds of ``girder-client upload`` into a new folder, then ``download`` of it."""
    from tests.girder.fixtures import KEY_ENV

    me = g.alice.get("user/me")["_id"]
    folder = g.alice.createFolder(me, f"gc-{os.urandom(4).hex()}", parentType="user")["_id"]
    out = WORK / "wtws-gc-out"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "GIRDER_API_KEY": os.environ[KEY_ENV]}
    base = [str(GIRDER_CLIENT), "--api-url", g.url]

    def once() -> None:
        upload = [*base, "upload", "--parent-type", "folder", folder, str(source)]
        subprocess.run(upload, env=env, stdout=subprocess.DEVNULL, check=True)
        download = [*base, "download", "--parent-type", "folder", folder, str(out)]
        subprocess.run(download, env=env, stdout=subprocess.DEVNULL, check=True)
        assert _size(out / source.name) == _size(source)

    return timed(once)


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir())


@contextmanager
def _server() -> Iterator[tuple[Any, str]]:
    from tests.girder.fixtures import running_girder

    root = WORK / "wtws-girder"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for leftover in ("wtws-cache", "wtws-state"):
        shutil.rmtree(WORK / leftover, ignore_errors=True)
    try:
        with running_girder(root) as g:
            config = {"buildpack": "PythonBuildPack", "targetMount": "/work", "user": "jovyan", "port": 8888}
            image = g.alice.post("image", parameters={"name": "bench", "config": json.dumps(config)})
            tale = g.alice.post("tale", json={"imageId": image["_id"], "dataSet": [], "title": "bench"})
            yield g, str(tale["_id"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_wholetale_workspace() -> list[str]:
    big, small = _sources()
    lines = []
    with _server() as (g, tale):
        for source, label, note in (
            (big, "WholeTale workspace/: 256 MiB write+remount+read vs girder-client", _rate),
            (small, f"WholeTale workspace/: {SMALL_FILES:,} files write+remount+read vs girder-client", _per_file),
        ):
            measures: list[Callable[[], float]] = [
                lambda s=source: _wtfs_round(g, tale, s),  # type: ignore[misc]
                lambda s=source: _girder_client_round(g, s),  # type: ignore[misc]
            ]
            ours, theirs = interleaved_medians(*measures)
            lines.append(ratio_line(label, ours, theirs, "≤ 1.2×", ours / theirs <= 1.2, note(ours, theirs)))
    return lines


def _rate(ours: float, theirs: float) -> str:
    mib = BIG / 1024**2
    return f"(MiB/s: wtfs {mib / ours:.0f}, girder-client {mib / theirs:.0f})"


def _per_file(ours: float, theirs: float) -> str:
    return f"(ms/file: wtfs {1000 * ours / SMALL_FILES:.1f}, girder-client {1000 * theirs / SMALL_FILES:.1f})"


SECTIONS: list[Callable[[], list[str]]] = [bench_wholetale_workspace]
