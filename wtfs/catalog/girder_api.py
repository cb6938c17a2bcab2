"""An async Girder REST client: authentication, retries, errors as WtfsErrors.

The API key is exchanged for a token (``POST /api_key/token``); a token refused mid-mount is
renewed once before the call answers EACCES. Neither key nor token is ever logged or put in an
error message.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from ..config import Secrets
from ..errors import AccessDenied, Busy, Exists, NotFound, SpecError, TransferFailed, WtfsError
from ..retry import Backoff

log = logging.getLogger(__name__)

RETRY = Backoff(0.25, attempts=4)
PROBE = Backoff(0.25, attempts=1)
#: While the server is known to be down, a call waits this long for an answer.
PROBE_TIMEOUT = 2.0
#: A server that accepts a call and never answers counts as down: no REST call waits longer.
READ_TIMEOUT = 10.0


def read_secret(secrets: Secrets, where: str, section: str) -> tuple[str | None, str | None]:
    """(api_key, token) from the spec's secret options; the values are never echoed."""
    if secrets.api_key_env:
        value = os.environ.get(secrets.api_key_env)
        if not value:
            raise SpecError(where, f"{section}.api_key_env", f"environment variable {secrets.api_key_env} is not set")
        return value.strip(), None
    path: Path | None = secrets.api_key_file or secrets.token_file
    assert path is not None
    try:
        value = path.read_text().strip()
    except OSError as exc:
        key = "api_key_file" if secrets.api_key_file else "token_file"
        raise SpecError(where, f"{section}.{key}", f"{path}: {exc.strerror}") from None
    return (value, None) if secrets.api_key_file else (None, value)


def path_id(object_id: str) -> str:
    """An object id as one URL path segment. girder-virtual-resources ids (``wtlocal:<base64>``)
    may hold '/', which the server's routing would split on; a '/' sent as ``%252F`` reaches
    Girder's route as ``%2F``, which it decodes inside the segment (checked against the server)."""
    return object_id.replace("/", "%252F")


class Unreachable(TransferFailed):
    """Girder stopped answering (after bounded retries, or a POST whose fate is unknown)."""


@dataclass
class Outage:
    """Since when the server has not answered (None: it answers); said once in the log each way."""

    api_url: str
    since: float | None = None

    def down(self, problem: str) -> None:
        if self.since is None:
            self.since = time.time()
            log.warning("%s: server unreachable (%s): cached copies and last listings serve", self.api_url, problem)

    def up(self) -> None:
        if self.since is not None:
            log.warning("%s: server reachable again after %.0fs", self.api_url, time.time() - self.since)
            self.since = None

    def describe(self) -> str:
        if self.since is None:
            return "reachable"
        since = datetime.fromtimestamp(self.since).astimezone().isoformat(timespec="seconds")
        return f"server unreachable since {since}"


def error_for(response: httpx.Response, what: str) -> WtfsError:
    try:
        message = str(response.json().get("message", ""))
    except ValueError:
        message = ""
    code = response.status_code
    if code in (401, 403):
        return AccessDenied(f"{what}: access denied (HTTP {code})")
    if code == 404 or (code == 400 and ("not found" in message.lower() or "invalid" in message.lower())):
        return NotFound(f"{what}: not found in Girder")
    if code == 409 and "exists" in message.lower():
        return Exists(f"{what}: {message}")
    if code in (409, 461):  # another version being created; a version in use by a run
        return Busy(f"{what}: {message}")
    return TransferFailed(f"{what}: Girder answered HTTP {code}: {message[:200]}")


class GirderApi:
    def __init__(
        self,
        client: httpx.AsyncClient,
        api_url: str,
        api_key: str | None,
        token: str | None,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.client = client
        self.api_url = api_url.rstrip("/")
        self.timeout = httpx.Timeout(client.timeout.connect, read=read_timeout, write=read_timeout, pool=read_timeout)
        self._api_key = api_key
        self._token = token
        self.outage = Outage(self.api_url)

    def with_read_timeout(self, read_timeout: float) -> GirderApi:
        """The same session (token, outage record) waiting longer for answers: uploads."""
        other = GirderApi(self.client, self.api_url, self._api_key, self._token, read_timeout)
        other.outage = self.outage
        return other

    async def authenticate(self) -> None:
        """Exchange the API key for a token (at mount time, and when a token is refused)."""
        if self._api_key is None:
            return
        # the key goes in the form body: query strings end up in servers' access logs
        form = {"data": {"key": self._api_key}}
        response = await self._send("POST", "api_key/token", None, authenticated=False, body=form)
        if response.status_code != 200:
            raise AccessDenied(f"{self.api_url}: the Girder API key was refused (HTTP {response.status_code})")
        self._token = response.json()["authToken"]["token"]

    def headers(self) -> dict[str, str]:
        return {"Girder-Token": self._token} if self._token else {}

    async def _send(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        authenticated: bool = True,
        body: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One call, retried with backoff on connection errors and (unless a POST) 5xx; bounded.

        ``body``: httpx's ``data`` (a form), ``json`` or ``content`` (raw bytes) argument."""
        # while the server is known to be down, one short try: a probe, not a wait
        down = self.outage.since is not None
        timeout = httpx.Timeout(self.timeout.connect, read=PROBE_TIMEOUT) if down else self.timeout
        for attempt in (PROBE if down else RETRY).tries():
            headers = self.headers() if authenticated else {}
            if body and body.get("content") is not None:
                headers["Content-Type"] = "application/octet-stream"
            try:
                response = await self.client.request(
                    method,
                    f"{self.api_url}/{path}",
                    params=params,
                    headers=headers,
                    timeout=timeout,
                    **(body or {}),
                )
                if response.status_code < 500 or method == "POST":
                    self.outage.up()
                    return response  # a POST may have taken effect: never repeat it
                problem = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                if method == "POST" and not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                    name = type(exc).__name__
                    self.outage.down(name)
                    raise Unreachable(
                        f"{self.api_url}: {path}: {name}, not repeated (it may have taken effect)"
                    ) from None
                problem = type(exc).__name__
                if isinstance(exc, httpx.ReadTimeout):  # it took the call and said nothing: down now,
                    self.outage.down(problem)  # not after more attempts of READ_TIMEOUT each
                    raise Unreachable(f"{self.api_url}: Girder did not answer within {timeout.read:g}s") from None
            if attempt.last:
                self.outage.down(problem)
                raise Unreachable(f"{self.api_url}: Girder unreachable ({problem}) after {attempt.number} attempts")
            log.info("Girder %s %s: %s; retrying in %.2fs", method, path, problem, attempt.delay)
            await attempt.pause()
        raise AssertionError("unreachable")

    async def call(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        what: str = "",
        json_body: Any = None,
        content: bytes | None = None,
    ) -> Any:
        """One REST call, with a JSON body or raw bytes if given; its JSON answer (None for an
        empty body). Errors as WtfsErrors."""
        body = {"json": json_body} if json_body is not None else {"content": content} if content else None
        response = await self._send(method, path, params, body=body)
        if response.status_code == 401 and self._api_key is not None:
            await self.authenticate()  # the token expired or was revoked: renew once
            response = await self._send(method, path, params, body=body)
        if response.status_code >= 300:
            raise error_for(response, what or path)
        return response.json() if response.content else None

    async def get(self, path: str, params: dict[str, Any] | None = None, what: str = "") -> Any:
        return await self.call("GET", path, params, what)

    async def list_all(self, path: str, params: dict[str, Any], what: str) -> list[dict[str, Any]]:
        """Every element of a listing: Girder pages at 50 unless asked for limit=0."""
        result = await self.get(path, {**params, "limit": 0}, what)
        assert isinstance(result, list)
        return result
