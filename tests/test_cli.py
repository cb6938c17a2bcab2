"""The CLI as a user meets it: exit status and the one line said, for every option and command."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Session, render_spec
from tests.httpserver import Server
from tests.mounting import WTFS, Mount, is_mounted, wait_for, wtfs
from wtfs.log import to_journal

ROOT = Path(__file__).resolve().parents[1]
MOUNT_FUSE = shutil.which("mount.fuse3") or "/sbin/mount.fuse3"
USER = 12345
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by every user, unlike the venv's under /root
SITE = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))


def wtfs_as(uid: int, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``wtfs ARGS`` as another user (no groups), with this tree and the venv's packages."""
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": f"{ROOT}:{SITE}"}
    command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", SYSTEM_PYTHON, "-m", "wtfs", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd="/")


def mount_source(path: Path) -> str:
    """The source column of /proc/self/mountinfo for the mount at ``path`` (as findmnt shows it)."""
    found = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(path)], capture_output=True, text=True)
    return found.stdout.strip()


# -- mount options --------------------------------------------------------------------------

BAD_OPTIONS = [
    ("uid=-1", "-o: uid: -1 is not a user id (0 to 4294967294) or name"),
    ("gid=4294967295", "-o: gid: 4294967295 is not a group id (0 to 4294967294) or name"),
    ("uid=no-such-user-here", "-o: uid: no such user: 'no-such-user-here'"),
    ("gid=no-such-group-here", "-o: gid: no such group: 'no-such-group-here'"),
    ("umask=888", "-o: umask: '888' is not an octal mask (000 to 777)"),
    ("allow_other,allow_root", "-o: allow_root: give allow_other or allow_root, not both"),
    ("fsname=", "-o: fsname: must not be empty"),
    ("allow_root=1", "-o: allow_root: unknown option"),
]


@pytest.mark.parametrize(("option", "said"), BAD_OPTIONS)
def test_bad_mount_option_is_one_line_exit_2(tmp_path: Path, option: str, said: str) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(render_spec([]))
    (tmp_path / "mnt").mkdir()
    result = wtfs("mount", str(spec), str(tmp_path / "mnt"), "-o", option)
    assert (result.returncode, result.stderr) == (2, f"wtfs: {said}\n")
    assert not is_mounted(tmp_path / "mnt")


@pytest.mark.fuse
def test_fuse_options_users_type(public_dir: Path, session: Session, http: Server) -> None:
    """allow_root, debug, fsname= and uid=/gid= by name, as sshfs users write them."""
    spec = session.spec([{"mountPath": "/f", "url": http.add("/f", b"x")}])
    m = session.mount(spec, "allow_root,debug,fsname=my-data,uid=nobody,gid=nogroup", where=str(public_dir / "m"))
    st = os.stat(m.data / "f")
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert mount_source(m.path) == "my-data"
    assert (m.data / "f").read_bytes() == b"x"  # root may, as allow_root says
    other = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(m.data / "f")], capture_output=True, text=True)
    assert other.returncode == 1 and "Permission denied" in other.stderr  # nobody else
    assert not (m.data / "missing").exists()
    log = (session.root / "state" / "wtfs.log").read_text()
    assert " DEBUG wtfs.fs: lookup: missing (errno 2)" in log  # wtfs's debug lines...
    assert "opcode: LOOKUP" in log  # ...and libfuse's trace of each request


def test_suid_and_dev_reach_the_kernel_only_when_asked(session: Session, http: Server) -> None:
    spec = session.spec([{"mountPath": "/f", "url": http.add("/f", b"x")}])
    for where, options, expected in (("safe", (), {"nosuid", "nodev"}), ("open", ("suid,dev",), set())):
        m = session.mount(spec, *options, where=where)
        found = subprocess.run(["findmnt", "-n", "-o", "OPTIONS", str(m.path)], capture_output=True, text=True)
        assert set(found.stdout.strip().split(",")) & {"nosuid", "nodev"} == expected, found.stdout


# -- mount(8) -------------------------------------------------------------------------------

FSTAB_SCRIPT = """
set -e
mount --make-rprivate /
mount --bind "$BIN" /usr/local/sbin  # wtfs where mount.fuse3's shell finds it (no PATH given)
trap '"$BIN/wtfs" umount "$MNT" >/dev/null 2>&1 || true' EXIT
for pass in 1 2; do
  mount -a -T "$FSTAB"
  echo "pass $pass: $(findmnt -n -o SOURCE,FSTYPE "$MNT")"
  findmnt -n -o OPTIONS "$MNT" | tr , '\n' | grep -E '^no(suid|dev)$'  # mount.fuse3's implied suid,dev dropped
done
cat "$MNT/data/f"; echo
"$BIN/wtfs" umount "$MNT"
"""


@pytest.mark.fuse
@pytest.mark.skipif(not os.path.exists(MOUNT_FUSE) or not shutil.which("unshare"), reason="needs mount.fuse3, unshare")
def test_mount_a_twice_sees_the_mount_as_done(session: Session, http: Server, tmp_path: Path) -> None:
    """mount(8) compares fstab's source with the mount table's: the fsname is the spec's path."""
    spec = session.spec([{"mountPath": "/f", "url": http.add("/f", b"fstab")}])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{spec} {mnt} fuse.wtfs _netdev,nofail 0 0\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "wtfs").write_text(f'#!/bin/sh\ncd {ROOT} && exec {sys.executable} -m wtfs "$@"\n')
    (bin_dir / "wtfs").chmod(0o755)
    env = {**os.environ, "BIN": str(bin_dir), "MNT": str(mnt), "FSTAB": str(fstab)}
    result = subprocess.run(["unshare", "-m", "sh", "-c", FSTAB_SCRIPT], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    safe = "nosuid\nnodev\n"
    assert result.stdout == f"pass 1: {spec} fuse.wtfs\n{safe}pass 2: {spec} fuse.wtfs\n{safe}fstab\n"
    assert result.stderr == ""


# -- what mount says ------------------------------------------------------------------------


@pytest.mark.fuse
def test_entries_whose_head_fails_are_said_at_mount_and_in_status(session: Session, http: Server) -> None:
    entries = [{"mountPath": "/ok", "url": http.add("/ok", b"fine")}]
    entries += [{"mountPath": f"/e{code}", "url": http.add(f"/e{code}", b"", fault=code)} for code in ("404", "403")]
    entries.append({"mountPath": "/e500", "url": http.add("/e500", b"", fault="500")})
    spec = session.spec(entries)
    mnt = session.root / "mnt"
    mnt.mkdir()
    result = wtfs("mount", str(spec), str(mnt))
    session.mounts.append(Mount(spec, mnt, session.root / "state" / "wtfs.log"))
    log = session.root / "state" / "wtfs.log"
    said = [
        f"wtfs: warning: data/e{code}: HEAD answered {code} {reason}: shown as 0 bytes, opening it will likely fail"
        for code, reason in (("404", "Not Found"), ("403", "Forbidden"), ("500", "Internal Server Error"))
    ]
    assert result.returncode == 0
    assert result.stderr.splitlines() == [*said, f"wtfs: mounted with 3 warning(s); the log: {log}"]
    status = wtfs("status", str(mnt))
    assert status.returncode == 0
    warnings = [f"  {line.removeprefix('wtfs: warning: ')}" for line in said]
    assert status.stdout.splitlines()[-5:] == ["warnings at mount (3):", *warnings, f"log: {log}"]


@pytest.mark.skipif(os.geteuid() != 0 or os.stat("/dev/fuse").st_mode & 0o006 == 0o006, reason="needs a 0600 /dev/fuse")
def test_a_user_without_dev_fuse_is_told_what_to_do(public_dir: Path) -> None:
    os.chown(public_dir, USER, USER)
    (public_dir / "s.toml").write_text(render_spec([], name="u", state_dir=str(public_dir / "state")))
    (public_dir / "mnt").mkdir()
    os.chown(public_dir / "mnt", USER, USER)
    result = wtfs_as(USER, "mount", str(public_dir / "s.toml"), str(public_dir / "mnt"), home=public_dir)
    assert (result.returncode, result.stderr) == (
        1,
        f"wtfs: /dev/fuse: permission denied for uid {USER}: make it usable by all (chmod 0666 /dev/fuse, as "
        "distributions ship it) or by a group of this user, or mount as root with -o allow_other\n",
    )


@pytest.mark.fuse
def test_unset_api_key_env_is_a_configuration_error(tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    girder = {"api_url": "http://127.0.0.1:9/api/v1", "api_key_env": "WTFS_TEST_UNSET_KEY"}
    spec.write_text(render_spec([], name="k", state_dir=str(tmp_path / "state"), girder=girder))
    (tmp_path / "mnt").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "WTFS_TEST_UNSET_KEY"}
    result = wtfs("mount", str(spec), str(tmp_path / "mnt"), env=env)
    said = f"wtfs: {spec}: girder.api_key_env: environment variable WTFS_TEST_UNSET_KEY is not set\n"
    assert (result.returncode, result.stderr) == (2, said)
    assert not is_mounted(tmp_path / "mnt")


@pytest.mark.fuse
def test_under_systemd_the_log_goes_to_the_journal_with_priorities(session: Session, http: Server) -> None:
    """journald reads ``<N>`` at the start of each line of a unit's stderr as its priority."""
    spec = session.spec([{"mountPath": "/gone", "url": http.add("/gone", b"", fault="404")}])
    mnt = session.root / "mnt"
    mnt.mkdir()
    read_end, write_end = os.pipe()
    info = os.fstat(write_end)
    env = {**os.environ, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
    daemon = subprocess.Popen([*WTFS, "mount", "-f", str(spec), str(mnt)], stderr=write_end, env=env)
    os.close(write_end)
    try:
        wait_for(lambda: is_mounted(mnt), what="the mount")
    finally:
        daemon.terminate()
        assert daemon.wait(timeout=60) == 0
    with os.fdopen(read_end) as stream:
        lines = stream.read().splitlines()
    assert f"<6>wtfs: mounted session test at {mnt}" in lines
    warning = "<4>wtfs: data/gone: HEAD answered 404 Not Found: shown as 0 bytes, opening it will likely fail"
    assert warning in lines
    assert all(line.startswith(("<4>", "<6>")) for line in lines), lines


def test_a_log_file_inheriting_journal_stream_has_no_priorities(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A background daemon's stderr is its log file, though JOURNAL_STREAM came with the environment."""
    with open(tmp_path / "journal", "w") as journal, open(tmp_path / "wtfs.log", "w") as log_file:
        info = os.fstat(journal.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        assert to_journal(journal.fileno()) and not to_journal(log_file.fileno())


# -- status, cache and prefetch, for the owner and for other users --------------------------


@pytest.mark.fuse
def test_cache_commands_use_the_mounts_cache(session: Session, http: Server, tmp_path: Path) -> None:
    """The spec names its own cache_dir: found from the MOUNTPOINT given, or from the current directory."""
    m = session.mount(session.spec([{"mountPath": "/d/f", "url": http.add("/f", b"x" * 1000)}]))
    assert (m.data / "d" / "f").read_bytes() == b"x" * 1000
    listed = [wtfs("cache", "ls", str(m.path)), wtfs("cache", "ls", cwd=m.data / "d")]
    for result in listed:
        assert result.returncode == 0, result.stderr
        (line,) = result.stdout.splitlines()
        assert line.split()[1:] == ["ACTIVE", "1000", "B", "locks", "0", f"{http.base}/f"]
    dry = wtfs("cache", "gc", str(m.path), "--dry-run")
    assert dry.returncode == 0 and dry.stdout.startswith("would evict ")
    on_a_terminal = shlex.join([*WTFS, "prefetch", str(m.data), "--wait"])  # script(1) gives it a tty
    shown = subprocess.run(["script", "-qec", on_a_terminal, "/dev/null"], capture_output=True, text=True, cwd=ROOT)
    assert shown.returncode == 0
    assert "landing" in shown.stdout and "━" in shown.stdout  # rich's bar, then gone
    assert shown.stdout.replace("\r", "").splitlines()[-1].endswith("1/1 landed")
    other = wtfs("cache", "ls", str(tmp_path))
    assert (other.returncode, other.stderr) == (1, f"wtfs: {tmp_path}: not a wtfs mount\n")


@pytest.mark.fuse
def test_check_status_prefetch_for_another_user(public_dir: Path, session: Session, http: Server) -> None:
    """A user who may read the mount (allow_other) but has none of its owner's records."""
    entries = [
        {"mountPath": "/d/f", "url": http.add("/f", b"y" * 3000)},
        {"mountPath": "/gone", "url": http.add("/gone", b"", fault="404")},
    ]
    m = session.mount(session.spec(entries), "allow_other", where=str(public_dir / "m"))
    checked = wtfs_as(USER, "check", str(m.path), home=public_dir)
    assert (checked.returncode, checked.stdout) == (
        0,
        f"{m.path}: ok: session test, daemon pid {m.pid} (asked through .wtfs/)\n",
    )
    fetched = wtfs_as(USER, "prefetch", str(m.data / "d"), "--wait", home=public_dir)
    assert (fetched.returncode, fetched.stdout) == (0, "prefetching 1 file(s)\n1/1 landed\n"), fetched.stderr
    failed = wtfs_as(USER, "prefetch", str(m.data / "gone"), "--wait", home=public_dir)
    assert (failed.returncode, failed.stdout) == (1, "prefetching 1 file(s)\n0/1 landed, 1 failed\n")
    assert failed.stderr.splitlines()[-1] == f"wtfs: {m.data / 'gone'}: failed: {http.base}/gone: HTTP 404"
    status = wtfs_as(USER, "status", str(m.path), home=public_dir)
    assert status.returncode == 0, status.stderr
    transfers = [line.split() for line in status.stdout.splitlines() if line.startswith("  #")]
    assert sorted((t[1], t[-1] if t[1] == "DONE" else t[-4]) for t in transfers) == [
        ("DONE", "data/d/f"),
        ("FAILED", "data/gone"),
    ]


@pytest.mark.fuse
def test_another_user_without_access_is_told_in_one_line(public_dir: Path, session: Session, http: Server) -> None:
    m = session.mount(session.spec([{"mountPath": "/f", "url": http.add("/f", b"z")}]), where=str(public_dir / "m"))
    denied = "permission denied: only its owner (uid 0) may enter this mount; ask them to mount it with -o allow_other"
    checked = wtfs_as(USER, "check", str(m.path), home=public_dir)
    assert (checked.returncode, checked.stderr) == (1, f"{m.path}: {denied}\n")
    status = wtfs_as(USER, "status", str(m.path), home=public_dir)
    assert (status.returncode, status.stderr) == (1, f"wtfs: {m.path}: {denied}\n")
    fetched = wtfs_as(USER, "prefetch", str(m.data / "f"), home=public_dir)
    assert (fetched.returncode, fetched.stderr) == (1, f"wtfs: {m.data / 'f'}: {denied}\n")
