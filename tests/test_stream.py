"""Reading before the copy lands (``stream``), on real mounts against the real loopback HTTP
server: the origin holds the transfer after its first bytes, so every read asserted here is one
served while the transfer had not finished (no timing involved)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import subprocess
import threading

import pytest

from tests.conftest import Session
from tests.httpserver import Server
from tests.mounting import wait_for

MIB = 1024 * 1024
BODY = os.urandom(8 * MIB)
LARGE = os.urandom(32 * MIB)
QUARTER = len(LARGE) // 4
HELD_AT = MIB
STATE = "user.wtfs.state"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.fuse
def test_head_returns_while_the_transfer_runs_and_the_copy_still_lands(session: Session, http: Server) -> None:
    hold = threading.Event()
    url = http.add("/big", BODY, etag='"v1"', hold_at=HELD_AT, hold=hold)
    m = session.mount(session.spec([{"mountPath": "/big", "url": url, "sha256": sha(BODY)}]), "stream")
    try:
        head = subprocess.run(["head", "-c", "1024", str(m.data / "big")], capture_output=True, timeout=30)
        assert head.returncode == 0, head.stderr
        assert head.stdout == BODY[:1024]
        assert os.getxattr(m.data / "big", STATE).startswith(b"transferring")
        assert http.resources["/big"].served == HELD_AT  # the origin had sent no more when head returned
    finally:
        hold.set()
    wait_for(lambda: os.getxattr(m.data / "big", STATE) == b"cached", what="the copy to land")
    assert sha((m.data / "big").read_bytes()) == sha(BODY)


@pytest.mark.fuse
@pytest.mark.parametrize("streams", [1, 4])
def test_random_reads_during_the_transfer_get_the_origin_bytes(session: Session, http: Server, streams: int) -> None:
    """Reads inside what landed return at once; reads past it wait for their bytes (never a hole)."""
    hold = threading.Event()
    held_at = 2 * MIB  # per connection: with 4 streams, the head of each quarter
    url = http.add("/large", LARGE, etag='"v1"', hold_at=held_at, hold=hold)
    m = session.mount(session.spec([{"mountPath": "/large", "url": url}]), "stream", f"streams={streams}")
    starts = [0] if streams == 1 else [i * QUARTER for i in range(4)]
    rng = random.Random(17)
    fd = os.open(m.data / "large", os.O_RDONLY)
    try:
        for start in starts:
            for _ in range(16):
                offset, size = start + rng.randrange(held_at - 4096), rng.randrange(1, 4096)
                assert os.pread(fd, size, offset) == LARGE[offset : offset + size]
        assert http.resources["/large"].served == held_at * len(starts)  # all served while the origin held

        later = [rng.randrange(len(LARGE) - 65536) for _ in range(8)] + [len(LARGE) - 100]
        results: list[bytes] = []
        reader = threading.Thread(target=lambda: results.extend(os.pread(fd, 65536, o) for o in later))
        reader.start()
        hold.set()
        reader.join(timeout=60)
        assert results == [LARGE[o : o + 65536] for o in later]
    finally:
        hold.set()
        os.close(fd)
    wait_for(lambda: os.getxattr(m.data / "large", STATE) == b"cached", what="the copy to land")


@pytest.mark.fuse
def test_a_far_read_is_fetched_before_the_stream_gets_there(session: Session, http: Server) -> None:
    """The origin holds every GET after 1 MiB; a read near the end of 32 MiB is answered from a
    range fetched on its own (same ETag), and the copy still lands whole and verified."""
    hold = threading.Event()
    url = http.add("/far", LARGE, etag='"v1"', hold_at=MIB, hold=hold)
    m = session.mount(session.spec([{"mountPath": "/far", "url": url, "sha256": sha(LARGE)}]), "stream")
    fd = os.open(m.data / "far", os.O_RDONLY)
    try:
        offset = len(LARGE) - 3 * MIB + 123
        assert os.pread(fd, 65536, offset) == LARGE[offset : offset + 65536]
        further = offset + MIB // 2  # within what that fetch got before the origin held it too
        assert os.pread(fd, 65536, further) == LARGE[further : further + 65536]
        assert os.getxattr(m.data / "far", STATE).startswith(b"transferring")
        assert http.resources["/far"].served == 2 * MIB  # the held stream and one ranged fetch
    finally:
        hold.set()
        os.close(fd)
    wait_for(lambda: os.getxattr(m.data / "far", STATE) == b"cached", what="the copy to land")
    assert sha((m.data / "far").read_bytes()) == sha(LARGE)


@pytest.mark.fuse
def test_a_partial_with_bytes_fetched_ahead_is_not_resumed_after_kill_9(session: Session, http: Server) -> None:
    """A far read wrote past the stream's prefix; the daemon is killed. No sha256 in the spec (as
    most HTTP entries): the next mount must not continue the partial from its size (a hole of
    zeros), but fetch it whole."""
    hold = threading.Event()
    url = http.add("/holes", LARGE, etag='"v1"', hold_at=MIB, hold=hold)
    spec = session.spec([{"mountPath": "/holes", "url": url}])
    m = session.mount(spec, "stream")
    fd = os.open(m.data / "holes", os.O_RDONLY)
    try:
        offset = len(LARGE) - 3 * MIB
        assert os.pread(fd, 65536, offset) == LARGE[offset : offset + 65536]
        m.kill()
    finally:
        hold.set()
        with contextlib.suppress(OSError):  # ENOTCONN once the daemon is gone
            os.close(fd)
    again = session.mount(spec, where="again")
    assert sha((again.data / "holes").read_bytes()) == sha(LARGE)


def _fails(fd: int) -> bool:
    try:
        os.pread(fd, 1024, 0)
    except OSError as exc:
        assert exc.errno == errno.EIO
        return True
    return False


@pytest.mark.fuse
def test_a_corrupt_origin_found_after_reads_fails_later_reads(session: Session, http: Server) -> None:
    """The entry's own ``stream = true`` (no mount option); its sha256 matches nothing the origin sends."""
    hold = threading.Event()
    url = http.add("/bad", BODY, etag='"v1"', hold_at=HELD_AT, hold=hold)
    m = session.mount(session.spec([{"mountPath": "/bad", "url": url, "sha256": sha(b"other"), "stream": True}]))
    fd = os.open(m.data / "bad", os.O_RDONLY)
    try:
        assert os.pread(fd, 1024, 0) == BODY[:1024]  # served before the end was known
        hold.set()
        wait_for(lambda: _fails(fd), what="reads to fail once the copy proved corrupt")
        with pytest.raises(OSError) as raised:
            os.pread(fd, 4096, 2 * MIB)
        assert raised.value.errno == errno.EIO
    finally:
        hold.set()
        os.close(fd)
    lines = [line for line in m.log.read_text().splitlines() if "were read before it failed" in line]
    assert len(lines) == 1 and url in lines[0] and "sha256 mismatch" in lines[0]


@pytest.mark.fuse
def test_an_entry_may_opt_out_of_the_mounts_stream(session: Session, http: Server) -> None:
    """``-o stream`` with an entry's ``stream = false``: that entry's open still waits for the copy."""
    hold = threading.Event()
    url = http.add("/whole", BODY, etag='"v1"', hold_at=HELD_AT, hold=hold)
    m = session.mount(session.spec([{"mountPath": "/whole", "url": url, "stream": False}]), "stream")
    served_at_open: list[int] = []

    def open_and_read() -> bytes:
        with open(m.data / "whole", "rb") as file:
            served_at_open.append(http.resources["/whole"].served)
            return file.read()

    reader = threading.Thread(target=lambda: served_at_open.append(len(open_and_read())))
    try:
        reader.start()
        wait_for(lambda: http.resources["/whole"].served == HELD_AT, what="the transfer to be held")
    finally:
        hold.set()
    reader.join(timeout=60)
    assert served_at_open == [len(BODY), len(BODY)]  # open returned only once the origin had sent it all
