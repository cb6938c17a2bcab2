"""Garbage collection of the host cache, per the reference settings.

Usage is the bytes on disk of the files in ``objects/``, never catalog sizes. Past
``gc_start_fraction`` of the capacity, unlocked copies are evicted least recently unlocked
first until usage is under ``gc_end_fraction``. A locked copy is never evicted. Synchronous:
the data manager runs it in a worker thread.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..config import CacheSettings
from ..errors import NoSpace
from ..units import format_size
from .cache import HostCache
from .records import CacheRecords

log = logging.getLogger(__name__)


@dataclass
class GcReport:
    usage_before: int
    usage_after: int
    evicted: list[str] = field(default_factory=list)


def disk_usage(cache: HostCache) -> tuple[int, dict[str, int]]:
    """Bytes on disk of every complete copy, in total and per object id."""
    sizes: dict[str, int] = {}
    for shard in os.scandir(cache.objects):
        if shard.is_dir(follow_symlinks=False):
            for entry in os.scandir(shard.path):
                try:
                    sizes[entry.name] = entry.stat(follow_symlinks=False).st_blocks * 512
                except FileNotFoundError:
                    continue
    return sum(sizes.values()), sizes


def collect(
    cache: HostCache,
    records: CacheRecords,
    settings: CacheSettings,
    force: bool = False,
    dry_run: bool = False,
) -> GcReport:
    """One GC pass: nothing below the start fraction unless ``force``."""
    usage, sizes = disk_usage(cache)
    report = GcReport(usage, usage)
    if not force and usage <= settings.gc_start_fraction * settings.capacity:
        return report
    target = settings.gc_end_fraction * settings.capacity
    _evict_until(cache, records, sizes, report, target, dry_run)
    if report.evicted:
        log.info(
            "gc: evicted %d copies, %s -> %s of %s",
            len(report.evicted),
            format_size(report.usage_before),
            format_size(report.usage_after),
            format_size(settings.capacity),
        )
    return report


def make_room(
    cache: HostCache, records: CacheRecords, settings: CacheSettings, object_id: str, needed: int
) -> GcReport:
    """Before a transfer of ``needed`` bytes: evict so it fits, or ENOSPC if it never can."""
    pinned = records.pinned_bytes(besides=object_id)
    if pinned + needed > settings.capacity:
        raise NoSpace(
            f"{format_size(needed)} does not fit: {format_size(pinned)} of the cache's"
            f" {format_size(settings.capacity)} is locked or in transfer"
        )
    usage, sizes = disk_usage(cache)
    report = GcReport(usage, usage)
    if usage + needed > settings.capacity:
        _evict_until(cache, records, sizes, report, settings.capacity - needed, dry_run=False)
    return report


def _evict_until(
    cache: HostCache, records: CacheRecords, sizes: dict[str, int], report: GcReport, target: float, dry_run: bool
) -> None:
    for object_id in records.eviction_candidates():
        if report.usage_after <= target:
            break
        freed = sizes.get(object_id, 0) if dry_run else records.evict(object_id, cache.remove)
        if freed is not None:
            report.evicted.append(object_id)
            report.usage_after -= freed
