"""Real mounts for tests: the CLI starts the daemon, the test unmounts and asserts it worked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wtfs.procfs import pid_alive

WTFS = [sys.executable, "-m", "wtfs"]


def wtfs(*args: str, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WTFS, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def is_mounted(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mountinfo") as table:
        return any(line.split()[4] == target for line in table)


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy, failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@dataclass
class Mount:
    spec: Path
    path: Path
    log: Path

    @property
    def data(self) -> Path:
        return self.path / "data"

    @property
    def pid(self) -> int:
        from wtfs import runtime

        record = runtime.read_record(str(self.path))
        assert record is not None, "no runtime record for the mount"
        return int(record["pid"])

    def unmount(self) -> None:
        """Unmount cleanly with `wtfs umount` and assert it worked; fall back only if not."""
        if not is_mounted(self.path):
            return
        result = wtfs("umount", str(self.path))
        if result.returncode != 0 or is_mounted(self.path):
            subprocess.run(["fusermount3", "-uz", str(self.path)], check=False)
            raise AssertionError(f"wtfs umount failed: {result.stderr.strip()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        pid = self.pid
        os.kill(pid, sig)
        wait_for(lambda: not pid_alive(pid), what=f"daemon {pid} to die")


def mount(spec: Path, mountpoint: Path, *options: str) -> Mount:
    mountpoint.mkdir(exist_ok=True)
    args = ["mount", str(spec), str(mountpoint)]
    for option in options:
        args += ["-o", option]
    result = wtfs(*args)
    assert result.returncode == 0, f"mount failed: {result.stderr.strip()}"
    assert is_mounted(mountpoint)
    return Mount(spec, mountpoint, mountpoint.parent / "state" / "wtfs.log")
