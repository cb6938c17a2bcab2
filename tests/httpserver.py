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


@dataclass
class Server:
    httpd: ThreadingHTTPServer
    resources: dict[str, Resource] = field(default_factory=dict)
    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    range_requests: collections.Counter[str] = field(default_factory=collections.Counter)

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
        resource = state.resources.get(path)
        if resource is None:
            return self._status(404)
        if not head and resource.gate is not None:
            resource.gate.wait(timeout=120)
        fault = resource.fault
        if fault in {"401", "403", "404", "500"}:
            return self._status(int(fault))
        if not head and fault == "500-then-ok" and resource.fail_times > 0:
            resource.fail_times -= 1
            return self._status(500)
        body = resource.body
        start, status = 0, 200
        match = _RANGE.match(self.headers.get("Range", ""))
        if match and resource.ranges and not head:
            state.range_requests[path] += 1
            start = int(match.group(1))
            status = 206
        self.send_response(status)
        declared = len(body) - start
        if fault == "wrong-length":
            body = body[: len(body) // 2]
            declared = len(body)
        self.send_header("Content-Length", str(declared))
        self.send_header("Content-Type", "application/octet-stream")
        if resource.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if head:
            return
        self._body(resource, body, start)

    def _body(self, resource: Resource, body: bytes, start: int) -> None:
        fault = resource.fault
        end = len(body)
        if fault == "drop" and resource.fail_times > 0:
            resource.fail_times -= 1
            end = start + (len(body) - start) // 2  # send half, then drop the connection
        elif fault == "stall":
            end = start + min(1024, len(body) - start)
        chunk = 64 * 1024
        position = start
        try:
            while position < end:
                piece = body[position : min(position + chunk, end)]
                self.wfile.write(piece)
                resource.served += len(piece)
                position += len(piece)
                if resource.delay:
                    time.sleep(resource.delay)
            self.wfile.flush()
            if fault == "stall":
                time.sleep(3600)  # never finish; the client's stall timeout must fire
        except (BrokenPipeError, ConnectionResetError):
            return
        if position < len(body) and fault == "drop":
            self.close_connection = True
            self.connection.shutdown(2)

    def _status(self, code: int) -> None:
        text = f"error {code}\n".encode()
        self.send_response(code)
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
