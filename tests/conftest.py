"""Shared fixtures: a loopback HTTP server, session directories, real mounts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.girder.fixtures import girder  # noqa: F401 - a session-wide Girder server
from tests.httpserver import Server, start_server
from tests.mounting import Mount, is_mounted, mount
from wtfs.config import CacheSettings
from wtfs.dm import EmbeddedDataManager
from wtfs.providers import HttpProvider, default_providers
from wtfs.providers.http import make_client

FUSE_OK = os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None and os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:  # the Girder server: a start per session, then seconds per test
        if "girder" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    if FUSE_OK:
        return
    skip = pytest.mark.skip(reason="needs root, /dev/fuse and fusermount3")
    for item in items:
        if "fuse" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def http() -> Iterator[Server]:
    server = start_server()
    yield server
    server.close()


def toml_value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def render_spec(entries: list[dict[str, Any]], **top: Any) -> str:
    lines = [f"{key} = {toml_value(value)}" for key, value in top.items() if not isinstance(value, dict)]
    for section, table in top.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    for entry in entries:
        lines.append("[[dataset]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in entry.items()]
    return "\n".join(lines) + "\n"


class Session:
    """A test session's directories: spec, cache, state, mountpoint."""

    def __init__(self, root: Path, cache_dir: Path) -> None:
        self.root = root
        self.cache_dir = cache_dir
        self.mounts: list[Mount] = []

    def spec(self, entries: list[dict[str, Any]], name: str = "test", **top: Any) -> Path:
        top.setdefault("cache_dir", str(self.cache_dir))
        top.setdefault("state_dir", str(self.root / "state"))
        path = self.root / f"{name}.toml"
        path.write_text(render_spec(entries, name=name, **top))
        return path

    def mount(self, spec: Path, *options: str, where: str = "mnt") -> Mount:
        result = mount(spec, self.root / where, *options)
        self.mounts.append(result)
        return result

    def close(self) -> None:
        """Unmount everything cleanly (lazily only as a fallback) and fail on what went wrong:
        an unmount that did not work, or an error that reached the errno boundary unclassified."""
        failures = []
        for m in self.mounts:
            try:
                m.unmount()
            except AssertionError as exc:
                failures.append(str(exc))
        for m in self.mounts:
            if is_mounted(m.path):
                subprocess.run(["fusermount3", "-uz", str(m.path)], check=False)
        assert not failures, failures
        for m in self.mounts:
            log = m.log.read_text(errors="replace") if m.log.exists() else ""
            assert "unexpected error in" not in log, f"{m.log}: {log[log.index('unexpected error in') :][:2000]}"


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory another user can traverse (pytest's tmp dirs are 0700). Ask for it before
    ``session``, so that the mounts in it are gone before it is removed."""
    path = Path(tempfile.mkdtemp(prefix="wtfs-public-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    state = Session(tmp_path, tmp_path / "cache")
    yield state
    state.close()


@pytest.fixture
def make_file(tmp_path: Path) -> Callable[[str, bytes], Path]:
    def make(name: str, data: bytes) -> Path:
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    return make


DmFactory = Callable[..., Awaitable[EmbeddedDataManager]]


@pytest.fixture
async def dm_factory(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[DmFactory]:
    """Embedded data managers on one host cache under tmp_path (each like another daemon)."""
    made: list[EmbeddedDataManager] = []
    client = make_client(5.0)

    async def make(stall_timeout: float = 5.0, settings: CacheSettings | None = None) -> EmbeddedDataManager:
        providers = default_providers(HttpProvider(client, backoff=0.01))
        dm = EmbeddedDataManager(tmp_path / "cache", "s", "/mnt", providers, stall_timeout, settings)
        await dm.start(nursery)
        made.append(dm)
        return dm

    yield make
    for dm in made:
        await dm.stop()
    await client.aclose()
