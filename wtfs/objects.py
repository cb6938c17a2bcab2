"""ObjectRef: what the data manager needs to know about one remote object.

Shared vocabulary of the catalog (which makes them), the providers (which fetch them) and the
data managers (which lock and cache them); it imports nothing of theirs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectRef:
    """One fetchable object. ``id`` is its key in the host cache, the same on every daemon."""

    id: str
    source: str
    size: int | None = None
    sha256: str | None = None

    @classmethod
    def for_source(cls, source: str, size: int | None, sha256: str | None, version: str = "") -> ObjectRef:
        """Derive the cache key from the source, expected size and checksum.

        ``version`` distinguishes changing sources (a local file's mtime) so a stale copy is
        never served for a file that changed.
        """
        key = "\0".join((source, str(size), sha256 or "", version))
        return cls(hashlib.sha256(key.encode()).hexdigest()[:40], source, size, sha256)
