"""A stand-in for the service in `make demo`: GET /healthz answers 200, POST /v1/upload (the
sample playbook's smoke test) answers {"stored": true}, POST /notify (the sample's team webhook)
answers 200 and prints what it was told.

Runs on 127.0.0.1 only; `make demo-down` stops it by the PID it wrote.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self._path() in ("/healthz", "/readyz") else 404
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok\n" if status == 200 else b"not found\n")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        path = self._path()
        if path == "/notify":
            print(f"notification: {body.decode(errors='replace')}", flush=True)
        status = 200 if path in ("/v1/upload", "/notify") else 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"stored": true}\n' if path == "/v1/upload" else b"{}\n")

    def _path(self) -> str:
        """The path without the query (the sample's smoke test names the workload checked in it)."""
        return self.path.split("?", 1)[0]

    def log_message(self, format: str, *args: object) -> None:
        return


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
