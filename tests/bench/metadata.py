"""Bench rows: metadata (run by tests/bench/run.py after its own sections).

`ls -l` of one directory of 5,000 files on wtfs (data/ and workspace/) against `find -ls` on
libfuse's passthrough_ll over the same directory, each on a fresh mount (cold kernel caches),
then again on the same mount. `ls -l` asks more than `find -ls` does (a security label and an
ACL per file): the target says wtfs answers those so cheaply that it costs at most twice a plain
walk. Again, passthrough_ll answers one READDIRPLUS batch and then plain READDIRs (no stat per
entry); pyfuse3 always asks for READDIRPLUS, so wtfs gives attributes for every entry each time
(workspace/: one fstatat per entry).
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.bench.run import REPEAT, WORK, passthrough, ratio_line, timed, workspace_mount, wtfs_mount

COUNT = 5_000


def _tree() -> Path:
    """One directory of COUNT small files, made once and reused across runs."""
    tree = WORK / "ls5k"
    if not (tree / f"f{COUNT - 1:04d}").exists():
        tree.mkdir(parents=True, exist_ok=True)
        for i in range(COUNT):
            (tree / f"f{i:04d}").write_bytes(b"z" * (i % 100))
    return tree


def _run(*argv: str) -> None:
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)


def _first_and_again(
    mounted: Callable[[], contextlib.AbstractContextManager[Path]], command: Callable[[Path], None]
) -> tuple[float, float]:
    """Seconds of ``command`` on a fresh mount (cold kernel caches), then of the same again."""
    with mounted() as directory:
        return timed(lambda: command(directory)), timed(lambda: command(directory))


@contextlib.contextmanager
def _data(tree: Path) -> Iterator[Path]:
    with wtfs_mount("ls5k", [{"mountPath": "/ls5k", "url": str(tree)}], WORK / "cache-ls5k") as data:
        yield data / "ls5k"


@contextlib.contextmanager
def _workspace(tree: Path) -> Iterator[Path]:
    with workspace_mount("ls5kws", tree) as root:
        yield root / "workspace"


def bench_ls_l() -> list[str]:
    """Each round mounts each side afresh, in turn, rotated (as ``interleaved_medians`` does)."""
    tree = _tree()
    ls_l = lambda d: _run("ls", "-l", str(d))  # noqa: E731
    sides = [
        lambda: _first_and_again(
            lambda: passthrough(tree, WORK / "mnt-pass-ls5k"), lambda d: _run("find", str(d), "-ls")
        ),
        lambda: _first_and_again(lambda: _data(tree), ls_l),
        lambda: _first_and_again(lambda: _workspace(tree), ls_l),
    ]
    runs: list[list[tuple[float, float]]] = [[] for _ in sides]
    for round_number in range(REPEAT):
        for step in range(len(sides)):
            index = (step + round_number) % len(sides)
            runs[index].append(sides[index]())
    (theirs_cold, theirs_warm), data, workspace = (
        (statistics.median(r[0] for r in side), statistics.median(r[1] for r in side)) for side in runs
    )
    lines = []
    for where, (cold, warm) in (("data/", data), ("workspace/", workspace)):
        for when, ours, theirs in (("cold", cold, theirs_cold), ("again", warm, theirs_warm)):
            label = f"ls -l 5,000 files, {where}, {when}, vs find -ls passthrough_ll"
            lines.append(ratio_line(label, ours, theirs, "≤ 2×", ours / theirs <= 2))
    return lines


SECTIONS: list[Callable[[], list[str]]] = [bench_ls_l]
