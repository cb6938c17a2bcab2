"""Bench rows: wholetale_workspace (run by tests/bench/run.py after its own sections)."""

from __future__ import annotations

from collections.abc import Callable

SECTIONS: list[Callable[[], list[str]]] = []
