"""A real HTTP server on loopback with Range support and fault injection, for tests and bench.

Files are registered under a path with an optional fault. Every GET/HEAD is counted per path,
and a path can be gated: its GET blocks until the test opens the gate.
"""

from __future__ import annotations

import collections
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Resource:
    body: bytes
    fault: str | None = None  # see Handler._serve for the kinds
    fail_times: int = 0  # for "500-then-ok" and "drop": how many requests fail first
    status: int = 200
    gate: threading.Event | None = None
    ranges: bool = True
    served: int = 0  # bytes of body sent, all requests
    delay: float = 0.0  # seconds between 64 KiB chunks ("slow")
    etag: str | None = None  # sent as ETag; an If-Range naming it (or last_modified) gets a range
    last_modified: str | None = None  # an HTTP date, sent as Last-Modified
    retry_after: str | None = None  # sent with "429-then-ok" and "503-then-ok"
    hold_at: int | None = None  # the first GET sends this many bytes, then waits for ``hold``...
    hold: threading.Event | None = None  # ...and drops its connection once it is set
    rate: float = 0.0  # bytes per second per connection (0: as fast as it goes)


@dataclass
class Server:
    httpd: ThreadingHTTPServer
    resources: dict[str, Resource] = field(default_factory=dict)
    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    range_requests: collections.Counter[str] = field(default_factory=collections.Counter)
    range_starts: collections.defaultdict[str, list[int]] = field(default_factory=lambda: collections.defaultdict(list))
    arrivals: collections.defaultdict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    in_flight: int = 0  # GETs of registered paths being answered now...
    peak_in_flight: int = 0  # ...and the most there were at once
    counting: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, path: str, body: bytes, **kwargs: object) -> str:
        self.resources[path] = Resource(body, **kwargs)  # type: ignore[arg-type]
        return self.base + path

    def close(self) -> None:
        for resource in self.resources.values():
            if resource.gate is not None:
                resource.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    #: headers and body go out in separate writes: with Nagle on, the body waits for the client's
    #: delayed ACK (~40 ms a response on a kept-alive connection)
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        state = self.server.state
        path = self.path.split("?", 1)[0]
        state.requests[(("HEAD " if head else "") + path)] += 1
        state.arrivals[(("HEAD " if head else "") + path)].append(time.monotonic())
        resource = state.resources.get(path)
        if resource is None:
            return self._status(404)
        if not head and resource.gate is not None:
            resource.gate.wait(timeout=120)
        fault = resource.fault
        if fault in {"401", "403", "404", "500"}:
            return self._status(int(fault))
        if not head and fault in {"500-then-ok", "429-then-ok", "503-then-ok"} and resource.fail_times > 0:
            resource.fail_times -= 1
            return self._status(int(fault[:3]), resource.retry_after)
        body = resource.body
        start, end, status = 0, len(body), 200
        match = _RANGE.match(self.headers.get("Range", ""))
        if match and resource.ranges and not head and self._if_range(resource):
            state.range_requests[path] += 1
            start = int(match.group(1))
            state.range_starts[path].append(start)
            end = int(match.group(2)) + 1 if match.group(2) else len(body)
            status = 206
        self.send_response(status)
        declared = end - start
        if fault == "wrong-length":
            body = body[: len(body) // 2]
            declared = end = len(body)
        self.send_header("Content-Length", str(declared))
        self.send_header("Content-Type", "application/octet-stream")
        if resource.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(body)}")
        if resource.etag is not None:
            self.send_header("ETag", resource.etag)
        if resource.last_modified is not None:
            self.send_header("Last-Modified", resource.last_modified)
        self.end_headers()
        if head:
            return
        with state.counting:
            state.in_flight += 1
            state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
        try:
            self._body(resource, body, start, end)
        finally:
            with state.counting:
                state.in_flight -= 1

    def _if_range(self, resource: Resource) -> bool:
        """A Range applies unless an If-Range names a validator the resource no longer has."""
        condition = self.headers.get("If-Range")
        return condition is None or condition in {resource.etag, resource.last_modified}

    def _body(self, resource: Resource, body: bytes, start: int, end: int) -> None:
        fault = resource.fault
        whole = end
        if resource.hold is not None and resource.hold_at is not None and not resource.hold.is_set():
            end = min(end, start + resource.hold_at)
        if fault == "drop" and resource.fail_times > 0:
            resource.fail_times -= 1
            end = start + (end - start) // 2  # send half, then drop the connection
        elif fault == "stall":
            end = start + min(1024, len(body) - start)
        chunk = 64 * 1024
        position = start
        began = time.monotonic()
        try:
            while position < end:
                piece = body[position : min(position + chunk, end)]
                self.wfile.write(piece)
                resource.served += len(piece)
                position += len(piece)
                if resource.delay:
                    time.sleep(resource.delay)
                if resource.rate:  # this connection's share: ahead of schedule means wait
                    time.sleep(max(0.0, began + (position - start) / resource.rate - time.monotonic()))
            self.wfile.flush()
            if fault == "stall":
                time.sleep(3600)  # never finish; the client's stall timeout must fire
            if position < whole and resource.hold is not None:
                resource.hold.wait(timeout=120)
        except (BrokenPipeError, ConnectionResetError):
            return
        if position < whole and (fault == "drop" or resource.hold is not None):
            self.close_connection = True
            self.connection.shutdown(2)

    def _status(self, code: int, retry_after: str | None = None) -> None:
        text = f"error {code}\n".encode()
        self.send_response(code)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(text)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    state: Server


def start_server() -> Server:
    httpd = _HTTPServer(("127.0.0.1", 0), Handler)
    state = Server(httpd)
    httpd.state = state
    threading.Thread(target=httpd.serve_forever, name="test-http", daemon=True).start()
    return state
