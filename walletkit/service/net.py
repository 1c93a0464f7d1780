"""Local ports for servers a process starts (the API's worker processes, the dev tools)."""

from __future__ import annotations

import random
import socket

#: Ports this process handed out, so two calls never return the same one.
_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux; a common default elsewhere)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a server this process is about to start.

    Chosen below the kernel's ephemeral range: a port the kernel hands out (``bind(0)``) is one
    it may also give to the next outgoing connection, and a service that binds some seconds
    later (the API listens only once its views caught up) then finds it taken. Never the same
    port twice in one process, and free right now (no listener, no connection bound to it).
    """
    low, _ = _ephemeral_range()
    if low > 12_000:
        for _ in range(200):
            port = random.randrange(10_000, low)
            if port in _handed_out:
                continue
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    with socket.socket() as s:  # no room below the ephemeral range: let the kernel choose
        s.bind((host, 0))
        port = s.getsockname()[1]
    _handed_out.add(port)
    return port
