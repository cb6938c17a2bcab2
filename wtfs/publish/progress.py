"""What a publish shows while it runs: a rich bar on a terminal, JSON heartbeats otherwise.

The heartbeat's fields are the reference's (``n_files_read``, ``n_bytes_read``,
``n_files_processed``, ``n_bytes_processed``, each since the previous heartbeat) plus their
totals, so a supervisor can tell a slow publish from a stuck one.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import trio

FIELDS = ("n_files_read", "n_bytes_read", "n_files_processed", "n_bytes_processed")


@dataclass
class Counters:
    """Read: local bytes hashed or sent. Processed: files finished (uploaded or found in place)
    and the bytes Girder received."""

    n_files_read: int = 0
    n_bytes_read: int = 0
    n_files_processed: int = 0
    n_bytes_processed: int = 0

    def minus(self, other: Counters) -> dict[str, int]:
        return {name: getattr(self, name) - getattr(other, name) for name in FIELDS}


@dataclass
class Tally:
    """The whole run's numbers; the reporters only show them."""

    total_files: int = 0
    total_bytes: int = 0
    counters: Counters = field(default_factory=Counters)
    files_uploaded: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    bytes_done: int = 0  # sizes of the files finished, sent or not: what the bar and ETA show

    def summary(self) -> dict[str, Any]:
        return {
            "files": self.total_files,
            "bytes": self.total_bytes,
            "files_uploaded": self.files_uploaded,
            "files_skipped": self.files_skipped,
            "files_failed": self.files_failed,
            "bytes_uploaded": self.counters.n_bytes_processed,
        }


class Reporter:
    """Silent: the summary line only (stdout not a terminal, no --json)."""

    def __init__(self, tally: Tally, out: TextIO = sys.stdout) -> None:
        self.tally = tally
        self.out = out

    async def run(self) -> None:
        """Shows progress until cancelled."""
        await trio.sleep_forever()

    def finish(self) -> None:
        s = self.tally.summary()
        said = "nothing changed, 0 bytes uploaded" if s["bytes_uploaded"] == 0 else f"{s['bytes_uploaded']} bytes"
        print(
            f"published {s['files'] - s['files_failed']}/{s['files']} files: {s['files_uploaded']} uploaded, "
            f"{s['files_skipped']} already in Girder, {s['files_failed']} failed ({said})",
            file=self.out,
            flush=True,
        )


class JsonReporter(Reporter):
    def __init__(self, tally: Tally, interval: float, out: TextIO = sys.stdout) -> None:
        super().__init__(tally, out)
        self.interval = interval
        self.previous = Counters()

    async def run(self) -> None:
        while True:
            await trio.sleep(self.interval)
            self.heartbeat()

    def heartbeat(self) -> None:
        now = Counters(**asdict(self.tally.counters))
        line = {"event": "heartbeat", "time": round(time.time(), 3), **now.minus(self.previous)}
        line |= {f"total_{name}": value for name, value in asdict(now).items()}
        line |= {"files": self.tally.total_files, "bytes": self.tally.total_bytes}
        self.previous = now
        print(json.dumps(line), file=self.out, flush=True)

    def finish(self) -> None:
        self.heartbeat()
        print(json.dumps({"event": "done", **self.tally.summary()}), file=self.out, flush=True)


class RichReporter(Reporter):
    def __init__(self, tally: Tally) -> None:
        from rich.console import Console  # on a terminal only: rich takes a while to import
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        super().__init__(tally, sys.stdout)
        self.bar = Progress(
            TextColumn("{task.description} {task.fields[files]} files"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stdout),
            transient=True,
        )

    async def run(self) -> None:
        task = self.bar.add_task("publish", total=self.tally.total_bytes, files="")
        with self.bar:
            while True:
                files = f"{self.tally.counters.n_files_processed}/{self.tally.total_files}"
                self.bar.update(task, completed=self.tally.bytes_done, files=files)
                await trio.sleep(0.2)


def reporter(tally: Tally, as_json: bool, interval: float) -> Reporter:
    if as_json:
        return JsonReporter(tally, interval)
    return RichReporter(tally) if sys.stdout.isatty() else Reporter(tally)
