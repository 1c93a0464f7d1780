"""``wallet-api --workers 2``: two API processes on one port, one set of operations endpoints.

Real broker, real services from their console scripts. The kernel spreads new connections
over the workers (SO_REUSEPORT); each worker has its own views, so a deposit through either
is visible through both; the supervisor's /metrics carries both workers' samples, and
SIGTERM drains both.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import wait_for

from walletkit.devstack.net import http_get

pytestmark = pytest.mark.integration


def request(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # a new connection each time
    try:
        conn.request(
            method,
            path,
            body=json.dumps(body) if body is not None else None,
            headers={"Content-Type": "application/json"} if body is not None else {},
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def worker_pids(supervisor_pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == supervisor_pid:
                        children.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return children


DETAILS_ROUTE = "/details/{wallet_id}"


def served_by_worker(api, route: str) -> dict[str, float]:
    """Requests of ``route`` each worker answered (200s and others), from the supervisor's /metrics."""
    status, text = http_get(api.ops_url("/metrics"))
    assert status == 200
    served: dict[str, float] = {}
    for family in text_string_to_metric_families(text.decode()):
        if family.name in ("http_requests", "http_requests_total"):
            for s in family.samples:
                if s.labels.get("route") == route and s.name.endswith("_total"):
                    served[s.labels["worker"]] = served.get(s.labels["worker"], 0) + s.value
    return served


def test_two_workers_share_the_port_and_each_sees_every_deposit(cluster):
    cluster.start("balance")
    cluster.start("above_threshold")
    api = cluster.start("api", env={"WALLET_API_WORKERS": "2"})
    port = api.port
    workers = worker_pids(api.proc.pid)
    assert len(workers) == 2, f"two worker processes under the supervisor: {workers}"
    status, doc = http_get(api.ops_url("/readyz"))
    assert status == 200 and len(json.loads(doc)["workers"]) == 2

    deposits = 40
    for i in range(deposits):
        status, doc = request(port, "POST", "/deposit", {"WalletID": "shared", "Amount": 25})
        assert status == 202, doc
    # Every worker's views reach the same balance: read on new connections until both
    # answered it, which the workers' own request counters tell (a read does not say which
    # worker served it).
    wait_for(
        lambda: request(port, "GET", "/details/shared")[1].get("Balance") == 25 * deposits,
        60,
        "a worker to show all deposits",
    )
    started = served_by_worker(api, DETAILS_ROUTE)
    for _ in range(400):
        status, doc = request(port, "GET", "/details/shared")
        if doc.get("Balance") != 25 * deposits:  # the other worker still catching up: wait for it
            wait_for(
                lambda: request(port, "GET", "/details/shared")[1].get("Balance") == 25 * deposits,
                60,
                "every worker to show all deposits",
            )
            started = served_by_worker(api, DETAILS_ROUTE)  # count only reads after both caught up
            continue
        now = served_by_worker(api, DETAILS_ROUTE)
        if all(now.get(w, 0) > started.get(w, 0) for w in ("0", "1")):
            break
    else:
        raise AssertionError(f"400 reads on new connections never reached both workers: {started} -> {now}")

    served = served_by_worker(api, "/deposit")
    assert set(served) == {"0", "1"}, f"both workers served deposits (kernel spreads connections): {served}"
    assert sum(served.values()) == deposits

    api.proc.send_signal(signal.SIGTERM)
    assert api.proc.wait(60) == 0, "SIGTERM drains both workers and the supervisor exits 0"
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in workers):
        assert time.monotonic() < deadline, "the workers exited with the supervisor"
        time.sleep(0.1)
