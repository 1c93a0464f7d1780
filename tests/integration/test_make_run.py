"""``make run``'s stack (``wallet-stack``) on both of its brokers: Tansu, the instant embedded
default, and Apache Kafka (``make run KAFKA=apache``). The seed's curl commands, then Ctrl-C.

The only test that runs Tansu: it keeps the embedded default working; everything else is
proven on Apache Kafka.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import post_deposit

from walletkit.devstack.net import free_port, http_get, wait_until

pytestmark = pytest.mark.integration

SEED = {"WalletID": "walletID001", "Amount": 8000}


@pytest.mark.parametrize("kafka", ["tansu", "apache"])
def test_the_seed_flow_on_the_local_stack(tmp_path: Path, kafka: str):
    port, broker_port = free_port(), free_port()
    log = open(tmp_path / "stack.log", "wb")
    stack = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "wallet-stack"),
            "--kafka",
            kafka,
            "--port",
            str(port),
            "--broker-port",
            str(broker_port),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: stack.poll() is None and "Ctrl-C stops everything" in (tmp_path / "stack.log").read_text(),
            120,
            what=f"wallet-stack on {kafka} (log {tmp_path / 'stack.log'})",
        )
        assert f"Kafka ({kafka})" in (tmp_path / "stack.log").read_text()
        status, body, _ = post_deposit(port, SEED)
        assert status == 202, body
        wait_until(
            lambda: http_get(f"http://127.0.0.1:{port}/details/walletID001")[0] == 200, 30, what="the deposit to show"
        )
        status, raw = http_get(f"http://127.0.0.1:{port}/details/walletID001")
        assert raw == b'{"WalletID":"walletID001","Balance":8000,"AboveThreshold":false}', raw
        assert json.loads(raw)["Balance"] == 8000
    finally:
        if stack.poll() is None:
            stack.send_signal(signal.SIGINT)
        try:
            code = stack.wait(60)
        except subprocess.TimeoutExpired:
            stack.kill()
            code = stack.wait()
        log.close()
    text = (tmp_path / "stack.log").read_text()
    assert code == 0, text[-3000:]
    assert "broker stopped; bye" in text
