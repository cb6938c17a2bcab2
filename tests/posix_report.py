"""How far two FUSE filesystems are from a plain directory, by tests/test_posix.py's cases.

``.venv/bin/python -m tests.posix_report`` (as root) runs every case of tests/posix_cases.py, as each
of its users, with test_posix.py's runner and comparison, on

* wtfs: the workspace/ of a mount made with ``-o allow_other``, as test_posix.py mounts it;
* passthrough_ll: libfuse's example (built by tests/bench/run.py) mounted with
  ``-o allow_other,default_permissions`` over a directory prepared like the workspace. It runs as
  root and does not take the caller's credentials, so what users create belongs to root there;

each against its own oracle, a plain directory prepared alike, and prints per filesystem::

    <fs>: N cases x users, F differ from the oracle (P%)

followed by the differing cases, one ``<case>-<user>`` a line (test_posix.py's test ids). The two
filesystems run one after the other; everything is unmounted at the end, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bench.run import passthrough_binary
from tests.mounting import is_mounted, wait_for
from tests.posix_cases import CASES
from tests.test_posix import MAIN, Sides, mismatch, plain_dir, reachable_root, workspace_mount

PASSTHROUGH_OPTIONS = "allow_other,default_permissions"


def fusermount(path: Path) -> None:
    """``fusermount3 -u``; lazily (``-uz``) only if that left it mounted."""
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", str(path)], check=False)
    if is_mounted(path):
        subprocess.run(["fusermount3", "-uz", str(path)], check=False)


def mounts_under(root: Path) -> list[Path]:
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mountinfo") as table:
        points = [line.split()[4] for line in table]
    return [Path(p) for p in reversed(points) if p.startswith(prefix)]  # the latest first


@contextlib.contextmanager
def passthrough_mount(source: Path, mountpoint: Path, options: str) -> Iterator[Path]:
    """passthrough_ll of ``source`` on ``mountpoint`` with ``-o options``, unmounted at the end."""
    mountpoint.mkdir()
    log = mountpoint.parent / "passthrough_ll.log"
    command = [str(passthrough_binary()), "-f", "-o", f"source={source},{options}", str(mountpoint)]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out)
    try:
        wait_for(lambda: is_mounted(mountpoint) or proc.poll() is not None, what="passthrough_ll to mount")
        if not is_mounted(mountpoint):
            raise RuntimeError(f"passthrough_ll exited with {proc.returncode}: {log.read_text()[-2000:]}")
        yield mountpoint
    finally:
        fusermount(mountpoint)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_wtfs(root: Path) -> Sides:
    sides = Sides(plain_dir(root / "wtfs"), MAIN)
    sides.start("oracle", sides.base("oracle"))
    with workspace_mount(sides.root, sides, "posix", "allow_other"):
        sides.finish()
    return sides


def run_passthrough(root: Path) -> Sides:
    sides = Sides(plain_dir(root / "passthrough_ll"), MAIN)
    sides.start("oracle", sides.base("oracle"))
    source = sides.base("source")
    try:
        with passthrough_mount(source, sides.root / "mnt", PASSTHROUGH_OPTIONS) as mountpoint:
            try:
                sides.start("mount", mountpoint)
            finally:
                sides.finish()  # nothing may still be using the mount
    finally:
        sides.finish()
    return sides


def differing(sides: Sides) -> tuple[int, list[str]]:
    """How many (case, user) pairs ran, and the ids of those whose record differs from the oracle's."""
    total, differ = 0, []
    for name in MAIN:
        for user in CASES[name].users:
            total += 1
            try:
                if not mismatch(sides, name, user):
                    continue
            except pytest.fail.Exception:  # the runner never reported the case: that differs too
                pass
            differ.append(f"{name}-{user}")
    return total, differ


def report(fs: str, sides: Sides) -> list[str]:
    total, differ = differing(sides)
    lines = [f"{fs}: {total} cases x users, {len(differ)} differ from the oracle ({100 * len(differ) / total:.1f}%)"]
    lines += [f"  {case_id}" for case_id in differ]
    for run in sides.runs.values():
        if run.problem:
            lines.append(f"  ! {run.side} as {run.user}: {run.problem.splitlines()[0]}")
    return lines


def main() -> int:
    if os.geteuid() != 0:
        print("posix_report: run as root (the runner takes each user's identity itself)", file=sys.stderr)
        return 2
    with reachable_root() as root:
        try:
            print("running the cases on wtfs workspace/ and its oracle ...", file=sys.stderr, flush=True)
            wtfs = run_wtfs(root)
            print("running the cases on passthrough_ll and its oracle ...", file=sys.stderr, flush=True)
            passthrough = run_passthrough(root)
        finally:
            for path in mounts_under(root):  # anything a failure left behind
                fusermount(path)
        print("\n".join([*report("wtfs", wtfs), *report("passthrough_ll", passthrough)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
