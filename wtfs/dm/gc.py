"""Garbage collection of the host cache, per the reference settings.

Usage is the bytes on disk of the complete copies as recorded when each landed (never catalog
sizes), summed in SQL: nothing here walks the cache directory. Past ``gc_start_fraction`` of
the capacity, unlocked copies are evicted least recently unlocked first (an index query, read
in pages) until usage is under ``gc_end_fraction``. A locked copy is never evicted.
``reconcile`` is the one walk of the disk, for start-up and ``wtfs cache gc``. Synchronous: the
data manager runs all of it in a worker thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..config import CacheSettings
from ..errors import NoSpace
from ..units import format_size
from . import partials
from .cache import HostCache
from .records import CacheRecords

log = logging.getLogger(__name__)

#: Victims read per query: enough for one pass in the usual case, never the whole registry.
VICTIM_PAGE = 64


@dataclass
class GcReport:
    usage_before: int
    usage_after: int
    evicted: list[str] = field(default_factory=list)


@dataclass
class Reconciled:
    missing: list[str]
    strays: list[str]
    tightened: int
    pruned: int = 0  # kept partials nobody will resume, removed


def reconcile(cache: HostCache, records: CacheRecords) -> Reconciled:
    """Walk ``objects/`` once and set the records right: missing copies evicted, sizes corrected,
    files nobody recorded removed (never serve a copy we cannot vouch for)."""
    sizes, tightened = cache.scan()
    missing, strays = records.reconcile(sizes)
    for object_id in strays:
        cache.path_for(object_id).unlink(missing_ok=True)
    if missing or strays:
        log.warning("cache reconciled: %d records without a file, %d files without a record", len(missing), len(strays))
    pruned = partials.prune(cache, records.is_active)
    if pruned:
        log.info("cache reconciled: %d kept partial copies nobody will resume removed", pruned)
    return Reconciled(missing, strays, tightened, pruned)


def collect(
    cache: HostCache,
    records: CacheRecords,
    settings: CacheSettings,
    force: bool = False,
    dry_run: bool = False,
) -> GcReport:
    """One GC pass: nothing below the start fraction unless ``force``."""
    usage = records.usage()
    report = GcReport(usage, usage)
    if not force and usage <= settings.gc_start_fraction * settings.capacity:
        return report
    target = settings.gc_end_fraction * settings.capacity
    _evict_until(cache, records, report, target, dry_run)
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
    usage = records.usage()
    report = GcReport(usage, usage)
    if usage + needed > settings.capacity:
        _evict_until(cache, records, report, settings.capacity - needed, dry_run=False)
    return report


def relieve(cache: HostCache, records: CacheRecords, needed: int | None) -> GcReport:
    """The cache's filesystem is full (it is smaller than the capacity says): evict unlocked
    copies until ``needed`` bytes are freed, or every unlocked copy when the size is unknown."""
    usage = records.usage()
    report = GcReport(usage, usage)
    _evict_until(cache, records, report, max(usage - needed, 0) if needed is not None else 0, dry_run=False)
    if report.evicted:
        log.info("disk full: evicted %d copies, %s freed", len(report.evicted), format_size(usage - report.usage_after))
    return report


def _evict_until(cache: HostCache, records: CacheRecords, report: GcReport, target: float, dry_run: bool) -> None:
    """Evict page by page; an evicted copy leaves the query, a skipped one (locked meanwhile) too,
    so a page that frees nothing ends the pass. A dry run pages on by offset instead."""
    offset = 0
    while report.usage_after > target:
        page = records.eviction_candidates(VICTIM_PAGE, offset)
        progressed = False
        for object_id, recorded in page:
            if report.usage_after <= target:
                return
            freed = recorded if dry_run else records.evict(object_id, cache.remove)
            if freed is not None:
                report.evicted.append(object_id)
                report.usage_after -= freed
                progressed = True
        if dry_run:
            offset += len(page)
        if len(page) < VICTIM_PAGE or not (progressed or dry_run):
            return
