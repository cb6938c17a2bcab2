"""Operator commands on the host cache: status, cache ls/gc/evict, prefetch.

``cache ls|gc|evict`` read and change the shared SQLite records directly (process-safe, like a
second daemon). ``status``, ``check`` and ``prefetch`` of a mount ask the mount itself
(``.wtfs/status.json``, xattrs), so they work for any user who may enter it, not only its owner.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import mounttable, runtime
from .config import CacheSettings, default_cache_dir
from .dm.cache import HostCache
from .dm.gc import collect, reconcile
from .dm.records import CacheRecords
from .dm.report import status_report
from .errors import AccessDenied, Busy, NotFound
from .log import mask_credentials
from .units import format_size
from .views.data import OBJECT_XATTR, PREFETCH_XATTR, STATE_XATTR


def locate(mountpoint: str | None) -> Path | None:
    """The wtfs mount a command is about: the one named (which must be one), else the one the
    current directory is in, else None (the host cache itself). From the mount table, so it
    works for any user, not only the mount's owner."""
    if mountpoint is None:
        return mounttable.wtfs_mount_of(os.getcwd())
    path = Path(os.path.abspath(mountpoint))
    if mounttable.mount_fstype(str(path)) != mounttable.FSTYPE:
        raise NotFound(f"{mountpoint}: not a wtfs mount")
    return path


def mount_status(mountpoint: Path) -> dict[str, Any]:
    """The mount's ``.wtfs/status.json``, or one line saying why this user cannot read it."""
    try:
        return mounttable.read_status(mountpoint)
    except OSError as exc:
        raise AccessDenied(f"{mountpoint}: {mounttable.unreadable(mountpoint, exc)}") from None
    except ValueError:
        raise NotFound(f"{mountpoint}: its .wtfs/status.json is not a wtfs status") from None


def cache_for(mountpoint: str | None, cache_dir: str | None) -> tuple[HostCache, str | None]:
    """The host cache to work on, and the session it is looked at for: ``--cache-dir``, else
    that of the mount named or found from the current directory (its owner's record, or what the
    mount says in ``.wtfs/``), else the default one."""
    if cache_dir:
        return HostCache(Path(cache_dir)), None
    mount = locate(mountpoint)
    if mount is None:
        return HostCache(default_cache_dir()), None
    record = runtime.read_record(str(mount))
    if record is not None:
        return HostCache(Path(record["cache_dir"])), str(record["session"])
    status = mount_status(mount)
    cache = status.get("cache")
    if not isinstance(cache, dict) or not cache.get("dir"):
        raise NotFound(f"{mount}: the mount names no host cache (a server keeps its data)")
    return HostCache(Path(cache["dir"])), status.get("session")


def open_records(cache: HostCache) -> CacheRecords:
    try:
        os.stat(cache.db_path)
    except PermissionError:
        raise AccessDenied(f"{cache.root}: this user (uid {os.getuid()}) may not read this cache") from None
    except OSError:
        raise NotFound(f"{cache.root}: no wtfs cache here") from None
    if not os.access(cache.db_path, os.R_OK | os.W_OK):  # 0600 even with cache_group: it holds sources
        raise AccessDenied(
            f"{cache.root}: this user (uid {os.getuid()}) may not read its records (its owner or root may)"
        )
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
            f"  {format_size(t['rate'])}/s{eta}  {_name(t)}{error}"
        )
    warnings = report.get("warnings") or []
    if warnings:
        lines.append(f"warnings at mount ({len(warnings)}):")
        lines += [f"  {warning}" for warning in warnings]
    if report.get("log"):
        lines.append(f"log: {report['log']}")
    return "\n".join(lines)


def show_status(mountpoint: str | None, cache_dir: str | None, as_json: bool, watch: bool, interval: float) -> int:
    produce = reporter(mountpoint, cache_dir)
    if not watch:
        print(_render(produce(), as_json))
        return 0
    if sys.stdout.isatty() and not as_json:
        return _watch_live(produce, interval)
    try:
        while True:
            print(_render(produce(), as_json, indent=None) + ("" if as_json else "\n"), flush=True)
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0


def reporter(mountpoint: str | None, cache_dir: str | None) -> Callable[[], dict[str, Any]]:
    """Where a status comes from. A mount (named, or the one the current directory is in,
    unless ``--cache-dir``): what it says in ``.wtfs/status.json``, which any user who may enter
    it can read, with its own transfers only. Otherwise the host cache's records."""
    mount = None if cache_dir else locate(mountpoint)
    if mount is None:
        cache = HostCache(Path(cache_dir) if cache_dir else default_cache_dir())
        records = open_records(cache)
        return lambda: status_report(records, cache)
    record = runtime.read_record(str(mount))  # only its owner has it: it adds where the log is

    def from_mount() -> dict[str, Any]:
        report = mount_status(mount)
        session = report.get("session")
        if session is not None and report.get("mode") != "wholetale" and isinstance(report.get("transfers"), list):
            report["transfers"] = [t for t in report["transfers"] if t.get("sessionId") == session]
        if record is not None and record.get("log"):
            report["log"] = record["log"]
        return report

    return from_mount


def _render(report: dict[str, Any], as_json: bool, indent: int | None = 1) -> str:
    if as_json or report.get("mode") == "wholetale":  # a server's data manager reports in its own terms
        return json.dumps(report, indent=indent)
    return render_text(report)


def _watch_live(produce: Callable[[], dict[str, Any]], interval: float) -> int:
    from rich.console import Group
    from rich.live import Live
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    def view() -> Group:
        report = produce()
        if report.get("mode") == "wholetale":
            return Group(Text(_render(report, False)))
        table = Table("transfer", "progress", "%", "bytes", "rate", "ETA", box=None)
        for t in report["transfers"]:
            if t["status"] not in (0, 1, 2):
                continue
            total = t["size"] or max(t["transferred"], 1)
            table.add_row(
                f"#{t['id']} {_name(t)}",
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


def _name(transfer: dict[str, Any]) -> str:
    """A transfer as the user knows it: its path in the mount, else its object id."""
    return str(transfer.get("path") or f"object {transfer['objectId'][:16]}")


# -- cache ----------------------------------------------------------------------------------


def cache_ls(cache_dir: str | None, as_json: bool, mountpoint: str | None = None) -> int:
    cache, _ = cache_for(mountpoint, cache_dir)
    objects = open_records(cache).objects()
    objects = [{**o, "source": mask_credentials(str(o["source"]))} for o in objects]
    if as_json:
        print(json.dumps(objects, indent=1))
        return 0
    for o in objects:
        size = format_size(o["size"]) if isinstance(o["size"], int) else "?"
        print(f"{str(o['id'])[:16]}  {o['status']:<12} {size:>10}  locks {o['lock_count']}  {o['source']}")
    return 0


def cache_gc(cache_dir: str | None, dry_run: bool, mountpoint: str | None = None) -> int:
    cache, _ = cache_for(mountpoint, cache_dir)
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
        cache, _ = cache_for(str(_mountpoint_of(path)), None)
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


def _mountpoint_of(path: str) -> Path:
    mountpoint = mounttable.wtfs_mount_of(path)
    if mountpoint is None:
        raise NotFound(f"{path}: not inside a wtfs mount")
    return mountpoint


def _files(paths: list[str]) -> Iterator[str]:
    for path in paths:
        try:
            is_dir = stat.S_ISDIR(os.stat(path).st_mode)
        except FileNotFoundError:
            raise NotFound(f"{path}: no such file or directory") from None
        except PermissionError as exc:
            mount = mounttable.wtfs_mount_of(path)
            raise AccessDenied(f"{path}: {mounttable.unreadable(mount, exc) if mount else exc.strerror}") from None
        if is_dir:
            for directory, _, names in os.walk(path):
                yield from (os.path.join(directory, name) for name in sorted(names))
        else:
            yield path


def prefetch(paths: list[str], wait: bool, interval: float = 0.2) -> int:
    """Start the transfers (reading ``user.wtfs.prefetch``: any user who may read the files
    may); with ``wait``, a progress bar until each has landed or failed, exit 1 if any failed."""
    files = list(_files(paths))
    for path in files:
        _xattr(path, STATE_XATTR)  # refuse paths outside a data set before starting anything
    for path in files:
        _xattr(path, PREFETCH_XATTR)
    print(f"prefetching {len(files)} file(s)", flush=True)
    if not wait:
        return 0
    states = _wait_for_landing(files, interval)
    failed = {path: state for path, state in states.items() if state.startswith("failed")}
    print(f"{len(files) - len(failed)}/{len(files)} landed" + (f", {len(failed)} failed" if failed else ""))
    for path, state in failed.items():
        print(f"wtfs: {path}: {state}", file=sys.stderr)
    return 1 if failed else 0


def _wait_for_landing(files: list[str], interval: float) -> dict[str, str]:
    """Poll each file's state until it is settled (``cached``, ``local``, ``failed…``); one bar
    for them all."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    states = dict.fromkeys(files, "remote")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    console = Console(stderr=True)
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("landing", total=len(files))
        while True:
            for path in files:
                if _settled(states[path]):
                    continue
                states[path] = _xattr(path, STATE_XATTR)
            done = [s for s in states.values() if _settled(s)]
            failed = sum(1 for s in done if s.startswith("failed"))
            moving = sum(_percent(s) for s in states.values() if s.startswith("transferring")) / 100
            note = f" ({failed} failed)" if failed else ""
            progress.update(task, completed=len(done) + moving, description=f"landing{note}")
            if len(done) == len(files):
                return states
            time.sleep(interval)


def _settled(state: str) -> bool:
    """Nothing more will happen to it: cached, a local file (served in place), or failed."""
    return state in ("cached", "local") or state.startswith("failed")


def _percent(state: str) -> float:
    """``transferring 42%`` -> 42.0 (0 when the size is not known yet)."""
    word = state.rsplit(" ", 1)[-1].rstrip("%")
    try:
        return float(word)
    except ValueError:
        return 0.0


__all__ = ["cache_evict", "cache_gc", "cache_ls", "prefetch", "show_status"]
