"""The Globus provider against globus_sdk.testing registered responses, the test playing the
local endpoint: when the task is polled as SUCCEEDED, the staged file is in the staging area.

No Globus service can run here: the Transfer and Auth APIs are the SDK's own registered
responses (``responses``); everything on our side (the SDK client, authorizer, staging, the data
manager, the mount) is real.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
import trio
from globus_sdk.testing import load_response

from wtfs.config import GlobusSettings
from wtfs.dm import EmbeddedDataManager
from wtfs.errors import AccessDenied, TransferFailed
from wtfs.objects import ObjectRef
from wtfs.providers import HttpProvider, default_providers
from wtfs.providers.base import Sink
from wtfs.providers.globus import GlobusProvider, transfer_client
from wtfs.providers.http import make_client

SOURCE_EP = "aaaaaaaa-0000-4000-8000-000000000001"
LOCAL_EP = "bbbbbbbb-0000-4000-8000-000000000002"
TASK_URL = re.compile(r"https://transfer\.api\.globus\.org/v0\.10/task/([^/]+)$")
CANCEL_URL = re.compile(r"https://transfer\.api\.globus\.org/v0\.10/task/([^/]+)/cancel$")
BODY = os.urandom(300_000)


class Endpoint:
    """Plays the local endpoint and the task: a scripted list of task states."""

    def __init__(self, staging: Path, states: list[dict[str, Any]], content: bytes = BODY) -> None:
        self.staging = staging
        self.states = states
        self.content = content
        self.polls = 0
        self.cancelled: list[str] = []
        self.submitted = 0

    def staged_name(self) -> str:
        document: dict[str, Any] = {}
        for request in responses.calls:
            if request.request.method == "POST" and request.request.url.endswith("/transfer"):
                document = json.loads(request.request.body)
        return str(document["DATA"][0]["destination_path"]).rsplit("/", 1)[1]

    def task(self, request: Any) -> tuple[int, dict[str, str], str]:
        state = self.states[min(self.polls, len(self.states) - 1)]
        self.polls += 1
        if state["status"] == "SUCCEEDED":
            (self.staging / self.staged_name()).write_bytes(self.content)
        task_id = TASK_URL.match(request.url).group(1)  # type: ignore[union-attr]
        return 200, {}, json.dumps({"DATA_TYPE": "task", "task_id": task_id, **state})

    def cancel(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.cancelled.append(CANCEL_URL.match(request.url).group(1))  # type: ignore[union-attr]
        return 200, {}, json.dumps({"code": "Canceled", "message": "cancelled"})


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("WTFS_TEST_GLOBUS_ID", "client-id")
    monkeypatch.setenv("WTFS_TEST_GLOBUS_SECRET", "client-secret")
    responses.start()
    responses.add_passthru("http://127.0.0.1")
    load_response("auth.oauth2_client_credentials_tokens")
    load_response("transfer.get_submission_id")
    load_response("transfer.submit_transfer")
    yield
    responses.stop()
    responses.reset()


def settings(tmp_path: Path) -> GlobusSettings:
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    return GlobusSettings(
        local_endpoint=LOCAL_EP,
        staging_path="/~/staging/",
        staging_dir=staging,
        client_id_env="WTFS_TEST_GLOBUS_ID",
        client_secret_env="WTFS_TEST_GLOBUS_SECRET",
    )


def play(tmp_path: Path, states: list[dict[str, Any]], content: bytes = BODY) -> Endpoint:
    endpoint = Endpoint(tmp_path / "staging", states, content)
    responses.add_callback(responses.GET, TASK_URL, callback=endpoint.task)
    responses.add_callback(responses.POST, CANCEL_URL, callback=endpoint.cancel)
    return endpoint


ACTIVE_HALF = {"status": "ACTIVE", "bytes_transferred": len(BODY) // 2}
SUCCEEDED = {"status": "SUCCEEDED", "bytes_transferred": len(BODY)}


def globus_obj(size: int = len(BODY), sha256: str | None = None) -> ObjectRef:
    return ObjectRef.for_source(f"globus://{SOURCE_EP}/data/run1/result.h5", size, sha256)


@pytest.fixture
async def dm(tmp_path: Path, nursery: trio.Nursery, api: None) -> AsyncIterator[EmbeddedDataManager]:
    client = make_client(5.0)
    providers = default_providers(HttpProvider(client))
    s = settings(tmp_path)
    providers.by_scheme["globus"] = GlobusProvider(s, transfer_client(s, "spec"), poll_initial=0.05, poll_max=0.1)
    manager = EmbeddedDataManager(tmp_path / "cache", "s", "/mnt", providers, 30.0)
    await manager.start(nursery)
    yield manager
    await manager.stop()
    await client.aclose()


def staged(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "staging").iterdir())


async def test_success_lands_verified_with_progress(dm: EmbeddedDataManager, tmp_path: Path) -> None:
    endpoint = play(tmp_path, [{"status": "ACTIVE", "bytes_transferred": 0}, ACTIVE_HALF, ACTIVE_HALF, SUCCEEDED])
    obj = globus_obj(sha256=hashlib.sha256(BODY).hexdigest())
    seen: set[str] = set()

    async def watch() -> None:
        while True:
            seen.add(await dm.state(obj))
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        lock = await dm.lock(obj, "me")
        nursery.cancel_scope.cancel()
    assert Path(lock.path).read_bytes() == BODY
    assert "transferring 50%" in seen  # bytes_transferred of ACTIVE polls reached the record
    assert staged(tmp_path) == []  # moved, not copied
    transfer = dm.records.transfers()[-1]
    assert (transfer["status"], transfer["transferred"]) == (3, len(BODY))
    document = json.loads(next(c.request.body for c in responses.calls if c.request.url.endswith("/transfer")))
    assert document["source_endpoint"] == SOURCE_EP and document["destination_endpoint"] == LOCAL_EP
    assert document["DATA"][0]["source_path"] == "/data/run1/result.h5"
    assert document["DATA"][0]["destination_path"].startswith("/~/staging/wtfs-")
    assert endpoint.cancelled == []


@pytest.mark.parametrize(
    ("state", "error", "text"),
    [
        ({"status": "FAILED", "fatal_error": {"code": "ENDPOINT_ERROR"}}, TransferFailed, "ENDPOINT"),
        ({"status": "FAILED", "fatal_error": {"code": "PERMISSION_DENIED"}}, AccessDenied, "DENIED"),
        ({"status": "INACTIVE", "nice_status": "CREDENTIALS_EXPIRED"}, TransferFailed, "INACTIVE"),
    ],
)  # fmt: skip
async def test_task_failures(
    dm: EmbeddedDataManager, tmp_path: Path, state: dict[str, Any], error: type[Exception], text: str
) -> None:
    play(tmp_path, [ACTIVE_HALF, state])
    with pytest.raises(error, match=text):
        await dm.lock(globus_obj(), "me")
    assert staged(tmp_path) == [] and list((tmp_path / "cache" / "tmp").iterdir()) == []


async def test_403_on_submit_is_eacces(dm: EmbeddedDataManager, tmp_path: Path) -> None:
    responses.replace(
        responses.POST,
        "https://transfer.api.globus.org/v0.10/transfer",
        status=403,
        json={"code": "PermissionDenied", "message": "no", "request_id": "x"},
    )
    with pytest.raises(AccessDenied, match="403"):
        await dm.lock(globus_obj(), "me")


@pytest.mark.parametrize("fault", ["size", "sha256"])
async def test_wrong_staged_file_is_eio_and_removed(dm: EmbeddedDataManager, tmp_path: Path, fault: str) -> None:
    content = BODY[:-10] if fault == "size" else bytes(reversed(BODY))
    play(tmp_path, [SUCCEEDED], content)
    with pytest.raises(TransferFailed, match="expected" if fault == "size" else "sha256 mismatch"):
        await dm.lock(globus_obj(sha256=hashlib.sha256(BODY).hexdigest()), "me")
    assert staged(tmp_path) == [] and list((tmp_path / "cache" / "tmp").iterdir()) == []
    assert not any((tmp_path / "cache" / "objects").rglob("*.*"))


async def test_concurrent_opens_make_one_task(dm: EmbeddedDataManager, tmp_path: Path) -> None:
    play(tmp_path, [ACTIVE_HALF, ACTIVE_HALF, SUCCEEDED])
    paths: list[str] = []

    async def one() -> None:
        paths.append((await dm.lock(globus_obj(), "me")).path)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(one)
    assert len(set(paths)) == 1 and len(paths) == 5
    assert sum(1 for c in responses.calls if c.request.url.endswith("/v0.10/transfer")) == 1


async def test_cancelled_fetch_cancels_the_task(api: None, tmp_path: Path) -> None:
    endpoint = play(tmp_path, [ACTIVE_HALF])  # never finishes by itself
    s = settings(tmp_path)
    provider = GlobusProvider(s, transfer_client(s, "spec"), poll_initial=0.05, poll_max=0.05)
    fd = os.open(tmp_path / "part", os.O_RDWR | os.O_CREAT)
    sink = Sink(fd, lambda n: None, str(tmp_path / "part"))
    with trio.move_on_after(0.5):  # the lock waiting for it went away (shutdown, stall)
        await provider.fetch(globus_obj(), sink)
    os.close(fd)
    assert endpoint.polls >= 1
    assert len(endpoint.cancelled) == 1
    assert staged(tmp_path) == []


def test_missing_credentials_refused_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WTFS_TEST_GLOBUS_ID", raising=False)
    with pytest.raises(Exception, match=r"globus.client_id_env: environment variable WTFS_TEST_GLOBUS_ID is not set"):
        transfer_client(settings(tmp_path), "spec.toml")


async def test_girder_item_with_a_globus_phys_path(dm: EmbeddedDataManager, tmp_path: Path, girder: Any) -> None:
    from tests.girder.fixtures import KEY_ENV
    from wtfs.catalog.girder import GirderContext, resolve_entry
    from wtfs.catalog.girder_api import GirderApi

    folder = girder.admin.createFolder(girder.admin.get("user/me")["_id"], "globus", parentType="user", public=True)
    item = girder.admin.createItem(folder["_id"], "remote.h5")
    girder.admin.addMetadataToItem(
        item["_id"], {"phys_path": f"globus://{SOURCE_EP}/data/run1/result.h5", "size": len(BODY)}
    )
    play(tmp_path, [ACTIVE_HALF, SUCCEEDED])
    async with make_client(5.0) as client:
        api = GirderApi(client, girder.url, os.environ[KEY_ENV], None)
        await api.authenticate()
        node = await resolve_entry(GirderContext(api, 60.0), "remote.h5", item["_id"], None)
    lock = await dm.lock(node.obj, "me")  # type: ignore[union-attr]
    assert Path(lock.path).read_bytes() == BODY


@pytest.mark.fuse
def test_globus_entry_through_a_real_mount(api: None, tmp_path: Path) -> None:
    """The daemon runs in this process (on a thread) so the registered responses reach it."""
    from tests.conftest import render_spec
    from tests.mounting import is_mounted, wait_for
    from wtfs import daemon
    from wtfs.config import load_spec

    play(tmp_path, [ACTIVE_HALF, SUCCEEDED])
    (tmp_path / "staging").mkdir(exist_ok=True)
    spec_path = tmp_path / "g.toml"
    spec_path.write_text(
        render_spec(
            [{"mountPath": "/result.h5", "url": f"globus://{SOURCE_EP}/data/run1/result.h5", "size": len(BODY)}],
            name="g",
            cache_dir=str(tmp_path / "cache"),
            state_dir=str(tmp_path / "state"),
            globus={
                "local_endpoint": LOCAL_EP,
                "staging_path": "/~/staging/",
                "staging_dir": str(tmp_path / "staging"),
                "client_id_env": "WTFS_TEST_GLOBUS_ID",
                "client_secret_env": "WTFS_TEST_GLOBUS_SECRET",
            },
        )
    )
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    spec = load_spec(spec_path)
    outcome: list[int] = []
    thread = threading.Thread(target=lambda: outcome.append(daemon.run(spec, str(mountpoint), daemon.ReadyReport())))
    thread.start()
    try:
        wait_for(lambda: (mountpoint / "data").exists() or not thread.is_alive(), what="the mount")
        assert thread.is_alive(), f"the daemon stopped: {outcome}"
        assert (mountpoint / "data" / "result.h5").stat().st_size == len(BODY)
        assert (mountpoint / "data" / "result.h5").read_bytes() == BODY
    finally:
        import subprocess

        if is_mounted(mountpoint):
            subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True)
        thread.join(30)
    assert outcome == [0] and not is_mounted(mountpoint)
