"""What an operator sees of the host cache: usage, sessions, locks, transfers with rate and ETA.

One builder serves ``wtfs status --json`` and the mount's ``.wtfs/status.json``, so they agree;
it masks credentials in the URLs that error texts quote.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from ..log import mask_credentials
from .cache import HostCache
from .records import ACTIVE_STATUSES, CacheRecords, TransferStatus


def transfer_view(row: dict[str, Any], now: float) -> dict[str, Any]:
    size, done = row.get("size"), int(row.get("transferred") or 0)
    end = row.get("end_time") or now
    elapsed = max(end - (row.get("start_time") or end), 1e-6)
    rate = done / elapsed
    running = row["status"] in ACTIVE_STATUSES
    eta = (size - done) / rate if running and size and rate > 0 else None
    return {
        "id": row["id"],
        "objectId": row["object_id"],
        "sessionId": row["session"],
        "status": row["status"],
        "statusName": TransferStatus(row["status"]).name,
        "size": size,
        "transferred": done,
        "percent": round(100.0 * done / size, 1) if size else None,
        "rate": round(rate),
        "eta": None if eta is None else round(eta, 1),
        "startTime": row.get("start_time"),
        "endTime": row.get("end_time"),
        "error": mask_credentials(row["error"]) if row.get("error") else None,
    }


#: Finished transfers a report keeps: the recent past, not every transfer since the cache was
#: made (``.wtfs/status.json`` is read by containers on every poll). Running ones are all kept.
RECENT_TRANSFERS = 100


def recent(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every running transfer and the last RECENT_TRANSFERS finished ones, in id order."""
    finished = [row for row in rows if row["status"] not in ACTIVE_STATUSES][-RECENT_TRANSFERS:]
    kept = {id(row) for row in finished}
    return [row for row in rows if row["status"] in ACTIVE_STATUSES or id(row) in kept]


def status_report(records: CacheRecords, cache: HostCache, session: str | None = None) -> dict[str, Any]:
    now = time.time()
    usage = records.usage()
    capacity = records.setting("capacity")
    live = records.live_daemon_ids()
    daemons = [d for d in records.daemons() if d["id"] in live]
    rows = [t for t in records.transfers() if session is None or t["session"] == session]
    transfers = [transfer_view(t, now) for t in recent(rows)]
    return {
        "host": socket.gethostname(),
        "cache": {
            "dir": str(cache.root),
            "usage": usage,
            "capacity": int(capacity) if capacity else None,
            "objects": sum(1 for o in records.objects() if o["status"] == "ACTIVE"),
        },
        "sessions": [
            {"sessionId": d["session"], "mountpoint": d["mountpoint"], "pid": d["pid"], "daemonId": d["id"]}
            for d in daemons
        ],
        "locks": [
            {"id": lock["id"], "itemId": lock["object_id"], "sessionId": lock["session"], "ownerId": lock["owner"]}
            for lock in records.locks()
        ],
        "transfers": transfers,
    }
