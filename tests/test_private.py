"""What the daemon leaves on the host: private modes, no credentials in logs or status, and a
runtime record that names its daemon for good (pid and start time)."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DmFactory, Session
from tests.httpserver import Server
from tests.mounting import wtfs
from wtfs import runtime
from wtfs.log import mask_credentials
from wtfs.objects import ObjectRef
from wtfs.procfs import pid_alive, start_time


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def cache_modes(cache: Path) -> dict[str, int]:
    """Mode of every path under the cache, by kind: owner-only expected throughout."""
    modes = {str(cache): mode(cache)}
    for directory, dirs, files in os.walk(cache):
        for name in dirs + files:
            modes[os.path.join(directory, name)] = mode(os.path.join(directory, name))
    return modes


@pytest.mark.fuse
def test_everything_the_daemon_creates_is_private(session: Session, http: Server) -> None:
    m = session.mount(session.spec([{"mountPath": "/f", "url": http.add("/f", b"secret data")}]))
    assert (m.data / "f").read_bytes() == b"secret data"
    record = runtime.record_path(str(m.path))
    created = {
        **cache_modes(session.cache_dir),
        str(m.log): mode(m.log),
        str(record.parent): mode(record.parent),
        str(record): mode(record),
    }
    for suffix in ("", "-wal", "-shm"):
        assert f"{session.cache_dir}/cache.db{suffix}" in created
    assert len([p for p in created if "/objects/" in p]) == 2  # a shard directory and the copy
    expected = {path: 0o700 if os.path.isdir(path) else 0o600 for path in created}
    assert created == expected


async def test_loose_modes_are_tightened_at_start_with_one_line(
    http: Server, dm_factory: DmFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = await dm_factory()
    lock = await first.lock(ObjectRef.for_source(http.add("/f", b"x" * 5000), 5000, None), "me")
    await first.unlock(lock)
    await first.stop()
    cache = tmp_path / "cache"
    for path in cache_modes(cache):
        os.chmod(path, 0o755 if os.path.isdir(path) else 0o644)  # as an older wtfs left them
    with caplog.at_level(logging.INFO):
        await dm_factory()
    assert all(m & 0o077 == 0 for m in cache_modes(cache).values())
    lines = [r.getMessage() for r in caplog.records if "made private" in r.getMessage()]
    assert len(lines) == 1 and "open to other users" in lines[0]


def test_mask_credentials() -> None:
    assert mask_credentials("GET https://ann:pw@h.org/a@b failed") == "GET https://***@h.org/a@b failed"
    assert mask_credentials("x https://TOKEN@github.com/r y") == "x https://***@github.com/r y"
    assert mask_credentials("https://h.org/~ann@x and mail ann@h.org") == "https://h.org/~ann@x and mail ann@h.org"


@pytest.mark.fuse
def test_credentials_in_urls_are_masked_in_logs_and_status(session: Session, http: Server) -> None:
    url = http.add("/gone", b"x", fault="404").replace("http://", "http://ann:s3cret@")
    m = session.mount(session.spec([{"mountPath": "/gone", "url": url}]))
    with pytest.raises(FileNotFoundError):
        (m.data / "gone").read_bytes()
    status = wtfs("status", str(m.path), "--json")
    listing = wtfs("cache", "ls", "--cache-dir", str(session.cache_dir))
    m.unmount()
    log = m.log.read_text()
    report = json.loads(status.stdout)
    assert [t["error"] for t in report["transfers"]] == [url.replace("ann:s3cret@", "***@") + ": HTTP 404"]
    for text in (log, status.stdout, listing.stdout):
        assert "s3cret" not in text
    assert "***@" in log and "***@" in listing.stdout


# -- identity ------------------------------------------------------------------------------------


@pytest.fixture
def stand_in() -> Iterator[subprocess.Popen[bytes]]:
    """A process that is not wtfs, given a recorded daemon's pid."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def forge_record(mountpoint: Path, pid: int, started: int | None) -> Path:
    path = runtime.record_path(str(mountpoint))
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "mountpoint": str(mountpoint), "session": "x", "start_time": started}))
    return path


def test_umount_never_signals_a_process_that_took_the_pid(stand_in: subprocess.Popen[bytes], tmp_path: Path) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    real_start = start_time(stand_in.pid)
    assert real_start is not None
    record = forge_record(mountpoint, stand_in.pid, real_start - 100)  # the daemon started earlier
    result = wtfs("umount", str(mountpoint))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"wtfs: {mountpoint}: pid {stand_in.pid} is no longer its daemon"
        " (another process has it since): not signalled; not mounted"
    ]
    assert stand_in.poll() is None and pid_alive(stand_in.pid)  # untouched
    assert not record.exists()


def test_records_of_dead_daemons_are_removed_by_umount_and_the_next_mount(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    one, two, live = tmp_path / "one", tmp_path / "two", tmp_path / "live"
    first, second = forge_record(one, dead.pid, 1), forge_record(two, dead.pid, 1)
    result = wtfs("umount", str(one))
    assert result.returncode == 1 and result.stderr.strip() == f"wtfs: {one}: not mounted"
    assert not first.exists() and second.exists()
    try:
        runtime.write_record(str(live), {"pid": os.getpid(), "mountpoint": str(live)})  # as a mount does
        assert not second.exists()
        written = runtime.read_record(str(live))
        assert written is not None and written["start_time"] == start_time(os.getpid())
        assert runtime.daemon_of(written) == "alive" and mode(runtime.record_path(str(live))) == 0o600
    finally:
        runtime.remove_record(str(live), os.getpid())
