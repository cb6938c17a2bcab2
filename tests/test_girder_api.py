"""The Girder client against a server that accepts calls and never answers: down, not a hang.

A real TCP server on loopback that reads each request and stays silent (a stopped Girder
process behind a live socket looks like this).
"""

from __future__ import annotations

import pytest
import trio

from wtfs.catalog import girder_api
from wtfs.catalog.girder_api import GirderApi
from wtfs.errors import TransferFailed
from wtfs.providers.http import make_client
from wtfs.retry import Backoff


class SilentServer:
    """Accepts connections, reads requests, answers nothing; counts the requests it saw."""

    def __init__(self) -> None:
        self.requests = 0
        self.port = 0

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._hold, listeners)

    async def _hold(self, stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some(65536):
                self.requests += data.count(b"HTTP/1.1\r\n")


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(girder_api, "RETRY", Backoff(0.01, attempts=4))


async def test_a_silent_server_is_down_after_one_read_timeout(nursery: trio.Nursery, fast_retries: None) -> None:
    """It took the call and said nothing for the read timeout: down at once, not after more
    attempts of that timeout each (a listing would wait four times as long)."""
    server = SilentServer()
    await nursery.start(server.serve)
    async with make_client(60.0) as client:
        api = GirderApi(client, f"http://127.0.0.1:{server.port}/api/v1", None, "token", read_timeout=0.2)
        with trio.fail_after(30), pytest.raises(TransferFailed, match=r"did not answer within 0.2s"):
            await api.get("item/x")
    assert server.requests == 1
    assert api.outage.describe().startswith("server unreachable since")


async def test_a_post_that_got_no_answer_is_never_repeated(nursery: trio.Nursery, fast_retries: None) -> None:
    server = SilentServer()
    await nursery.start(server.serve)
    async with make_client(60.0) as client:
        api = GirderApi(client, f"http://127.0.0.1:{server.port}/api/v1", None, "token", read_timeout=0.2)
        with trio.fail_after(30), pytest.raises(TransferFailed, match="not repeated"):
            await api.call("POST", "dm/lock", {"itemId": "x"})
    assert server.requests == 1  # the server may have taken the lock: asking twice could take two
