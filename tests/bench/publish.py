"""Bench rows: publish (run by tests/bench/run.py after its own sections).

`wtfs publish` against `girder-client upload` of the same tree to the same server (the test
fixture's Girder 5, one process), each into a fresh folder, taken in turn: one 1 GiB file (medians
of three), and 5,000 small files in 10 directories (once each: minutes each, as the fixture's
in-memory database still scans all items for each new item's name check). Both commands are timed
whole, start-up included, as a user would see them; both get the API key from the environment.
wtfs does more per file (a sha256 and ``meta.sha256``/``meta.size``/``meta.wtfs`` on every item,
a journal): the target says it costs nothing overall. Each row is followed by the requests per
file each side made, counted by method and route by a wrapper around its HTTP library.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.bench.run import WORK, interleaved_medians, make_big_file, ratio_line, timed

SMALL_FILES = 5_000
SMALL_DIRS = 10
GIRDER_CLIENT = Path(sys.executable).parent / "girder-client"
#: Runs ``wtfs`` or ``girder-client`` (argv: OUT, which, its arguments) counting its HTTP requests
#: by method and route, written to OUT as JSON at exit: the bench's own wrapper, nothing in wtfs.
COUNTING = r"""
import atexit, collections, json, re, sys
from urllib.parse import urlsplit
out, which, *args = sys.argv[1:]
counts = collections.Counter()
def note(method, url):
    path = urlsplit(str(url)).path.split("/api/v1", 1)[-1]
    counts[method + " " + re.sub(r"/[0-9a-f]{24}(?=/|$)", "/{id}", path)] += 1
atexit.register(lambda: open(out, "w").write(json.dumps(counts)))
if which == "wtfs":
    import httpx
    send = httpx.AsyncClient.send
    async def counted(self, request, **kwargs):
        note(request.method, request.url)
        return await send(self, request, **kwargs)
    httpx.AsyncClient.send = counted
    from wtfs.cli import main
else:
    import requests
    send = requests.Session.send
    def counted(self, request, **kwargs):
        note(request.method, request.url)
        return send(self, request, **kwargs)
    requests.Session.send = counted
    from girder_client.cli import main
sys.argv = [which, *args]
sys.exit(main())
"""


def _small_tree() -> Path:
    """5,000 files of 1 to 4 KiB in 10 directories, made once and reused across runs."""
    tree = WORK / "pub-5k"
    last = tree / f"d{SMALL_DIRS - 1}" / f"f{SMALL_FILES - 1:04d}.txt"
    if not last.exists():
        for i in range(SMALL_FILES):
            path = tree / f"d{i % SMALL_DIRS}" / f"f{i:04d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(1024 + (i * 37) % 3072))
    return tree


#: The last measurement's HTTP requests by method and route, for each side.
CALLS: dict[str, Counter[str]] = {}


def _publish_once(side: str, command: Callable[[str, str], list[str]], key_variable: str) -> float:
    """Seconds of ``side`` (wtfs or girder-client) with the arguments ``command(url, folder)``
    publishing into a new folder of alice's, on a Girder started for this measurement alone
    (deleting 5,000 items from its in-memory database takes longer than starting a new one, and
    each measurement starts from the same empty server). The command finds alice's API key in
    ``key_variable``; its requests are counted into CALLS."""
    from tests.girder.fixtures import KEY_ENV, running_girder

    root = WORK / "pub-girder"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    try:
        with running_girder(root) as g:
            me = g.alice.get("user/me")["_id"]
            folder = g.alice.createFolder(me, "bench", parentType="user")["_id"]
            calls = root / "calls.json"
            argv = [sys.executable, "-c", COUNTING, str(calls), side, *command(g.url, folder)]
            env = {**os.environ, key_variable: os.environ[KEY_ENV], "XDG_STATE_HOME": str(WORK / "pub-state")}
            seconds = timed(lambda: subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True))
            CALLS[side] = Counter(json.loads(calls.read_text()))
            return seconds
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _measures(source: Path) -> list[Callable[[], float]]:
    """wtfs publish, girder-client upload: each with the key in an environment variable."""
    from tests.girder.fixtures import KEY_ENV

    def wtfs(url: str, folder: str) -> list[str]:
        shutil.rmtree(WORK / "pub-state", ignore_errors=True)  # a fresh journal: nothing to skip
        return ["publish", str(source), "--girder-url", url, "--api-key-env", KEY_ENV, "--folder-id", folder]

    def girder_client(url: str, folder: str) -> list[str]:
        return ["--api-url", url, "upload", "--parent-type", "folder", folder, str(source)]

    return [
        lambda: _publish_once("wtfs", wtfs, KEY_ENV),
        lambda: _publish_once("girder-client", girder_client, "GIRDER_API_KEY"),
    ]


def bench_publish() -> list[str]:
    big, small = make_big_file(), _small_tree()
    ours, theirs = interleaved_medians(*_measures(big))
    label = "publish 1 GiB file vs girder-client upload"
    lines = [ratio_line(label, ours, theirs, "≤ 1.0×", ours <= theirs, _rate(ours, theirs)), _calls(1)]
    ours, theirs = (measure() for measure in _measures(small))  # once: a minute or more each
    label = f"publish {SMALL_FILES:,} small files vs girder-client upload"
    lines += [ratio_line(label, ours, theirs, "≤ 1.0×", ours <= theirs, _per_file(ours, theirs)), _calls(SMALL_FILES)]
    return lines


def _calls(files: int) -> str:
    """Requests per file of each side (routes used for at least one file in ten)."""

    def side(name: str) -> str:
        counts = CALLS[name]
        routes = ", ".join(f"{route} {n / files:.2f}" for route, n in counts.most_common() if n * 10 >= files)
        return f"{name} {sum(counts.values()) / files:.2f} ({routes})"

    return f"    requests per file: {side('wtfs')}; {side('girder-client')}"


def _rate(ours: float, theirs: float) -> str:
    return f"(MiB/s: wtfs {1024 / ours:.0f}, girder-client {1024 / theirs:.0f})"


def _per_file(ours: float, theirs: float) -> str:
    return f"(ms/file: wtfs {1000 * ours / SMALL_FILES:.1f}, girder-client {1000 * theirs / SMALL_FILES:.1f})"


SECTIONS: list[Callable[[], list[str]]] = [bench_publish]
