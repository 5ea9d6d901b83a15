"""An HTTP proxy in front of the test S3 server that injects faults by rule.

Faults: ``500`` (InternalError), ``503`` (ServiceUnavailable), ``slowdown`` (503 SlowDown),
``reset`` (the connection is dropped before forwarding), ``timeout`` (no answer for
longer than the client waits), and ``lost`` (the request reaches S3, then the connection
is dropped: the client never learns that its write landed).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast
from urllib.parse import urlparse

Rule = Callable[[str, str], str | None]
"""(method, path) -> the fault to inject, or None to forward."""

_ERRORS = {
    "500": (500, "InternalError"),
    "503": (503, "ServiceUnavailable"),
    "slowdown": (503, "SlowDown"),
}


class FaultInjector:
    """Forwards to ``upstream`` unless ``rule`` names a fault; counts what it did."""

    def __init__(self, upstream: str, hang_seconds: float = 2.5) -> None:
        target = urlparse(upstream)
        self.rule: Rule = lambda method, path: None
        self.injected: dict[str, int] = {}
        self.forwarded = 0
        self.hang_seconds = hang_seconds
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self, body: bytes | None) -> tuple[int, str, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection(cast(str, target.hostname), target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = f"{target.hostname}:{target.port}"
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                conn.close()
                return response.status, response.reason, response.getheaders(), data

            def _drop(self) -> None:
                self.close_connection = True
                self.connection.close()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    fault = proxy.rule(self.command, self.path)
                    if fault is None:
                        proxy.forwarded += 1
                    else:
                        proxy.injected[fault] = proxy.injected.get(fault, 0) + 1
                if fault == "reset":
                    return self._drop()
                if fault == "timeout":
                    time.sleep(proxy.hang_seconds)
                    return self._drop()
                if fault in _ERRORS:
                    status, code = _ERRORS[fault]
                    payload = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return None
                status, reason, headers, data = self._forward(body)
                if fault == "lost":
                    return self._drop()
                self.send_response(status, reason)
                for key, value in headers:
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                return None

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def total_injected(self) -> int:
        return sum(self.injected.values())

    def __enter__(self) -> FaultInjector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def every(n: int, fault: str, limit: int, methods: tuple[str, ...] = ("GET", "PUT", "POST", "HEAD")) -> Rule:
    """Inject ``fault`` into every ``n``-th request of ``methods``, ``limit`` times in all."""
    seen = [0, 0]  # requests seen, faults injected

    def rule(method: str, path: str) -> str | None:
        if method not in methods:
            return None
        seen[0] += 1
        if seen[0] % n == 0 and seen[1] < limit:
            seen[1] += 1
            return fault
        return None

    return rule
