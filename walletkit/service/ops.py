"""Operations HTTP server of a processor: ``/metrics``, ``/healthz``, ``/readyz``.

It knows HTTP and Prometheus only; liveness and readiness come in as callables.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    """socketserver prints a request's exception as a raw traceback on stderr, which would break
    the service's one-JSON-object-per-line log: errors go through logging instead, and a client
    that left before its answer (a probe that timed out) is only a debug line."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: tuple) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            log.debug("operations client %s:%s left before its answer: %s", *client_address[:2], exc)
        else:
            log.warning("operations request from %s:%s failed", *client_address[:2], exc_info=True)


class OpsServer:
    """Serves the three operational endpoints on a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        alive: Callable[[], bool],
        ready: Callable[[], bool],
        status: Callable[[], dict] = dict,
    ) -> None:
        probes = {"/healthz": alive, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(), CONTENT_TYPE_LATEST)
                elif path in probes:
                    ok = bool(probes[path]())
                    body = {"status": "ok" if ok else "unavailable", **status()}
                    self._reply(200 if ok else 503, json.dumps(body).encode(), "application/json")
                else:
                    self._reply(404, b'{"error":"not found: use /metrics, /healthz or /readyz"}', "application/json")

            def _reply(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: object) -> None:
                pass  # probes every few seconds would drown the log

        self._server = _Server((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="ops-http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("operations endpoints on port %d: /metrics /healthz /readyz", self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
