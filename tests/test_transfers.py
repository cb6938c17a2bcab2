"""Transfers under faults, against the real loopback HTTP server: a partial kept across unmount
and kill -9 and resumed by Range (guarded by If-Range), Retry-After honoured, Last-Modified as
mtime; local sources served in place, as they are at each open."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.conftest import DmFactory, Session
from tests.httpserver import Server
from tests.mounting import Mount, wait_for
from wtfs.errors import TransferFailed
from wtfs.objects import ObjectRef
from wtfs.providers.base import Sink
from wtfs.providers.http import HttpProvider, make_client
from wtfs.redirects import next_hop

MIB = 1024 * 1024
BODY = os.urandom(4 * MIB)
HELD_AT = MIB
MakeFile = Callable[[str, bytes], Path]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def kept(cache: Path) -> list[Path]:
    """The partials kept for a later resume."""
    directory = cache / "resume"
    return sorted(directory.glob("*.part")) if directory.exists() else []


def read_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):  # the mount goes away under it
        path.read_bytes()


@contextlib.contextmanager
def held_transfer(session: Session, m: Mount, name: str) -> Iterator[None]:
    """A read of ``name`` whose transfer has written HELD_AT bytes and waits for the server."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(read_quietly, m.data / name)
        wait_for(
            lambda: [p for p in kept(session.cache_dir) if p.stat().st_size == HELD_AT],
            what="the first MiB in a kept partial",
        )
        yield


@pytest.mark.fuse
@pytest.mark.parametrize("stop", ["kill -9", "umount"])
def test_transfer_cut_short_resumes_by_range_on_next_mount(session: Session, http: Server, stop: str) -> None:
    hold = threading.Event()
    url = http.add("/big", BODY, etag='"v1"', hold_at=HELD_AT, hold=hold)
    spec = session.spec([{"mountPath": "/big", "url": url}])
    m = session.mount(spec)
    with held_transfer(session, m, "big"):
        if stop == "kill -9":
            m.kill()
        else:
            m.unmount()
        hold.set()
    again = session.mount(spec)
    assert sha((again.data / "big").read_bytes()) == sha(BODY)
    assert http.range_starts["/big"] == [HELD_AT]  # only the rest was asked for...
    assert http.resources["/big"].served == len(BODY)  # ...and no byte was sent twice
    assert kept(session.cache_dir) == []
    assert not any((session.cache_dir / "tmp").iterdir())


@pytest.mark.fuse
def test_partial_of_a_changed_source_is_not_resumed(session: Session, http: Server) -> None:
    hold = threading.Event()
    url = http.add("/big", BODY, etag='"v1"', hold_at=HELD_AT, hold=hold)
    spec = session.spec([{"mountPath": "/big", "url": url}])
    m = session.mount(spec)
    with held_transfer(session, m, "big"):
        m.unmount()
        hold.set()
    changed = os.urandom(len(BODY))  # same size: only the ETag tells them apart
    http.add("/big", changed, etag='"v2"')
    again = session.mount(spec)
    assert sha((again.data / "big").read_bytes()) == sha(changed)
    assert http.range_starts["/big"] == []  # If-Range named v1: the server sent the whole of v2


async def test_429_waits_as_long_as_retry_after_says(http: Server, dm_factory: DmFactory) -> None:
    url = http.add("/busy", BODY, fault="429-then-ok", fail_times=1, retry_after="1")
    dm = await dm_factory()  # its backoff between plain retries is 10 ms
    lock = await dm.lock(ObjectRef.for_source(url, len(BODY), None), "me")
    assert sha(Path(lock.path).read_bytes()) == sha(BODY)
    first, second = http.arrivals["/busy"]
    assert second - first >= 1.0


async def test_retry_after_beyond_stall_timeout_fails_at_once(http: Server, dm_factory: DmFactory) -> None:
    url = http.add("/busy", BODY, fault="503-then-ok", fail_times=1, retry_after="3600")
    dm = await dm_factory(stall_timeout=2.0)
    with pytest.raises(TransferFailed, match=r"HTTP 503; the server asks to retry in 3600s, beyond stall_timeout"):
        await dm.lock(ObjectRef.for_source(url, len(BODY), None), "me")
    assert http.requests["/busy"] == 1


@contextlib.contextmanager
def loopback(answer: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """A second real server on loopback (another origin: another port) whose every GET is
    ``answer(handler)``; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer(self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", location: str | None = None) -> None:
    handler.send_response(status)
    if location is not None:
        handler.send_header("Location", location)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


async def test_a_redirect_is_followed_each_url_asked_once(http: Server, dm_factory: DmFactory) -> None:
    target = http.add("/there", b"moved here")
    asked: list[str] = []

    def moved(handler: BaseHTTPRequestHandler) -> None:
        asked.append(handler.path)
        reply(handler, 302, location=target)

    dm = await dm_factory()
    with loopback(moved) as base:
        lock = await dm.lock(ObjectRef.for_source(f"{base}/moved", 10, None), "me")
    assert Path(lock.path).read_bytes() == b"moved here"
    assert asked == ["/moved"]
    assert http.requests["/there"] == 1


async def test_a_redirect_to_another_origin_drops_the_callers_headers(tmp_path: Path) -> None:
    """A Girder download redirected to a storage service must not carry the Girder token there;
    a redirect on the same server keeps it (httpx itself drops only Authorization)."""
    seen: dict[str, str | None] = {}

    def storage(handler: BaseHTTPRequestHandler) -> None:
        seen[f"storage{handler.path}"] = handler.headers.get("Girder-Token")
        reply(handler, 200, b"bytes")

    with loopback(storage) as elsewhere:

        def girder(handler: BaseHTTPRequestHandler) -> None:
            seen[f"girder{handler.path}"] = handler.headers.get("Girder-Token")
            if handler.path == "/away":
                reply(handler, 303, location=f"{elsewhere}/object")
            elif handler.path == "/here":
                reply(handler, 307, location="/final")
            else:
                reply(handler, 200, b"bytes")

        with loopback(girder) as base:
            async with make_client(5.0) as client:
                provider = HttpProvider(client, backoff=0.01)
                for name in ("away", "here"):
                    fd = os.open(tmp_path / name, os.O_RDWR | os.O_CREAT, 0o600)
                    try:
                        url = f"{base}/{name}"
                        await provider.fetch(ObjectRef.for_source(url, 5, None), Sink(fd, lambda n: None), url, token)
                    finally:
                        os.close(fd)
    assert seen == {
        "girder/away": "SECRET",
        "storage/object": None,
        "girder/here": "SECRET",
        "girder/final": "SECRET",
    }
    assert (tmp_path / "away").read_bytes() == (tmp_path / "here").read_bytes() == b"bytes"


def token() -> dict[str, str]:
    return {"Girder-Token": "SECRET"}


def test_a_redirect_keeps_the_token_only_on_its_server() -> None:
    """Same server (an upgrade to https included) keeps every header; another host, port or a
    downgrade keeps only what says which bytes; a Location that is no URL is one clear error."""
    asked = {"Girder-Token": "SECRET", "Range": "bytes=5-"}
    assert next_hop("http://g/a", "/b", asked) == ("http://g/b", asked)
    assert next_hop("http://g/a", "https://g/b", asked) == ("https://g/b", asked)
    assert next_hop("http://g/a", "http://s3/b", asked) == ("http://s3/b", {"Range": "bytes=5-"})
    assert next_hop("http://g/a", "http://g:8080/b", asked)[1] == {"Range": "bytes=5-"}
    assert next_hop("https://g/a", "http://g/b", asked)[1] == {"Range": "bytes=5-"}
    with pytest.raises(TransferFailed, match="invalid URL"):
        next_hop("http://g/a", "http://[::1/x?sig=SECRET", asked)


async def test_a_3xx_that_is_not_followed_is_an_error_not_the_file(dm_factory: DmFactory) -> None:
    """A 300, or a redirect without Location: its body is never landed as the file's bytes."""
    dm = await dm_factory()
    choices = loopback(lambda handler: reply(handler, 300, b"<html>Multiple Choices</html>"))
    with choices as base, pytest.raises(TransferFailed):
        await dm.lock(ObjectRef.for_source(f"{base}/choices", None, None), "me")


@pytest.mark.parametrize(
    ("typed", "asked"),
    [
        ("/a/../b.txt", "/b.txt"),  # dot segments removed (RFC 3986 5.2.4)
        ("/two words.txt", "/two%20words.txt"),  # a space encoded
    ],
)
async def test_a_url_as_typed_is_asked_as_any_http_client_would(
    http: Server, dm_factory: DmFactory, typed: str, asked: str
) -> None:
    http.add(asked, b"found")
    dm = await dm_factory()
    lock = await dm.lock(ObjectRef.for_source(f"{http.base}{typed}", 5, None), "me")
    assert Path(lock.path).read_bytes() == b"found"
    assert http.requests[asked] == 1


@pytest.mark.fuse
def test_mtime_is_last_modified(session: Session, http: Server) -> None:
    url = http.add("/f", b"dated", last_modified="Wed, 21 Oct 2015 07:28:00 GMT")
    m = session.mount(session.spec([{"mountPath": "/f", "url": url}]))
    assert (m.data / "f").stat().st_mtime == 1445412480
    assert (m.data / "f").read_bytes() == b"dated"


def locks_of(cache: Path) -> int:
    with sqlite3.connect(cache / "cache.db") as db:
        return len(list(db.execute("SELECT * FROM locks")))


@pytest.mark.fuse
def test_local_file_is_served_in_place_under_a_lock(session: Session, make_file: MakeFile) -> None:
    source = make_file("local.bin", BODY)
    m = session.mount(session.spec([{"mountPath": "/local.bin", "url": str(source)}]))
    with open(m.data / "local.bin", "rb") as f:
        assert locks_of(session.cache_dir) == 1
        assert sha(f.read()) == sha(BODY)
    wait_for(lambda: locks_of(session.cache_dir) == 0, what="the lock released (RELEASE is asynchronous)")
    assert not [p for p in (session.cache_dir / "objects").rglob("*") if p.is_file()]  # no copy
    assert not any((session.cache_dir / "tmp").iterdir())


@pytest.mark.fuse
def test_local_file_replaced_since_listing_is_served_as_it_is_now(session: Session, make_file: MakeFile) -> None:
    source = make_file("local.bin", b"first version")
    m = session.mount(session.spec([{"mountPath": "/d", "url": str(source.parent)}]))
    assert (m.data / "d" / "local.bin").read_bytes() == b"first version"
    st = source.stat()
    replacement = make_file("new.bin", b"other version")  # same size and mtime: only the inode differs
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    replacement.rename(source)
    assert (m.data / "d" / "local.bin").read_bytes() == b"other version"
    source.write_bytes(b"third, longer version")
    assert (m.data / "d" / "local.bin").read_bytes() == b"third, longer version"


LARGE = os.urandom(32 * MIB)
QUARTER = len(LARGE) // 4


@pytest.mark.fuse
def test_parallel_streams_give_the_origin_bytes_and_resume_a_dropped_range(session: Session, http: Server) -> None:
    url = http.add("/large", LARGE, etag='"v1"', fault="drop", fail_times=1)  # the first request: half, then dropped
    m = session.mount(session.spec([{"mountPath": "/large", "url": url, "sha256": sha(LARGE)}]), "streams=4")
    assert sha((m.data / "large").read_bytes()) == sha(LARGE)
    starts = sorted(http.range_starts["/large"])
    assert [s for s in starts if s % QUARTER == 0] == [0, QUARTER, 2 * QUARTER, 3 * QUARTER]
    assert len([s for s in starts if s % QUARTER]) == 1  # the dropped range went on from where it stopped
    assert http.resources["/large"].served == len(LARGE)


@pytest.mark.fuse
def test_parallel_ranges_resume_after_kill(session: Session, http: Server) -> None:
    hold = threading.Event()
    url = http.add("/large", LARGE, etag='"v1"', hold_at=4 * MIB, hold=hold)  # each range: 4 MiB, then waits
    spec = session.spec([{"mountPath": "/large", "url": url}])
    m = session.mount(spec, "streams=4")
    with ThreadPoolExecutor(1) as pool:
        pool.submit(read_quietly, m.data / "large")
        meta = session.cache_dir / "resume"

        def remembered() -> list[list[int]]:
            found = [json.loads(p.read_text()) for p in meta.glob("*.json")] if meta.exists() else []
            return found[0]["parts"] if found and found[0]["parts"] else []

        wait_for(lambda: [p[1] - p[0] for p in remembered()] == [4 * MIB] * 4, what="4 MiB of each range remembered")
        m.kill()
        hold.set()
    again = session.mount(spec, "streams=4")
    assert sha((again.data / "large").read_bytes()) == sha(LARGE)
    resumed = http.range_starts["/large"][4:]  # after the first four, in the order they came
    assert sorted(resumed) == [i * QUARTER + 4 * MIB for i in range(4)]
    assert http.resources["/large"].served == len(LARGE)
