"""Test ports: outside the range the kernel gives outgoing connections, and never handed out twice
(a service that binds its port seconds after it was chosen must still find it free)."""

from __future__ import annotations

import socket

from walletkit.service.net import _ephemeral_range, free_port


def test_ports_are_below_the_ephemeral_range_distinct_and_free():
    low, _ = _ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports), "a port handed out twice"
    assert all(port < low for port in ports), [p for p in ports if p >= low][:5]
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # and free to bind


def test_a_taken_port_is_not_handed_out():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        assert taken not in {free_port() for _ in range(200)}
