"""The processors' operations server when a client leaves before its answer (a probe that
timed out): the service's log stays one JSON object per line, so no raw traceback reaches
stderr, and the client's departure is at most a debug line."""

from __future__ import annotations

import logging
import socket
import struct
import threading

from walletkit.service.ops import OpsServer


def test_a_client_that_leaves_before_its_answer_leaves_no_traceback(capfd, caplog):
    client_gone = threading.Event()
    answered = threading.Event()

    def ready() -> bool:
        # The answer is written only once the client has reset its connection: the write
        # then meets a closed peer, as a probe's does when it gave up.
        client_gone.wait(10)
        answered.set()
        return True

    server = OpsServer("127.0.0.1", 0, alive=lambda: True, ready=ready)
    server.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="walletkit.service.ops"):
            for _ in range(5):  # five departures: each write must fail quietly
                answered.clear()
                client_gone.clear()
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                # SO_LINGER 0: close() sends a reset, so the server's write fails (EPIPE/ECONNRESET).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
                client_gone.set()
                assert answered.wait(10)
            # The server goes on answering others.
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as ok:
                ok.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                assert ok.recv(64).startswith(b"HTTP/1.0 200")
    finally:
        server.stop()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err, err
    left = [r for r in caplog.records if "left before its answer" in r.getMessage()]
    assert left and all(r.levelno == logging.DEBUG for r in left)
