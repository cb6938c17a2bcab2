"""Runs through real mounts and real processes: live status and output, cancel, crash recovery."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Session
from tests.httpserver import Server
from tests.mounting import Mount, wait_for, wtfs

pytestmark = pytest.mark.fuse

GATED = """#!/bin/sh
echo "line 1"
echo "oops 1" >&2
while [ ! -e go ]; do sleep 0.02; done
echo "line 2"
echo more >> data.txt
exit ${EXIT_CODE:-0}
"""


@pytest.fixture
def run_mount(session: Session, tmp_path: Path) -> Mount:
    ws = tmp_path / "workspace"
    ws.mkdir()
    (ws / "run.sh").write_text(GATED)
    (ws / "run.sh").chmod(0o755)
    (ws / "data.txt").write_text("original\n")
    return session.mount(session.spec([], workspace=str(ws)))


def status(run: Path) -> str:
    return (run / ".status").read_text()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_status_and_output_are_live(run_mount: Mount) -> None:
    runs = run_mount.path / "runs"
    os.mkdir(runs / "r1")
    run = runs / "r1"
    assert status(run) == "0 UNKNOWN\n"
    version_link = os.readlink(run / "version")
    version_data = run_mount.path / "versions" / version_link.rsplit("/", 1)[1] / "workspace" / "data.txt"
    before = sha(version_data)
    started = wtfs("run", "start", str(run), "--detach")
    assert started.returncode == 0, started.stderr
    wait_for(lambda: (run / ".stdout").read_text() == "line 1\n", what="the first line")
    assert status(run) == "2 RUNNING\n"
    assert (run / ".stdout").stat().st_size == len("line 1\n")  # stat shows the current size
    assert (run / ".stderr").read_text() == "oops 1\n"
    tail = subprocess.Popen(["tail", "-s", "0.1", "-f", str(run / ".stdout")], stdout=subprocess.PIPE)
    try:
        assert tail.stdout is not None
        assert tail.stdout.readline() == b"line 1\n"
        (run / "workspace" / "go").touch()
        printed_at = time.monotonic()
        assert tail.stdout.readline() == b"line 2\n"
        assert time.monotonic() - printed_at < 1.0  # tail -f follows the run live
    finally:
        tail.kill()
        tail.wait()
    wait_for(lambda: status(run) == "3 COMPLETED\n", what="completion")
    assert (run / ".stdout").read_text() == "line 1\nline 2\n"
    assert (run / "workspace" / "data.txt").read_text() == "original\nmore\n"
    assert sha(version_data) == before  # the run's writes never change its version
    assert errno_of(open, run / ".stdout", "a") == errno.EROFS


def errno_of(fn: object, *args: object) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.errno or 0


def test_failing_run_records_exit_code(run_mount: Mount) -> None:
    run = run_mount.path / "runs" / "bad"
    os.mkdir(run)
    (run / "workspace" / "go").touch()
    result = wtfs("run", "start", str(run), env={**os.environ, "EXIT_CODE": "3"})
    assert result.returncode == 3  # the entrypoint's own exit code
    assert status(run) == "4 FAILED\n"
    record = wtfs("run", "status", str(run), "--json")
    assert '"exitCode": 3' in record.stdout


def test_missing_entrypoint_is_one_clear_line(run_mount: Mount) -> None:
    run = run_mount.path / "runs" / "r"
    os.mkdir(run)
    result = wtfs("run", "start", str(run), "--entrypoint", "nope.sh")
    assert result.returncode == 1
    assert result.stderr.strip() == "wtfs: nope.sh: no such entrypoint in the run's workspace"
    assert status(run) == "0 UNKNOWN\n"


def test_cancel_kills_the_process_tree(run_mount: Mount) -> None:
    run = run_mount.path / "runs" / "c"
    os.mkdir(run)
    (run / "workspace" / "tree.sh").write_text("#!/bin/sh\nsleep 1000 &\necho started\nwait\n")
    started = wtfs("run", "start", str(run), "--entrypoint", "tree.sh", "--detach")
    assert started.returncode == 0
    wait_for(lambda: (run / ".stdout").read_text() == "started\n", what="the run to start")
    pgid = int(wtfs("run", "status", str(run), "--json").stdout.split('"pid": ')[1].split()[0].strip(","))
    cancelled = wtfs("run", "cancel", str(run), "--grace", "2")
    assert cancelled.returncode == 0 and cancelled.stdout == "5 CANCELLED\n"
    assert status(run) == "5 CANCELLED\n"
    from wtfs.procfs import group_alive

    assert not group_alive(pgid)


INTERRUPTIBLE = {
    "plain.sh": "#!/bin/sh\necho started\nsleep 1000\n",  # dies of SIGINT
    "traps.sh": "#!/bin/sh\ntrap 'echo caught; exit 7' INT\necho started\nwhile :; do sleep 0.05; done\n",
}


def test_ctrl_c_on_a_foreground_run_cancels_it(run_mount: Mount) -> None:
    """SIGINT to `wtfs run start` (what Ctrl-C sends it) reaches the entrypoint's process group:
    the run ends CANCELLED with its exit code recorded, and the command exits as a shell would:
    130 when SIGINT killed the entrypoint, the entrypoint's own code when it handled SIGINT."""
    from wtfs.procfs import group_alive

    for entrypoint, expected in (("plain.sh", (130, -signal.SIGINT)), ("traps.sh", (7, 7))):
        run = run_mount.path / "runs" / entrypoint.removesuffix(".sh")
        os.mkdir(run)
        (run / "workspace" / entrypoint).write_text(INTERRUPTIBLE[entrypoint])
        command = [sys.executable, "-m", "wtfs", "run", "start", str(run), "--entrypoint", entrypoint]
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: (run / ".stdout").read_text() == "started\n", what=f"{entrypoint} to start")  # noqa: B023
            pgid = int(wtfs("run", "status", str(run), "--json").stdout.split('"pid": ')[1].split()[0].strip(","))
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
        finally:
            proc.kill()
        assert (proc.returncode, status(run)) == (expected[0], "5 CANCELLED\n"), stderr
        assert stderr.splitlines() == ["wtfs: cancelling the run (Ctrl-C again to kill it)", "5 CANCELLED"]
        assert f'"exitCode": {expected[1]}' in wtfs("run", "status", str(run), "--json").stdout
        assert not group_alive(pgid)
    assert (run_mount.path / "runs" / "traps" / ".stdout").read_text() == "started\ncaught\n"


def _peak_rss_of_run(run_mount: Mount, name: str, size: int) -> int:
    """Peak RSS (KiB) of `wtfs run start` for a run printing ``size`` bytes."""
    run = run_mount.path / "runs" / name
    os.mkdir(run)
    (run / "workspace" / "out.sh").write_text(f"#!/bin/sh\nhead -c {size} /dev/zero | tr -c x x\n")
    proc = subprocess.Popen([sys.executable, "-m", "wtfs", "run", "start", str(run), "--entrypoint", "out.sh"])
    _, code, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0
    return int(usage.ru_maxrss)


def test_large_output_streams_with_flat_memory(run_mount: Mount) -> None:
    size = 100_000_000
    daemon_rss = _rss_kb(run_mount.pid)
    small = _peak_rss_of_run(run_mount, "small", 10)
    large = _peak_rss_of_run(run_mount, "big", size)
    assert large - small < 20_000  # KiB: 100 MB of output costs the executor nothing
    run = run_mount.path / "runs" / "big"
    stdout = run / ".stdout"
    assert stdout.stat().st_size == size
    digest = hashlib.sha256()
    with open(stdout, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(b"x" * size).hexdigest()
    assert _rss_kb(run_mount.pid) - daemon_rss < 50_000  # nor does the daemon serving it


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_version_link_follows_renames_and_busy_version(run_mount: Mount) -> None:
    m = run_mount
    os.mkdir(m.path / "versions" / "v1")
    created = wtfs("run", "create", str(m.path), "--name", "r", "--version", "v1")
    assert created.returncode == 0, created.stderr
    run = m.path / "runs" / "r"
    assert os.readlink(run / "version") == "../../versions/v1"
    os.rename(m.path / "versions" / "v1", m.path / "versions" / "renamed")
    assert os.readlink(run / "version") == "../../versions/renamed"
    assert (run / "version" / "workspace" / "data.txt").read_text() == "original\n"
    assert errno_of(os.rmdir, m.path / "versions" / "renamed") == errno.EBUSY
    os.rename(run, m.path / "runs" / "r2")
    assert os.listdir(m.path / "runs") == ["r2"]
    os.rmdir(m.path / "runs" / "r2")
    os.rmdir(m.path / "versions" / "renamed")  # no run uses it any more
    assert os.listdir(m.path / "versions") == []


def test_mkdir_takes_a_version_only_when_the_workspace_changed(run_mount: Mount) -> None:
    m = run_mount
    os.mkdir(m.path / "runs" / "a")
    os.mkdir(m.path / "runs" / "b")
    assert len(os.listdir(m.path / "versions")) == 1
    (m.path / "workspace" / "data.txt").write_text("changed\n")
    os.mkdir(m.path / "runs" / "c")
    assert len(os.listdir(m.path / "versions")) == 2
    assert (m.path / "runs" / "c" / "workspace" / "data.txt").read_text() == "changed\n"
    assert (m.path / "runs" / "a" / "workspace" / "data.txt").read_text() == "original\n"
    assert errno_of(os.mkdir, m.path / "runs" / "a") == errno.EEXIST


def test_running_run_cannot_be_deleted(run_mount: Mount) -> None:
    run = run_mount.path / "runs" / "busy"
    os.mkdir(run)
    wtfs("run", "start", str(run), "--detach")
    assert status(run) == "2 RUNNING\n"
    assert errno_of(os.rmdir, run) == errno.EBUSY
    (run / "workspace" / "go").touch()
    wait_for(lambda: status(run) == "3 COMPLETED\n", what="completion")
    os.rmdir(run)


def test_killed_executor_is_failed_after_remount(session: Session, run_mount: Mount) -> None:
    run = run_mount.path / "runs" / "k"
    os.mkdir(run)
    wtfs("run", "start", str(run), "--detach")
    record = wtfs("run", "status", str(run), "--json").stdout
    executor = int(record.split('"executorPid": ')[1].split()[0].strip(","))
    child = int(record.split('"pid": ')[1].split()[0].strip(","))
    os.kill(executor, signal.SIGKILL)
    os.killpg(child, signal.SIGKILL)
    run_mount.unmount()
    again = session.mount(run_mount.spec)
    assert (again.path / "runs" / "k" / ".status").read_text() == "4 FAILED\n"


def test_two_hundred_runs_listed(run_mount: Mount) -> None:
    for i in range(201):
        os.mkdir(run_mount.path / "runs" / f"r{i:03d}")
    assert os.listdir(run_mount.path / "runs") == [f"r{i:03d}" for i in range(201)]


def test_invalid_run_name_is_refused(run_mount: Mount) -> None:
    result = wtfs("run", "create", str(run_mount.path), "--name", ".hidden")
    assert result.returncode == 1
    assert result.stderr.strip() == "wtfs: '.hidden': names starting with '.' are reserved"


def test_run_create_through_the_mount_and_a_taken_name(run_mount: Mount) -> None:
    first = wtfs("run", "create", str(run_mount.path), "--name", "twice")
    assert first.returncode == 0 and "created run 'twice'" in first.stdout
    again = wtfs("run", "create", str(run_mount.path), "--name", "twice")
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "File exists" in again.stderr  # one line, no traceback


def test_a_version_a_run_takes_copies_files_open_for_writing(run_mount: Mount) -> None:
    m = run_mount
    (m.path / "workspace" / "data.txt").write_text("changed\n")  # so mkdir runs/ takes a version
    with open(m.path / "workspace" / "data.txt", "r+b", buffering=0) as f:
        os.mkdir(m.path / "runs" / "r")
        f.write(b"CHANGED")
    version = os.readlink(m.path / "runs" / "r" / "version").rsplit("/", 1)[1]
    assert (m.path / "versions" / version / "workspace" / "data.txt").read_text() == "changed\n"


@pytest.mark.fuse
def test_run_commands_on_a_session_without_a_workspace_say_so(session: Session, http: Server) -> None:
    m = session.mount(session.spec([{"mountPath": "/f", "url": http.add("/f", b"x")}]))
    result = wtfs("run", "create", str(m.path))
    assert result.returncode == 1
    assert result.stderr == f"wtfs: {m.path}: the session has no workspace, so no runs\n"  # no traceback
