"""A fresh install whose topics do not exist yet settles by itself.

With ``WALLET_CREATE_TOPICS=false`` (Strimzi's topic operator owns the topics and may create
them after the pods start) a service whose topics are missing waits: alive, unready, saying
what it waits for, instead of exiting into a crash loop. Once the topics appear it starts
within seconds. Real broker, the services from their console scripts.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
from support import create_topics, post_deposit, wait_for

from walletkit.devstack.net import http_get

pytestmark = pytest.mark.integration

NO_CREATE = {"WALLET_CREATE_TOPICS": "false"}


def answers(svc, path: str) -> int | None:
    """The status of ``path`` on the service's ops port; None while nothing listens there."""
    try:
        return http_get(svc.ops_url(path), timeout=2)[0]
    except OSError:
        return None


def probe(svc, path: str) -> tuple[int, dict]:
    status, body = http_get(svc.ops_url(path), timeout=5)
    return status, json.loads(body) if body else {}


def test_services_wait_unready_for_missing_topics_and_start_once_they_appear(cluster):
    services = [cluster.start(name, wait=False, env=NO_CREATE) for name in ("balance", "above_threshold", "api")]
    # A second balance and a second API instance, stopped while they wait: SIGTERM ends the
    # wait with exit 0.
    quitters = [cluster.start(name, 1, wait=False, env=NO_CREATE) for name in ("balance", "api")]
    for svc in services:
        wait_for(
            lambda: svc.running and answers(svc, "/healthz") == 200,
            30,
            f"{svc.script} alive while its topics are missing",
        )
    for svc in services:  # a missing topic counts as missing after 5 s (metadata may lag a creation)
        wait_for(
            lambda: "waiting for topics deposit" in svc.log_path.read_text(),
            20,
            f"{svc.script} to say what it waits for",
        )
    time.sleep(3)  # longer than a check: still waiting, not exited
    for svc in services:
        assert svc.running, f"{svc.script} exited instead of waiting; see {svc.log_path}"
        status, body = probe(svc, "/readyz")
        assert status == 503, (svc.script, body)
    status, body = probe(services[0], "/healthz")
    assert body.get("state") == "waiting_for_topics" and "deposit" in body.get("missing_topics", []), body
    status, body = probe(services[2], "/readyz")
    assert "deposit" in body.get("waiting_for_topics", []), body
    for quitter in quitters:
        assert quitter.running
        quitter.proc.send_signal(signal.SIGTERM)
        assert quitter.proc.wait(30) == 0, f"{quitter.script} exits 0 on SIGTERM while waiting; see {quitter.log_path}"

    created = time.monotonic()
    create_topics(cluster.broker.bootstrap)
    for svc in services:
        svc.wait_ready(60)
    print(f"all three ready {time.monotonic() - created:.1f} s after the topics were created")
    api = services[2]
    status, doc, _ = post_deposit(api.port, {"WalletID": "settled", "Amount": 5})
    assert status == 202, doc
