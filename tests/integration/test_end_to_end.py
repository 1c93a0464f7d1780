"""The seed flow over real HTTP against the three services on a real broker."""

from __future__ import annotations

import json
import time

import pytest
from support import details, post_deposit, read_topic, wait_for

pytestmark = pytest.mark.integration

SEED = b'{"WalletID": "walletID001", "Amount": 8000}'


def test_seed_deposit_then_details_is_byte_exact(running_api):
    cluster, port = running_api
    status, receipt, _ = post_deposit(port, SEED)
    assert status == 202, receipt
    assert receipt["WalletID"] == "walletID001" and receipt["Amount"] == 8000
    assert receipt["Offset"] >= 0 and 0 <= receipt["Partition"] < 8
    wait_for(lambda: details(port, "walletID001")[0] == 200, 20, "the deposit to reach the views")
    assert details(port, "walletID001") == (200, b'{"WalletID":"walletID001","Balance":8000,"AboveThreshold":false}')


def test_threshold_flag_and_exact_decimals_end_to_end(running_api):
    cluster, port = running_api
    for amount in (6000, 6000):
        assert post_deposit(port, json.dumps({"WalletID": "big", "Amount": amount}).encode())[0] == 202
    for _ in range(10):
        assert post_deposit(port, b'{"WalletID": "dimes", "Amount": 0.1}')[0] == 202
    wait_for(
        lambda: details(port, "big")[1] == b'{"WalletID":"big","Balance":12000,"AboveThreshold":true}',
        20,
        "wallet 'big' flagged",
    )
    wait_for(
        lambda: details(port, "dimes")[1] == b'{"WalletID":"dimes","Balance":1,"AboveThreshold":false}',
        20,
        "ten deposits of 0.1 to make exactly 1",
    )


def test_unknown_wallet_and_bad_input_are_4xx_json_and_emit_nothing(running_api):
    cluster, port = running_api
    status, body = details(port, "nobody")
    assert status == 404 and "not found" in json.loads(body)["error"]
    assert details(port, "bad%20id")[0] == 400
    before = len(read_topic(cluster.broker.bootstrap, "deposit"))
    bad = [
        b"",
        b"not json",
        b"[]",
        b'{"WalletID": "w"}',
        b'{"Amount": 5}',
        b'{"WalletID": "w", "Amount": -1}',
        b'{"WalletID": "w", "Amount": 0}',
        b'{"WalletID": "w", "Amount": "5"}',
        b'{"WalletID": "w", "Amount": 1.001}',
        b'{"WalletID": "w", "Amount": NaN}',
        b'{"WalletID": "", "Amount": 5}',
        b'{"WalletID": "w w", "Amount": 5}',
        b'{"WalletID": "w", "Amount": 5, "extra": 1}',
        b'{"WalletID": "w", "Amount": true}',
        b"x" * 10_000,
    ]
    for body in bad:
        status, doc, _ = post_deposit(port, body)
        assert 400 <= status < 500 and doc.get("error"), (body[:40], status, doc)
    time.sleep(0.5)
    assert len(read_topic(cluster.broker.bootstrap, "deposit")) == before, "a rejected request reached Kafka"
    status, doc, _ = post_deposit(port, SEED)  # and it still serves
    assert status == 202


def test_operational_endpoints(running_api):
    cluster, port = running_api
    from walletkit.devstack.net import http_get

    for proc in cluster.services.values():
        assert http_get(proc.ops_url("/healthz"))[0] == 200
        assert http_get(proc.ops_url("/readyz"))[0] == 200
        status, body = http_get(proc.ops_url("/metrics"))
        assert status == 200 and b"# TYPE" in body
    status, body = http_get(cluster.services["api-0"].ops_url("/metrics"))
    assert b"stream_view_caught_up" in body and b"http_requests_total" in body
    # The public port serves the API only: no internals, no probes.
    for path in ("/metrics", "/healthz", "/readyz"):
        assert http_get(f"http://127.0.0.1:{port}{path}")[0] == 404, path


def test_records_written_by_a_go_emitter_are_processed_like_the_reference(running_api):
    """Fields 1-3 only, CreatedAt in seconds, Amount a double read as its shortest decimal."""
    import time as _time

    from support import Deposit, DepositWriter

    cluster, port = running_api
    now = int(_time.time()) * 1_000_000
    writer = DepositWriter(cluster.broker.bootstrap)
    writer.write([Deposit("go-dimes", 100_000, now) for _ in range(10)], go_style=True)  # 10 x 0.1
    writer.write(
        [Deposit("go-big", 6_000_000_000, now), Deposit("go-big", 6_000_000_000, now + 119_000_000)], go_style=True
    )  # within 2 min
    writer.write(
        [Deposit("go-apart", 6_000_000_000, now), Deposit("go-apart", 6_000_000_000, now + 120_000_000)], go_style=True
    )  # exactly 120 s
    writer.flush()
    expected = {
        "go-dimes": b'{"WalletID":"go-dimes","Balance":1,"AboveThreshold":false}',
        "go-big": b'{"WalletID":"go-big","Balance":12000,"AboveThreshold":true}',
        "go-apart": b'{"WalletID":"go-apart","Balance":12000,"AboveThreshold":false}',
    }
    for wallet, body in expected.items():
        wait_for(lambda: details(port, wallet) == (200, body), 20, f"{wallet} -> {body!r}")
