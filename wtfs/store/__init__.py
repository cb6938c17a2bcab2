"""Versions and runs on local disk, beside the workspace."""

from __future__ import annotations

from ..config import Spec
from .runs import RunStore
from .versions import VersionStore, version_store


def session_stores(spec: Spec) -> tuple[VersionStore, RunStore]:
    versions = version_store(spec)
    return versions, RunStore(spec.state_dir, versions, publish=spec.publish is not None)


__all__ = ["RunStore", "VersionStore", "session_stores", "version_store"]
