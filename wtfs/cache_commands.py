"""Operator commands on the host cache: status, cache ls/gc/evict, prefetch.

They read and change the shared SQLite records directly (process-safe, like a second daemon)
and reach a daemon only through its mount (xattrs), so they work for any user who sees both.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import runtime
from .config import CacheSettings, default_cache_dir
from .dm.cache import HostCache
from .dm.gc import collect, reconcile
from .dm.records import CacheRecords
from .dm.report import status_report
from .errors import Busy, NotFound
from .log import mask_credentials
from .units import format_size
from .views.data import OBJECT_XATTR, PREFETCH_XATTR, STATE_XATTR


def cache_for(mountpoint: str | None, cache_dir: str | None) -> tuple[HostCache, str | None]:
    """The host cache of a mount (and its session), of --cache-dir, or the default one."""
    if mountpoint is not None:
        record = runtime.read_record(os.path.abspath(mountpoint))
        if record is None:
            raise NotFound(f"{mountpoint}: no wtfs daemon serves this mountpoint")
        return HostCache(Path(record["cache_dir"])), str(record["session"])
    return HostCache(Path(cache_dir) if cache_dir else default_cache_dir()), None


def open_records(cache: HostCache) -> CacheRecords:
    if not cache.db_path.exists():
        raise NotFound(f"{cache.root}: no wtfs cache here")
    return CacheRecords(cache.db_path, lease=30.0)


# -- status ---------------------------------------------------------------------------------


def render_text(report: dict[str, Any]) -> str:
    cache = report["cache"]
    capacity = cache["capacity"]
    share = f" ({100 * cache['usage'] / capacity:.0f}%)" if capacity else ""
    lines = [
        f"cache {cache['dir']}: {format_size(cache['usage'])} of "
        f"{format_size(capacity) if capacity else '?'}{share}, {cache['objects']} objects"
    ]
    lines.append(f"sessions ({len(report['sessions'])}):")
    lines += [f"  {s['sessionId']}  {s['mountpoint']}  pid {s['pid']}" for s in report["sessions"]]
    lines.append(f"locks ({len(report['locks'])}):")
    lines += [f"  {lk['itemId'][:16]}  session {lk['sessionId']}  owner {lk['ownerId']}" for lk in report["locks"]]
    running = [t for t in report["transfers"] if t["status"] in (0, 1, 2)]
    lines.append(f"transfers ({len(running)} running, {len(report['transfers'])} recorded):")
    for t in report["transfers"][-20:]:
        size = format_size(t["size"]) if t["size"] else "?"
        pct = f"{t['percent']:5.1f}%" if t["percent"] is not None else "     ?"
        eta = f"  ETA {t['eta']:.0f}s" if t["eta"] is not None else ""
        error = f"  {t['error']}" if t["error"] else ""
        lines.append(
            f"  #{t['id']:<5} {t['statusName']:<18} {pct}  {format_size(t['transferred'])}/{size}"
            f"  {format_size(t['rate'])}/s{eta}{error}"
        )
    return "\n".join(lines)


def show_status(mountpoint: str | None, cache_dir: str | None, as_json: bool, watch: bool, interval: float) -> int:
    record = runtime.read_record(os.path.abspath(mountpoint)) if mountpoint else None
    if record is not None and record.get("mode") == "wholetale":
        # the server owns transfers and locks: ask it through the mount
        assert mountpoint is not None
        print((Path(mountpoint) / ".wtfs" / "status.json").read_text(), end="")
        return 0
    cache, session = cache_for(mountpoint, cache_dir)
    records = open_records(cache)
    if not watch:
        report = status_report(records, cache, session)
        print(json.dumps(report, indent=1) if as_json else render_text(report))
        return 0
    if sys.stdout.isatty() and not as_json:
        return _watch_live(records, cache, session, interval)
    try:
        while True:
            report = status_report(records, cache, session)
            print(json.dumps(report) if as_json else render_text(report) + "\n", flush=True)
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0


def _watch_live(records: CacheRecords, cache: HostCache, session: str | None, interval: float) -> int:
    from rich.console import Group
    from rich.live import Live
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    def view() -> Group:
        report = status_report(records, cache, session)
        table = Table("transfer", "progress", "%", "bytes", "rate", "ETA", box=None)
        for t in report["transfers"]:
            if t["status"] not in (0, 1, 2):
                continue
            total = t["size"] or max(t["transferred"], 1)
            table.add_row(
                f"#{t['id']} {t['objectId'][:12]}",
                ProgressBar(total=total, completed=t["transferred"], width=30),
                f"{t['percent'] or 0:.1f}",
                f"{format_size(t['transferred'])}/{format_size(total)}",
                f"{format_size(t['rate'])}/s",
                f"{t['eta']:.0f}s" if t["eta"] is not None else "-",
            )
        summary = render_text({**report, "transfers": []}).rsplit("\ntransfers", 1)[0]
        return Group(Text(summary), table)

    try:
        with Live(view(), refresh_per_second=4) as live:
            while True:
                time.sleep(interval)
                live.update(view())
    except KeyboardInterrupt:
        return 0


# -- cache ----------------------------------------------------------------------------------


def cache_ls(cache_dir: str | None, as_json: bool) -> int:
    cache, _ = cache_for(None, cache_dir)
    objects = open_records(cache).objects()
    objects = [{**o, "source": mask_credentials(str(o["source"]))} for o in objects]
    if as_json:
        print(json.dumps(objects, indent=1))
        return 0
    for o in objects:
        size = format_size(o["size"]) if isinstance(o["size"], int) else "?"
        print(f"{str(o['id'])[:16]}  {o['status']:<12} {size:>10}  locks {o['lock_count']}  {o['source']}")
    return 0


def cache_gc(cache_dir: str | None, dry_run: bool) -> int:
    cache, _ = cache_for(None, cache_dir)
    records = open_records(cache)
    capacity = int(records.setting("capacity") or CacheSettings().capacity)
    settings = CacheSettings(capacity=capacity)
    if not dry_run:
        fixed = reconcile(cache, records)
        if fixed.missing or fixed.strays:
            print(
                f"reconciled: {len(fixed.missing)} records without a file, {len(fixed.strays)} files without a record"
            )
    report = collect(cache, records, settings, force=True, dry_run=dry_run)
    verb = "would evict" if dry_run else "evicted"
    print(
        f"{verb} {len(report.evicted)} copies: {format_size(report.usage_before)} -> "
        f"{format_size(report.usage_after)} of {format_size(capacity)}"
    )
    return 0


def cache_evict(paths: list[str]) -> int:
    for path in paths:
        object_id = _xattr(path, OBJECT_XATTR)
        cache, _ = cache_for(_mountpoint_of(path), None)
        records = open_records(cache)
        if records.evict(object_id, cache.remove) is None:
            if records.locks(object_id):
                raise Busy(f"{path}: locked, not evicted")
            raise NotFound(f"{path}: not cached")
        print(f"evicted {path}")
    return 0


# -- prefetch -------------------------------------------------------------------------------


def _xattr(path: str, name: str) -> str:
    try:
        return os.getxattr(path, name).decode()
    except OSError as exc:
        raise NotFound(f"{path}: not a file of a wtfs data set ({exc.strerror})") from None


def _mountpoint_of(path: str) -> str:
    mountpoint = runtime.mountpoint_of(path)
    if mountpoint is None:
        raise NotFound(f"{path}: not inside a wtfs mount")
    return str(mountpoint)


def _files(paths: list[str]) -> Iterator[str]:
    for path in paths:
        if os.path.isdir(path):
            for directory, _, names in os.walk(path):
                yield from (os.path.join(directory, name) for name in sorted(names))
        elif os.path.exists(path):
            yield path
        else:
            raise NotFound(f"{path}: no such file or directory")


def prefetch(paths: list[str], wait: bool, interval: float = 0.2) -> int:
    files = list(_files(paths))
    for path in files:
        _xattr(path, STATE_XATTR)  # refuse paths outside a data set before starting anything
    for path in files:
        os.setxattr(path, PREFETCH_XATTR, b"1")
    print(f"prefetching {len(files)} file(s)")
    if not wait:
        return 0
    pending = set(files)
    failed: list[str] = []
    last = ""
    while pending:
        for path in sorted(pending):
            state = _xattr(path, STATE_XATTR)
            if state == "cached":
                pending.discard(path)
            elif state.startswith("failed"):
                pending.discard(path)
                failed.append(f"{path}: {state}")
        line = f"{len(files) - len(pending)}/{len(files)} landed"
        if line != last:
            print(line, flush=True)
            last = line
        if pending:
            time.sleep(interval)
    for failure in failed:
        print(f"wtfs: {failure}", file=sys.stderr)
    return 1 if failed else 0


__all__ = ["cache_evict", "cache_gc", "cache_ls", "prefetch", "show_status"]
