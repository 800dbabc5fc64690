"""A real local HTTP server for tests: health endpoints whose answers a test controls, and a
webhook receiver that records what it was sent. Loopback only; stopped by the fixture."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Controls:
    statuses: dict[str, int] = field(default_factory=dict)  # path -> status code (default 200)
    sequences: dict[str, list[int]] = field(default_factory=dict)  # path -> status codes used up first
    delays: dict[str, float] = field(default_factory=dict)  # path -> seconds before answering
    bodies: dict[str, bytes] = field(default_factory=dict)  # path -> JSON answered (default "ok")
    content_types: dict[str, str] = field(default_factory=dict)  # path -> Content-Type of its body
    hits: dict[str, int] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class LocalServer:
    controls: Controls
    port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def set_status(self, path: str, status: int) -> None:
        with self.controls.lock:
            self.controls.statuses[path] = status

    def set_body(self, path: str, body: bytes, content_type: str = "application/json") -> None:
        """Answer requests to `path` with this body (e.g. an API's id for what it created, or
        metrics in Prometheus' text format with content_type text/plain; version=0.0.4)."""
        with self.controls.lock:
            self.controls.bodies[path] = body
            self.controls.content_types[path] = content_type

    def set_sequence(self, path: str, statuses: list[int]) -> None:
        with self.controls.lock:
            self.controls.sequences[path] = list(statuses)

    def set_delay(self, path: str, seconds: float) -> None:
        with self.controls.lock:
            self.controls.delays[path] = seconds

    def received_at(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.received() if r["path"] == path]

    def hits(self, path: str) -> int:
        with self.controls.lock:
            return self.controls.hits.get(path, 0)

    def received(self) -> list[dict[str, Any]]:
        with self.controls.lock:
            return list(self.controls.received)


def _handler(controls: Controls) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            with controls.lock:
                controls.hits[self.path] = controls.hits.get(self.path, 0) + 1
                sequence = controls.sequences.get(self.path)
                status = sequence.pop(0) if sequence else controls.statuses.get(self.path, 200)
                delay = controls.delays.get(self.path, 0.0)
                answer = controls.bodies.get(self.path)
                content_type = controls.content_types.get(self.path, "application/json")
            if delay:
                threading.Event().wait(delay)  # a slow receiver, as seen by the client
            try:
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Type", content_type if answer else "text/plain")
                self.end_headers()
                self.wfile.write(
                    answer if answer and status < 400 else b"ok\n" if status < 400 else b"failing\n"
                )
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (a timeout test): nothing to answer

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) or b"{}"
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")  # not JSON (a form, a file): kept as text
            with controls.lock:
                controls.received.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "body": body,
                        "idempotency_key": self.headers.get("Idempotency-Key"),
                        "authorization": self.headers.get("Authorization"),
                        "headers": dict(self.headers.items()),
                    }
                )
            self._answer()

        do_PATCH = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def local_server() -> Iterator[LocalServer]:
    controls = Controls()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(controls))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LocalServer(controls, int(server.server_address[1]))
    finally:
        server.shutdown()
        server.server_close()
