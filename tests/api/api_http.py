"""A raw HTTP/1.1 client for the API tests: every byte of the request is ours.

urllib and requests normalise what they send (they refuse spaces in paths,
re-encode header values, add a Content-Type, pick the framing); malformed-request
tests need to send exactly the bytes they mean, so this builds the request by
hand and lets ``http.client`` parse only the response.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

Header = tuple[str | bytes, str | bytes]


def _b(value: str | bytes) -> bytes:
    # Header text is sent as UTF-8 (what a careless client does); bytes are sent as they are.
    return value if isinstance(value, bytes) else value.encode("utf-8")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    doc: Any = field(default=None)  # the body parsed as JSON, if it is JSON

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def error(self) -> str | None:
        return self.doc.get("error") if isinstance(self.doc, dict) else None


def request(
    port: int,
    method: str | bytes,
    path: str | bytes,
    *,
    body: bytes | None = None,
    headers: list[Header] | tuple[Header, ...] = (),
    chunks: list[bytes] | None = None,
    content_length: bool = True,
    pieces: list[bytes] | None = None,
    gap: float = 0.0,
    timeout: float = 15.0,
    host: str = "127.0.0.1",
) -> Reply:
    """Send one request on a fresh connection (``Connection: close``) and read the whole reply.

    ``chunks`` sends the body with ``Transfer-Encoding: chunked`` (one chunk each);
    ``pieces`` sends it with the ``Content-Length`` of all pieces together; otherwise
    ``body`` goes with a ``Content-Length`` unless ``content_length`` is false.
    With ``gap`` > 0 the head and each chunk or piece leave in separate writes, ``gap``
    seconds apart, so the server receives the body in several TCP segments, as it
    does from slow or distant clients.
    """
    lines = [_b(method) + b" " + _b(path) + b" HTTP/1.1", b"Host: " + host.encode(), b"Connection: close"]
    lines += [_b(k) + b": " + _b(v) for k, v in headers]
    parts: list[bytes] = []
    if chunks is not None:
        lines.append(b"Transfer-Encoding: chunked")
        parts = [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c]
        parts[-1:] = [(parts[-1] if parts else b"") + b"0\r\n\r\n"]
    elif pieces is not None:
        lines.append(b"Content-Length: %d" % sum(map(len, pieces)))
        parts = list(pieces)
    elif body is not None:
        if content_length:
            lines.append(b"Content-Length: %d" % len(body))
        parts = [body]
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    writes = [head, *parts] if gap > 0 else [head + b"".join(parts)]
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        try:
            for i, data in enumerate(writes):
                if i:
                    time.sleep(gap)
                sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer (413) and close before reading a large body: read its answer
        resp = http.client.HTTPResponse(sock, method=method if isinstance(method, str) else method.decode())
        resp.begin()
        data = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        sock.close()
    doc = None
    if hdrs.get("content-type", "").startswith("application/json"):
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
    return Reply(resp.status, hdrs, data, doc)


def post_json(port: int, doc: Any, headers: list[Header] | tuple[Header, ...] = ()) -> Reply:
    """POST /deposit as ``curl -d`` does (a form content type, a JSON body)."""
    return request(
        port,
        "POST",
        "/deposit",
        body=json.dumps(doc).encode(),
        headers=[("Content-Type", "application/x-www-form-urlencoded"), *headers],
    )


def get(port: int, path: str, headers: list[Header] | tuple[Header, ...] = ()) -> Reply:
    return request(port, "GET", path, headers=headers)
