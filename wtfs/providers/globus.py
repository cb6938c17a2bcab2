"""Globus: ``globus://ENDPOINT/path`` lands through a staging area, like a completed DTS transfer.

The source endpoint transfers the file to ``[globus] local_endpoint`` at ``staging_path`` plus a
unique name; when the task SUCCEEDS the file is in ``staging_dir``, and it is adopted as the
transfer's temp file (same filesystem as the cache, so a rename), then verified and moved into
the cache like any other copy. On any failure or cancellation the task is cancelled and the
staged file removed. globus-sdk is synchronous: every call runs in a worker thread behind a
limiter, never on the trio loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlsplit

import globus_sdk
import trio

from ..config import GlobusSettings
from ..errors import AccessDenied, NotFound, SpecError, TransferFailed, WtfsError
from ..objects import ObjectRef
from ..retry import Backoff
from .base import Sink

log = logging.getLogger(__name__)
T = TypeVar("T")


def transfer_client(settings: GlobusSettings, where: str) -> Callable[[], globus_sdk.TransferClient]:
    """Read and check the credentials now; the returned factory makes a TransferClient whose
    authorizer gets and refreshes its own tokens (a network call: run it in a thread). Secrets
    come from the environment or a file, never the command line."""
    scopes = globus_sdk.TransferClient.scopes.all
    client_id = os.environ.get(settings.client_id_env or "", "")
    if settings.client_id_env and not client_id:
        raise SpecError(where, "globus.client_id_env", f"environment variable {settings.client_id_env} is not set")
    if settings.refresh_token_file is not None:
        try:
            refresh_token = settings.refresh_token_file.read_text().strip()
        except OSError as exc:
            raise SpecError(
                where, "globus.refresh_token_file", f"{settings.refresh_token_file}: {exc.strerror}"
            ) from None
        return lambda: globus_sdk.TransferClient(
            authorizer=globus_sdk.RefreshTokenAuthorizer(refresh_token, globus_sdk.NativeAppAuthClient(client_id))
        )
    secret = os.environ.get(settings.client_secret_env or "", "")
    if not client_id or not secret:
        raise SpecError(
            where, "globus.client_secret_env", "a confidential app needs client_id_env and client_secret_env set"
        )
    return lambda: globus_sdk.TransferClient(
        authorizer=globus_sdk.ClientCredentialsAuthorizer(
            globus_sdk.ConfidentialAppAuthClient(client_id, secret), scopes
        )
    )


def check_staging(settings: GlobusSettings, cache_dir: Path, where: str) -> None:
    """The staging directory must exist on the cache's filesystem (adoption is a rename)."""
    if not settings.staging_dir.is_dir():
        raise SpecError(where, "globus.staging_dir", f"{settings.staging_dir}: no such directory")
    cache_dir.mkdir(parents=True, exist_ok=True)
    if os.stat(settings.staging_dir).st_dev != os.stat(cache_dir).st_dev:
        raise SpecError(where, "globus.staging_dir", f"{settings.staging_dir} is not on the filesystem of {cache_dir}")


def api_error(exc: globus_sdk.GlobusAPIError, what: str) -> WtfsError:
    if exc.http_status in (401, 403):
        return AccessDenied(f"{what}: Globus refused ({exc.http_status} {exc.code})")
    if exc.http_status == 404:
        return NotFound(f"{what}: not found by Globus ({exc.code})")
    return TransferFailed(f"{what}: Globus answered {exc.http_status} {exc.code}")


class GlobusProvider:
    resumes = False

    def __init__(
        self,
        settings: GlobusSettings,
        client: Callable[[], globus_sdk.TransferClient],
        poll_initial: float = 1.0,
        poll_max: float = 10.0,
    ) -> None:
        self.settings = settings
        self._make_client = client
        self._client: globus_sdk.TransferClient | None = None
        self.limiter = trio.CapacityLimiter(4)
        self.poll = Backoff(poll_initial, maximum=poll_max)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    async def _tc(self) -> globus_sdk.TransferClient:
        if self._client is None:
            self._client = await self._call(self._make_client)
        return self._client

    async def fetch(self, obj: ObjectRef, sink: Sink) -> None:
        split = urlsplit(obj.source)
        endpoint, path = split.netloc, split.path
        staged_name = f"wtfs-{uuid.uuid4().hex[:12]}-{PurePosixPath(path).name}"
        staged = self.settings.staging_dir / staged_name
        task_id: str | None = None
        try:
            tc = await self._tc()
            data = globus_sdk.TransferData(
                endpoint,
                self.settings.local_endpoint,
                label=f"wtfs {PurePosixPath(path).name}"[:128],
                verify_checksum=True,
            )
            data.add_item(path, self.settings.staging_path.rstrip("/") + "/" + staged_name)
            try:
                task_id = str((await self._call(tc.submit_transfer, data))["task_id"])
            except globus_sdk.GlobusAPIError as exc:
                raise api_error(exc, obj.source) from None
            log.info("%s: Globus task %s submitted", obj.source, task_id)
            await self._await_task(tc, task_id, obj, sink)
            task_id = None  # succeeded: nothing to cancel
            if not staged.exists():
                raise TransferFailed(f"{obj.source}: Globus task succeeded but {staged} is missing")
            sink.adopt(str(staged))
        except BaseException:
            with trio.CancelScope(shield=True):
                if task_id is not None:
                    await self._cancel(task_id)
                with contextlib.suppress(FileNotFoundError):
                    staged.unlink()
            raise

    async def _await_task(self, tc: globus_sdk.TransferClient, task_id: str, obj: ObjectRef, sink: Sink) -> None:
        for attempt in self.poll.tries():
            try:
                task = await self._call(tc.get_task, task_id)
            except globus_sdk.GlobusAPIError as exc:
                raise api_error(exc, f"{obj.source} (task {task_id})") from None
            status = task["status"]
            done = int(task.get("bytes_transferred") or 0)
            if done > sink.offset:
                sink.reported(done)
            if status == "SUCCEEDED":
                return
            if status == "FAILED":
                raise self._task_error(obj, task_id, task)
            if status == "INACTIVE":
                reason = task.get("nice_status") or "credentials expired"
                raise TransferFailed(f"{obj.source}: Globus task {task_id} is INACTIVE ({reason})")
            await attempt.pause()

    @staticmethod
    def _task_error(obj: ObjectRef, task_id: str, task: Any) -> WtfsError:
        fatal = task.get("fatal_error") or {}
        code = str(fatal.get("code") or task.get("nice_status") or "FAILED")
        text = f"{obj.source}: Globus task {task_id} failed: {code} {fatal.get('description') or ''}".strip()
        if "PERMISSION_DENIED" in code.upper():
            return AccessDenied(text)
        if "NOT_FOUND" in code.upper():
            return NotFound(text)
        return TransferFailed(text)

    async def _cancel(self, task_id: str) -> None:
        try:
            tc = await self._tc()
            await self._call(tc.cancel_task, task_id)
            log.info("Globus task %s cancelled", task_id)
        except (globus_sdk.GlobusError, WtfsError) as exc:
            log.warning("cancelling Globus task %s failed: %s", task_id, type(exc).__name__)
