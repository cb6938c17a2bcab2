"""POSIX conformance of the workspace, by oracle: every case runs on the mount and on a plain directory.

A case (tests/posix_cases.py) is a short sequence of operations; the runner records what a user sees
at each step (errno names, stat lines, bytes, time relations, same-inode booleans). Each case runs
as root and as an unprivileged user (uid 12345, groups 12345 and 23456; two-user cases also use uid
12346) in ``workspace/<case>-<user>`` of a mount made with ``-o allow_other`` and in the same
directory of an oracle on the same disk. The test asserts the two records are equal and, if not,
shows them side by side, step by step.

One runner process per (side, user) runs every case, in parallel; the parametrised tests compare
cached results. ``test_runner_is_deterministic`` runs the suite on a second plain directory and
demands the same records: a case that could differ between two plain directories proves nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import posix_cases
from tests.conftest import Session
from tests.mounting import Mount
from tests.posix_cases import BOTH, CASES, IDENTITIES

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

RUNNER = posix_cases.__file__
RUN_TIMEOUT = 120.0
SEC_UID = IDENTITIES["user"][0]

MAIN = [name for name in CASES]
SEC = [name for name, c in CASES.items() if c.family == "sec"]


def params(names: list[str]) -> list[Any]:
    out = []
    for name in names:
        c = CASES[name]
        marks = [pytest.mark.xfail(reason=c.xfail, strict=False)] if c.xfail else []
        out += [pytest.param(name, user, id=f"{name}-{user}", marks=marks) for user in c.users]
    return out


# -- sides and runs -------------------------------------------------------------------------------

Steps = list[list[object]]


@dataclass
class Run:
    """One runner process: every case of one side, as one user. Its output goes to a file."""

    side: str
    user: str
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    deadline: float = field(default_factory=lambda: time.monotonic() + RUN_TIMEOUT)
    results: dict[str, Steps] | None = None
    problem: str = ""

    def finish(self) -> dict[str, Steps]:
        if self.results is not None:
            return self.results
        try:
            self.proc.wait(timeout=max(0.1, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.problem = f"the runner was killed after {RUN_TIMEOUT:.0f}s"
        if self.proc.returncode and not self.problem:
            self.problem = f"the runner exited with {self.proc.returncode}"
        if self.problem:
            self.problem += ": " + self.err.read_text()[-3000:]
        self.results = {}
        for line in self.out.read_text().splitlines():
            record = json.loads(line)
            self.results[record["case"]] = record["steps"]
        return self.results


class Sides:
    """Directories prepared alike, and a runner per (side, user) started on each, all in parallel."""

    def __init__(self, root: Path, names: list[str]) -> None:
        self.root = root
        self.names = names
        self.logs = plain_dir(root / "logs")
        self.runs: dict[tuple[str, str], Run] = {}
        self.mount: Mount | None = None

    def base(self, name: str) -> Path:
        """A directory with the same case directories as every other base."""
        path = plain_dir(self.root / name)
        prepare(path, self.names)
        return path

    def start(self, side: str, base: Path) -> None:
        for user in BOTH:
            names = [n for n in self.names if user in CASES[n].users]
            out, err = self.logs / f"{side}-{user}.jsonl", self.logs / f"{side}-{user}.err"
            with out.open("wb") as stdout, err.open("wb") as stderr:
                command = [sys.executable, "-I", "-B", RUNNER, str(base), user, *names]
                proc = subprocess.Popen(command, stdout=stdout, stderr=stderr)
            self.runs[(side, user)] = Run(side, user, proc, out, err)

    def steps(self, side: str, user: str, name: str) -> Steps:
        run = self.runs[(side, user)]
        results = run.finish()
        if name not in results:
            pytest.fail(f"{side}: the runner never reported {name} as {user}. {run.problem}", pytrace=False)
        return results[name]

    def finish(self) -> None:
        for run in self.runs.values():
            run.finish()


def prepare(base: Path, names: list[str]) -> None:
    """Each case's directory, for each of its users: mode 0755, owned by the user."""
    for name in names:
        for user in CASES[name].users:
            uid, gid, _ = IDENTITIES[user]
            d = base / f"{name}-{user}"
            d.mkdir()
            os.chown(d, uid, gid)
            d.chmod(0o755)


def plain_dir(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o777)
    return path


@contextlib.contextmanager
def reachable_root() -> Iterator[Path]:
    """A directory every user can reach (pytest's own tmp is 0700 root), removed at the end."""
    root = Path(tempfile.mkdtemp(prefix="wtfs-posix-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def workspace_mount(root: Path, sides: Sides, name: str, options: str) -> Iterator[Mount]:
    """Mount a session whose workspace is a prepared base; run the cases in it; unmount."""
    session = Session(root, root / "cache")
    workspace = sides.base("workspace")
    try:
        mount = session.mount(session.spec([], name=name, workspace=str(workspace)), options)
        sides.mount = mount
        sides.start("mount", mount.path / "workspace")
        yield mount
    finally:
        sides.finish()  # nothing may still be using the mount
        session.close()


@pytest.fixture(scope="module")
def oracles() -> Iterator[Sides]:
    """The oracle and its twin: plain directories on the disk the workspace is on."""
    with reachable_root() as root:
        sides = Sides(root, MAIN)
        sides.start("oracle", sides.base("oracle"))
        sides.start("twin", sides.base("twin"))
        yield sides
        sides.finish()


@pytest.fixture(scope="module")
def mounted(oracles: Sides) -> Iterator[Mount]:
    """The workspace of a mount made with ``-o allow_other``, its cases run alongside the oracles'."""
    with workspace_mount(oracles.root, oracles, "posix", "allow_other") as mount:
        yield mount


@pytest.fixture(scope="module")
def sec_sides() -> Iterator[Sides]:
    """A second mount, ``-o allow_other,uid=12345``: what users create must still be theirs."""
    with reachable_root() as root:
        sides = Sides(root, SEC)
        sides.start("oracle", sides.base("oracle"))
        with workspace_mount(root, sides, "sec", f"allow_other,uid={SEC_UID}"):
            yield sides


# -- comparing ------------------------------------------------------------------------------------


def render(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def diff(name: str, user: str, want: Steps, got: Steps, sides: tuple[str, str] = ("oracle", "mount")) -> str:
    """The two records step by step: equal steps on one line, differing ones with both values."""
    who = f"{user} (uid {IDENTITIES[user][0]})"
    lines = [f"{name} as {who}: the {sides[1]} differs from the {sides[0]} (plain directory)", ""]
    width = len(sides[1]) + 1
    for i in range(max(len(want), len(got))):
        w = want[i] if i < len(want) else None
        g = got[i] if i < len(got) else None
        if w == g:
            assert w is not None
            lines.append(f"    {i + 1:>3} {w[0]}: {render(w[1])}")
            continue
        if w is not None and g is not None and w[0] == g[0]:
            lines.append(f"  ✗ {i + 1:>3} {w[0]}")
            lines.append(f"          {sides[0] + ':':<{width}} {render(w[1])}")
            lines.append(f"          {sides[1] + ':':<{width}} {render(g[1])}")
            continue
        lines.append(f"  ✗ {i + 1:>3}")
        for side, step in zip(sides, (w, g), strict=True):
            shown = "(no such step)" if step is None else f"{step[0]}: {render(step[1])}"
            lines.append(f"          {side + ':':<{width}} {shown}")
    return "\n".join(lines)


def mismatch(sides: Sides, name: str, user: str) -> str:
    """How the mount's record differs from the oracle's, or "" if they are equal."""
    want = sides.steps("oracle", user, name)
    got = sides.steps("mount", user, name)
    return diff(name, user, want, got) if want != got else ""


def compare(sides: Sides, name: str, user: str) -> None:
    problem = mismatch(sides, name, user)
    if problem:
        pytest.fail(problem, pytrace=False)


@pytest.mark.parametrize(("name", "user"), params(MAIN))
def test_posix(oracles: Sides, mounted: Mount, name: str, user: str) -> None:
    compare(oracles, name, user)


@pytest.mark.parametrize(("name", "user"), params(SEC))
def test_posix_with_uid_option(sec_sides: Sides, name: str, user: str) -> None:
    compare(sec_sides, name, user)


def test_runner_is_deterministic(oracles: Sides) -> None:
    """Two plain directories give the same records, and no case trips over its own code."""
    problems = []
    for name in MAIN:
        for user in CASES[name].users:
            one = oracles.steps("oracle", user, name)
            two = oracles.steps("twin", user, name)
            errors = [step for step in one if step[0] == "!runner-error"]
            if errors:
                problems.append(f"{name} as {user}: {errors}")
            elif not one:
                problems.append(f"{name} as {user}: no steps")
            elif one != two:
                problems.append(diff(name, user, one, two, ("oracle", "twin")))
    assert not problems, "\n\n".join(problems)


def mount_options(mount: Mount) -> list[str]:
    target = str(mount.path.resolve())
    with open("/proc/self/mountinfo") as table:
        return next(line.split()[5] for line in table if line.split()[4] == target).split(",")


def test_mount_is_nosuid_nodev(mounted: Mount, sec_sides: Sides) -> None:
    """Users can create setuid files in the workspace: the mounts must ignore setuid bits and devices."""
    for mount in (mounted, sec_sides.mount):
        assert mount is not None
        options = mount_options(mount)
        assert "nosuid" in options and "nodev" in options, (mount.path, options)
