"""The systemd units: what systemd says of them, and the daemon working under their hardening.

systemd is not PID 1 here, so the service cannot be started. What can run is checked for real:
`systemd-analyze` reads the units offline (syntax, security exposure), and the daemon is run
with the unit's own restrictions applied by other means — its capability bounding set and
no_new_privs through setpriv(1), MemoryDenyWriteExecute= through the kernel's PR_SET_MDWE —
and traced, so every system call and socket family it used is checked against the unit's
SystemCallFilter= and RestrictAddressFamilies=. Not emulated: DeviceAllow= (a cgroup program).
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import Session
from tests.mounting import is_mounted, wait_for, wtfs

UNITS = Path(__file__).resolve().parents[1] / "systemd"
SERVICE = UNITS / "wtfs@.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="needs systemd-analyze (Debian's systemd package)")
#: Runs argv with PR_SET_MDWE (refuse W+X memory), as MemoryDenyWriteExecute= does.
MDWE_EXEC = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.prctl(65, 1, 0, 0, 0):\n"
    "    raise OSError(ctypes.get_errno(), 'prctl(PR_SET_MDWE)')\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)


def _analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    env = {**os.environ, "SYSTEMD_LOG_TARGET": "console", "SYSTEMD_COLORS": "0"}
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


def _service(key: str) -> list[str]:
    """Every value of ``key`` in the unit's [Service] section, in order."""
    values = []
    section = ""
    for line in SERVICE.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and line.startswith(f"{key}="):
            values.append(line.split("=", 1)[1])
    return values


@cache
def _syscalls(group: str) -> frozenset[str]:
    """The system calls of a systemd filter group, nested groups expanded."""
    listing = _analyze("syscall-filter", group, cwd=UNITS).stdout
    names: set[str] = set()
    for line in listing.splitlines()[1:]:
        item = line.strip()
        if not line.startswith("    ") or not item or item.startswith("#"):
            continue
        names |= _syscalls(item) if item.startswith("@") else {item}
    return frozenset(names)


@needs_analyze
def test_units_parse_cleanly(tmp_path: Path) -> None:
    for unit in UNITS.iterdir():
        shutil.copy(unit, tmp_path)
    shutil.copy(SERVICE, tmp_path / "wtfs@demo.service")  # a template is verified as an instance
    result = _analyze(
        "verify", "--man=no", "./wtfs@demo.service", "./mnt-wtfs-demo.mount", "./mnt-wtfs-demo.automount", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # no unknown key, no value systemd would ignore


@needs_analyze
def test_service_exposure_is_at_most_5() -> None:
    result = _analyze("security", "--offline=yes", "--no-pager", SERVICE.name, cwd=UNITS)
    assert result.returncode == 0, result.stderr
    assert "ignoring" not in result.stderr, result.stderr
    level = re.search(r"Overall exposure level for wtfs@\S*: (\d+\.\d+)", result.stdout)
    assert level is not None, result.stdout
    assert float(level.group(1)) <= 5.0, result.stdout


def test_only_the_automount_is_installable() -> None:
    """Enabling both would mount at boot and make the automount pointless."""
    installs = {}
    for unit in ("mnt-wtfs-demo.mount", "mnt-wtfs-demo.automount"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(UNITS / unit)
        installs[unit] = parser.has_section("Install") and bool(parser["Install"].get("WantedBy"))
    assert installs == {"mnt-wtfs-demo.mount": False, "mnt-wtfs-demo.automount": True}


def _restricted(trace: Path) -> list[str]:
    """A command prefix: the unit's bounding set, no_new_privs, no W+X memory, traced to ``trace``."""
    return [
        *("setpriv", "--no-new-privs", "--inh-caps=-all", f"--bounding-set={_bounding_set()}", "--"),
        *(sys.executable, "-c", MDWE_EXEC),
        *("strace", "-f", "-qq", "-o", str(trace)),
    ]


def _bounding_set() -> str:
    caps = " ".join(_service("CapabilityBoundingSet")).split()
    return ",".join(["-all", *(f"+{cap.removeprefix('CAP_').lower()}" for cap in caps)])


@pytest.mark.fuse
@needs_analyze
@pytest.mark.skipif(shutil.which("strace") is None or shutil.which("setpriv") is None, reason="needs strace, setpriv")
def test_daemon_serves_under_the_units_restrictions(session: Session, tmp_path: Path) -> None:
    assert _service("NoNewPrivileges") == ["yes"] and _service("MemoryDenyWriteExecute") == ["yes"]
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("from the data set\n")
    ws = tmp_path / "ws"
    ws.mkdir(mode=0o777)
    ws.chmod(0o777)
    spec = session.spec([{"mountPath": "/a.txt", "url": str(src / "a.txt")}], workspace=str(ws))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    trace = tmp_path / "strace.out"
    stop_trace = tmp_path / "strace-stop.out"
    daemon = subprocess.Popen(
        [*_restricted(trace), sys.executable, "-m", "wtfs", "mount", "-f", str(spec), str(mnt), "-o", "allow_other"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: is_mounted(mnt) or daemon.poll() is not None, timeout=120, what="the traced daemon to mount")
        assert is_mounted(mnt), daemon.communicate(timeout=30)[1]
        user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-ec"]
        script = (
            "cat data/a.txt; echo mine > workspace/f; mkdir workspace/d; chmod 2775 workspace/d;"
            " touch -d 2020-01-01 workspace/f; ln workspace/f workspace/hard; mkfifo workspace/p;"
            " mv workspace/hard workspace/d/moved; ln -s f workspace/link;"
            ' python3 -c \'import os; os.setxattr("workspace/f", "user.k", b"v")\''
        )
        result = subprocess.run([*user, script], cwd=mnt, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "from the data set\n"
        os.mkdir(mnt / "versions" / "v1")
        assert (mnt / "versions" / "v1" / "workspace" / "f").read_text() == "mine\n"
        made = os.stat(ws / "d")
        assert (made.st_uid, made.st_gid, made.st_mode & 0o7777) == (65534, 65534, 0o2775)
        assert os.getxattr(ws / "f", "user.k") == b"v"
        stop = subprocess.run(  # ExecStop= runs under the same restrictions
            [*_restricted(stop_trace), sys.executable, "-m", "wtfs", "umount", str(mnt)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert stop.returncode == 0 and not is_mounted(mnt), stop.stderr
    finally:
        if is_mounted(mnt):
            wtfs("umount", str(mnt))
        daemon.wait(timeout=60)
    assert daemon.returncode == 0, daemon.stderr.read() if daemon.stderr else ""
    traced = trace.read_text() + stop_trace.read_text()
    used = set(re.findall(r"^\d+\s+([a-z0-9_]+)\(", traced, re.MULTILINE))
    groups = " ".join(_service("SystemCallFilter")).split()
    allowed = frozenset().union(*(_syscalls(group) for group in groups))
    assert "mount" in used and used <= allowed, sorted(used - allowed)
    families = set(re.findall(r"socket\((AF_[A-Z0-9]+)", traced))
    assert families <= set(" ".join(_service("RestrictAddressFamilies")).split()), families
